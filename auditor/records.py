"""Result records (one per image × probe × method × region source), attribution measures (one per
image × method × measure) and their Parquet I/O.

The run store (:mod:`auditor.store`) writes them per batch and combines them into
``results.parquet`` and ``attribution.parquet``. This module imports nothing else from auditor,
so reports and tests can read results without the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

RESULTS_FILE = "results.parquet"
MEASURES_FILE = "attribution.parquet"
GROUP_PREFIX = "group_"
# Columns named by --adjust-for travel as "covariate_<name>" cells: raw strings, None when missing.
COVARIATE_PREFIX = "covariate_"
# region_source of every control arm: the edit's comparison on the same image, paired with the
# probe's own edit by the statistics. What the control was is its row's control_kind:
PLACEBO = "placebo"
SAME_SHAPE = "same_shape"  # the region's own shape moved to a random place (regions.placebo_region)
AREA_MATCHED = "area_matched"  # a random blob of its area and compactness: the shape fit nowhere
NOISE_FLOOR = "noise_floor"  # a whole-image probe's: the image shifted by one pixel
CONTROL_KINDS = (SAME_SHAPE, AREA_MATCHED, NOISE_FLOOR)
MISSING_GROUP = "(missing)"  # the group value of a row whose group cell is empty

CORRECTION = "correction"  # wrong → right
BREAK = "break"  # right → wrong
SWAP = "swap"  # wrong → another wrong class
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Record:
    """One image under one probe. Fields after ``skip_reason`` up to ``region_area`` are None
    for skipped rows.

    ``covariates`` are the image's ``--adjust-for`` cells (raw strings; a missing cell is
    absent), written as ``covariate_<name>`` columns.
    """

    image_id: str
    label: str | None
    groups: dict[str, str]
    probe: str | None  # None when the whole image was skipped
    region_source: str | None
    method: str | None
    skip_reason: str | None = None
    orig_pred: str | None = None
    orig_p_pred: float | None = None
    orig_p_label: float | None = None
    probed_pred: str | None = None
    probed_p_orig_pred: float | None = None
    probed_p_label: float | None = None
    orig_probs: list[float] | None = None
    probed_probs: list[float] | None = None
    flipped: bool | None = None
    direction: str | None = None
    region_x0: int | None = None
    region_y0: int | None = None
    region_x1: int | None = None
    region_y1: int | None = None
    region_area: float | None = None  # fraction of the image
    control_kind: str | None = None  # a control arm's kind (CONTROL_KINDS); None for the edit
    covariates: dict[str, str] = field(default_factory=dict)


_FIELD_TYPES: dict[str, pa.DataType] = {
    "image_id": pa.string(),
    "label": pa.string(),
    "probe": pa.string(),
    "region_source": pa.string(),
    "method": pa.string(),
    "skip_reason": pa.string(),
    "orig_pred": pa.string(),
    "orig_p_pred": pa.float64(),
    "orig_p_label": pa.float64(),
    "probed_pred": pa.string(),
    "probed_p_orig_pred": pa.float64(),
    "probed_p_label": pa.float64(),
    "orig_probs": pa.list_(pa.float64()),
    "probed_probs": pa.list_(pa.float64()),
    "flipped": pa.bool_(),
    "direction": pa.string(),
    "region_x0": pa.int32(),
    "region_y0": pa.int32(),
    "region_x1": pa.int32(),
    "region_y1": pa.int32(),
    "region_area": pa.float64(),
    "control_kind": pa.string(),
}


def direction_of(label: str | None, before: str, after: str) -> str:
    """How a prediction changed relative to the true label."""
    if before == after:
        return UNCHANGED
    if after == label:
        return CORRECTION
    if before == label:
        return BREAK
    return SWAP


def schema(group_columns: Sequence[str], covariate_columns: Sequence[str] = ()) -> pa.Schema:
    """The records' table: the fixed fields, with the ``group_<column>`` cells and then the
    ``covariate_<column>`` cells after ``label``."""
    fields = [pa.field(name, kind) for name, kind in _FIELD_TYPES.items()]
    fields[3:3] = [
        *(pa.field(GROUP_PREFIX + g, pa.string()) for g in group_columns),
        *(pa.field(COVARIATE_PREFIX + c, pa.string()) for c in covariate_columns),
    ]
    return pa.schema(fields)


@dataclass(frozen=True)
class Measure:
    """One number about one image's attribution map under one method.

    ``measure`` is e.g. ``mass_share`` or ``amr`` (with the named ``region``), or a
    faithfulness metric such as ``deletion_auc`` (``region`` None). The random-map baseline of
    the faithfulness metrics has method ``random``.
    """

    image_id: str
    label: str
    groups: dict[str, str]
    method: str
    orig_pred: str
    measure: str
    region: str | None
    value: float


def measures_schema(group_columns: Sequence[str]) -> pa.Schema:
    return pa.schema(
        [
            pa.field("image_id", pa.string()),
            pa.field("label", pa.string()),
            *[pa.field(GROUP_PREFIX + g, pa.string()) for g in group_columns],
            pa.field("method", pa.string()),
            pa.field("orig_pred", pa.string()),
            pa.field("measure", pa.string()),
            pa.field("region", pa.string()),
            pa.field("value", pa.float64()),
        ]
    )


def flatten(
    row: dict[str, object], group_columns: Sequence[str], covariate_columns: Sequence[str] = ()
) -> dict[str, object]:
    """A record or measure as a table row: its groups dict becomes ``group_<column>`` cells and
    a record's covariates dict ``covariate_<column>`` cells (None where the cell was missing)."""
    groups = row.pop("groups")
    assert isinstance(groups, dict)
    covariates = row.pop("covariates", None) or {}
    assert isinstance(covariates, dict)
    row.update({GROUP_PREFIX + g: groups.get(g) for g in group_columns})
    row.update({COVARIATE_PREFIX + c: covariates.get(c) for c in covariate_columns})
    return row
