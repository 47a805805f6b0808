"""What a hypothesis run writes, named once for the engine and its readers (no torch)."""

from __future__ import annotations

HYPOTHESIS_FILE = "hypothesis.json"
TRIALS_FILE = "trials.parquet"
EXAMPLES_FILE = "examples.json"  # thumbnails for the HTML page, so it re-renders without a model
OUTCOME_CELLS = ("both", "hypothesis only", "control only", "neither")
