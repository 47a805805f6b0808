"""summary.json: the run's statistics with everything needed to reproduce and trust them.

Its JSON Schema ships in ``auditor/schemas/summary.schema.json``; tests validate against it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from auditor import __version__, user_code
from auditor.records import BREAK, CORRECTION, GROUP_PREFIX, PLACEBO, RESULTS_FILE
from auditor.run_summary import SCHEMA_VERSION
from auditor.stats import group_labels, groupings
from auditor.store import ALL, SUMMARY_FILE, sha256_of, write_atomically

if TYPE_CHECKING:  # the engine's types; readers of summary.json (reports, gate) import no torch
    from auditor.attribution import Attributor
    from auditor.data import Dataset
    from auditor.models import ModelMeta
    from auditor.plan import RunPlan
    from auditor.stats import Statistics
    from probes import Probe

SCHEMA_PATH = Path(__file__).parent / "schemas" / "summary.schema.json"
_PACKAGES = (
    "torch", "torchvision", "timm", "captum", "grad-cam", "albumentations",
    "opencv-python-headless",
    "numpy", "scipy", "pandas", "statsmodels", "pyarrow",
)  # fmt: skip
# At most this many skipped rows are listed one by one; all of them are counted.
MAX_LISTED_SKIPS = 1000
# The results.parquet columns that flip directions are counted from, beside the group columns.
DIRECTION_COLUMNS = (
    "image_id", "skip_reason", "probe", "method", "region_source", "flipped", "direction",
)  # fmt: skip


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "auditor": __version__}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def model_identity(
    model_path: Path | None, predict: str | None, kind: str, single_logit: bool, meta: ModelMeta
) -> dict[str, Any]:
    """Which model was judged: its file (or prediction function) and the SHA-256 of the file
    that defines it, how it was loaded, its metadata, and the SHA-256 of a user architecture's
    source file (``--arch model.py:Class``), which decides the network as much as the weights."""
    defining = model_path if model_path is not None else user_code.source_file(predict or "")
    arch = meta.arch if meta.arch and user_code.is_reference(meta.arch) else None
    arch_file = user_code.source_file(arch) if arch else None
    return {
        "path": str(model_path) if model_path is not None else predict,
        "sha256": sha256_of(defining) if defining and defining.is_file() else None,
        "kind": kind,
        "single_logit": single_logit,
        **dataclasses.asdict(meta),
        "arch_sha256": sha256_of(arch_file) if arch_file and arch_file.is_file() else None,
    }


def dataset_identity(dataset: Dataset) -> dict[str, Any]:
    """Which data was judged: its root, labels.csv's SHA-256, the columns used (with what
    labels.schema.json says they stand for), its rows."""
    return {
        "root": str(dataset.root),
        "labels_csv_sha256": sha256_of(dataset.labels_csv) if dataset.labels_csv else None,
        "label_column": dataset.label_column,
        "group_columns": list(dataset.group_columns),
        "column_descriptions": {
            name: dataclasses.asdict(description)
            for name, description in dataset.column_descriptions.items()
        },
        "rows": len(dataset.samples) + len(dataset.skips),
    }


def write_summary(
    run_dir: Path,
    *,
    plan: RunPlan,
    attributors: Sequence[Attributor],
    probes: Sequence[Probe],
    records: pd.DataFrame,
    statistics: Statistics,
    maps: dict[str, Any],
    seconds: float,
) -> Path:
    """Write summary.json; ``maps`` is the attribution-map summary (faithfulness, localisation,
    divergences) that joins the methods' names and layers under ``attribution``."""
    skipped = records[records["skip_reason"].notna()]
    whole_images = skipped[skipped["probe"].isna()]
    audited = records[records["skip_reason"].isna()]["image_id"].nunique()
    config = plan.config
    summary = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "auditor", "version": __version__},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "config": config.to_json(),
        "model": plan.model,
        "attribution": {
            "target": config.target,
            "methods": [{"name": a.name, "target_layer": a.target_layer} for a in attributors],
            "options": dataclasses.asdict(plan.options),
            "default_note": plan.default_note,
            **maps,
        },
        "dataset": {
            **plan.dataset,
            "images_audited": int(audited),
            "images_skipped": int(whole_images["image_id"].nunique()),
            "skips_by_reason": _count_reasons(skipped),
            "skipped": [
                {"image_id": r.image_id, "probe": r.probe, "reason": r.skip_reason}
                for r in skipped.head(MAX_LISTED_SKIPS).itertuples()
            ],
        },
        "probes": [
            {
                "name": p.name,
                "description": p.description,
                "region_from": p.region_from,
                "cover": p.cover,
                "params": p.get_transform_init_args(),  # every argument, defaults included
            }
            for p in probes
        ],
        "versions": package_versions(),
        "statistics": dataclasses.asdict(statistics),
        "flip_directions": flip_directions(
            pd.read_parquet(
                run_dir / RESULTS_FILE,
                columns=[*DIRECTION_COLUMNS, *(GROUP_PREFIX + g for g in plan.group_columns)],
            ),
            plan.group_columns,
        ),
    }
    text = json.dumps(_finite(summary), indent=2, allow_nan=False) + "\n"
    path = run_dir / SUMMARY_FILE
    write_atomically(path, lambda p: p.write_text(text, encoding="utf-8"))
    return path


def _count_reasons(skipped: pd.DataFrame) -> list[dict[str, Any]]:
    """Counts per (probe, what was skipped, reason kind); the kind is the reason up to its
    first colon. What was skipped is the whole image, the edit, or only its placebo (the edit
    itself ran): a reader must not take a missing control for a probe that never ran."""
    kinds = skipped["skip_reason"].str.split(":", n=1).str[0]
    probes = skipped["probe"].fillna("(whole image)")
    arms = np.where(
        skipped["probe"].isna(),
        "image",
        np.where(skipped["region_source"] == PLACEBO, "placebo", "edit"),
    )
    table = pd.DataFrame({"probe": probes, "arm": arms, "reason": kinds})
    counts = table.value_counts().sort_index()
    return [{"probe": p, "arm": a, "reason": r, "count": int(n)} for (p, a, r), n in counts.items()]


def flip_directions(records: pd.DataFrame, group_columns: Sequence[str]) -> list[dict[str, Any]]:
    """Corrections (wrong → right) and breaks (right → wrong) among the flips of every probe
    arm and region source, over all images and every subgroup of every grouping.

    A flip rate alone hides which way the edits went: 38 % can be 76 breaks and 38
    corrections. Each arm is counted twice where it has a placebo: over all its images (as
    its flip-rate gaps are), and over the images that received both the guided edit and its
    placebo (``paired``, as the guided-vs-placebo and excess tests are).
    """
    valid = records[records["skip_reason"].isna() & records["probe"].notna()]
    valid = valid.assign(method=valid["method"].astype(object).where(valid["method"].notna(), ""))
    counted = []
    for paired, frame in ((False, valid), (True, _paired_rows(valid))):
        for grouping, columns in [(ALL, []), *groupings(group_columns)]:
            labels = group_labels(frame, columns) if columns else pd.Series(ALL, frame.index)
            table = (
                frame.assign(
                    group=labels,
                    corrections=frame["direction"] == CORRECTION,
                    breaks=frame["direction"] == BREAK,
                    flips=frame["flipped"].astype(bool),
                )
                .groupby(["probe", "method", "region_source", "group"], sort=True)
                .agg(
                    n=("image_id", "size"),
                    flips=("flips", "sum"),
                    corrections=("corrections", "sum"),
                    breaks=("breaks", "sum"),
                )
            )
            counted += [
                {
                    "probe": probe,
                    "method": method or None,
                    "region_source": source,
                    "paired": paired,
                    "grouping": grouping,
                    "group": group,
                    **{name: int(value) for name, value in row.items()},
                }
                for (probe, method, source, group), row in table.iterrows()
            ]
    return counted


def _paired_rows(valid: pd.DataFrame) -> pd.DataFrame:
    """The rows of each arm with a placebo, on the images that received both of its edits."""
    arm_image = [valid["probe"], valid["method"], valid["image_id"]]
    placebo = valid["region_source"] == PLACEBO
    has_placebo = placebo.groupby(arm_image).transform("any")
    has_guided = (~placebo).groupby(arm_image).transform("any")
    return valid[has_placebo & has_guided]


def _finite(value: Any) -> Any:
    """JSON-safe copy: tuples to lists, NaN and infinities to null, numpy scalars to Python."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
