"""What a hypothesis run writes, named once for the engine and its readers (no torch)."""

from __future__ import annotations

from auditor.store import MANIFEST_FILE, PARTS_DIR, PLAN_FILE

HYPOTHESIS_FILE = "hypothesis.json"
SCHEMA_VERSION = 1  # of hypothesis.json: the writer stamps it, the reader refuses any other
TRIALS_FILE = "trials.parquet"
EXAMPLES_FILE = "examples.json"  # thumbnails for the HTML page, so it re-renders without a model
OUTCOME_CELLS = ("both", "hypothesis only", "control only", "neither")
HYPOTHESIS_PAGE = "hypothesis.html"
# Everything a hypothesis run writes into its directory (the run store's own files included):
# what --overwrite removes and what marks a directory as holding a run.
HYPOTHESIS_ENTRIES = (
    PLAN_FILE, MANIFEST_FILE, PARTS_DIR, TRIALS_FILE, EXAMPLES_FILE, HYPOTHESIS_FILE,
    HYPOTHESIS_PAGE,
)  # fmt: skip
