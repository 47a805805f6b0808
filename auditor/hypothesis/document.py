"""hypothesis.json and examples.json read back as typed, frozen objects (standard library only).

Built by :func:`auditor.run_summary.decode`, as summary.json is, so the hypothesis page reads
attributes, and a file of another shape is refused once, naming the key that does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from auditor.hypothesis.files import EXAMPLES_FILE, HYPOTHESIS_FILE, SCHEMA_VERSION
from auditor.run_summary import ModelInfo, Rate, ToolInfo, check_schema_version, decode
from auditor.store import RunStore, read_typed

_COMMAND = "audit hypothesis"
VerdictText = Literal["supported", "not supported", "insufficient data"]


@dataclass(frozen=True)
class VerdictFigures:
    """What the verdict rests on (``auditor.hypothesis.verdict.Verdict`` as written)."""

    trials: int
    hypothesis: Rate
    control: Rate
    both: int
    hypothesis_only: int
    control_only: int
    neither: int
    test: str
    p_value: float | None
    effect: float | None  # hypothesis minus control success rate
    effect_ci: tuple[float, float] | None
    alpha: float
    min_trials: int
    verdict: VerdictText


@dataclass(frozen=True)
class SpecRecord:
    """The spec as it was run: its file and SHA-256, filter, expectation, seed and alpha."""

    path: str
    sha256: str
    name: str
    description: str
    where: str | None
    expect: str | None
    seed: int
    alpha: float


@dataclass(frozen=True)
class Described:
    """Both edits and the success rule in words (the page's sentences are built from them)."""

    hypothesis_edit: str
    control_edit: str
    success: str


@dataclass(frozen=True)
class HypothesisDataset:
    root: str
    labels_csv_sha256: str | None
    label_column: str
    rows: int
    images_scored: int
    not_read_count: int


@dataclass(frozen=True)
class SkippedImage:
    image_id: str
    reason: str


@dataclass(frozen=True)
class Selection:
    """The images the filter selected, how many took both edits, and why the others did not."""

    selected: int
    trials: int
    skipped: int
    skips_by_reason: Mapping[str, int]
    skipped_images: tuple[SkippedImage, ...]


@dataclass(frozen=True)
class HypothesisDocument:
    """hypothesis.json."""

    tool: ToolInfo
    created: str
    seconds: float
    spec: SpecRecord
    described: Described
    model: ModelInfo
    dataset: HypothesisDataset
    selection: Selection
    verdict: VerdictFigures
    expect: str | None
    expectation_met: bool | None
    versions: Mapping[str, str]


@dataclass(frozen=True)
class Example:
    """One trial shown on the page: its outcome cell, predictions and three thumbnails."""

    image_id: str
    label: str
    groups: Mapping[str, str]
    outcome: str
    orig_probs: tuple[float, ...]
    hypothesis_probs: tuple[float, ...]
    control_probs: tuple[float, ...]
    original: str  # base64 PNG
    hypothesis: str
    control: str


def read_hypothesis(out_dir: Path) -> HypothesisDocument:
    """``out_dir``'s hypothesis.json, once the manifest has sealed the run.

    Raises:
        RunDirError: ``out_dir`` holds no finished hypothesis run, or its hypothesis.json is
            not of this version's schema and shape.
    """
    RunStore.open(out_dir, command=_COMMAND, main_file=HYPOTHESIS_FILE)
    return read_typed(out_dir / HYPOTHESIS_FILE, _document, _COMMAND)


def _document(data: Any) -> HypothesisDocument:
    check_schema_version(data, SCHEMA_VERSION, "hypothesis")
    return decode(HypothesisDocument, data)


def read_examples(out_dir: Path) -> list[Example]:
    """``out_dir``'s examples.json; empty when the run shows none."""
    path = out_dir / EXAMPLES_FILE
    if not path.is_file():
        return []
    return read_typed(path, lambda data: decode(list[Example], data), _COMMAND)
