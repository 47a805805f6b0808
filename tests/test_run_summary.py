"""summary.json reads back as typed objects that hold exactly what the file holds."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from auditor.config import AuditConfig
from auditor.errors import RunDirError
from auditor.pipeline import run_audit
from auditor.run_summary import (
    GapTest,
    JsonShapeError,
    Rate,
    RunSummary,
    StoredGalleryItem,
    decode,
)
from auditor.store import RunStore
from tests.conftest import load_summary

# Sections whose every key the reader models; of ``config`` it models the keys it names.
WHOLE = (
    "schema_version", "tool", "created", "seconds", "model", "attribution", "dataset", "probes",
    "versions", "statistics",
)  # fmt: skip


@pytest.fixture
def run(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> Path:
    """A small real run with every list of summary.json filled: two methods (so divergences
    between them), faithfulness curves, and subgroups large enough to be tested."""
    config = AuditConfig(
        model_path=tiny_model(),
        dataset_dir=small_dataset(n=16),
        out_dir=tmp_path / "run",
        label_column="gender",
        methods=("gradcam", "saliency"),
        faithfulness_images=4,
        min_group_size=2,
    )
    return run_audit(config)


def as_json(value: Any) -> Any:
    """A typed summary back in JSON's terms: dataclasses and mappings to dicts, tuples to lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [as_json(v) for v in value]
    return value


def test_a_stored_summary_reads_back_as_typed_figures(run: Path) -> None:
    summary, raw = RunStore.open(run).summary(), load_summary(run)
    stats, raw_stats = summary.statistics, raw["statistics"]
    assert isinstance(summary, RunSummary)
    assert stats.overall_error == Rate(**raw_stats["overall_error"])
    gap = stats.error_gaps[0]
    assert isinstance(gap, GapTest) and gap.id == raw_stats["error_gaps"][0]["id"]
    assert [g.rate.k for g in gap.groups] == [
        g["rate"]["k"] for g in raw_stats["error_gaps"][0]["groups"]
    ]
    assert stats.paired[0].guided.rate == raw_stats["paired"][0]["guided"]["rate"]
    assert {k: r.n for k, r in stats.flip_overall.items()} == {
        k: r["n"] for k, r in raw_stats["flip_overall"].items()
    }
    assert summary.dataset.images_audited == raw["dataset"]["images_audited"] == 16
    assert summary.dataset.group_columns == ("gender", "race")
    assert summary.method_names == ["gradcam", "saliency"]
    assert summary.model.input_size == (48, 48)
    assert summary.config.min_group_size == stats.min_group_size == 2


def test_every_field_of_a_full_summary_round_trips(run: Path) -> None:
    raw = load_summary(run)
    typed = as_json(RunStore.open(run).summary())
    attribution = raw["attribution"]
    lists = ("faithfulness", "localisation", "mean_maps", "divergence")
    assert all(attribution[name] for name in lists), "the run should fill every list"
    assert set(typed) == set(raw)
    for section in WHOLE:
        assert typed[section] == raw[section], section
    assert typed["config"] == {key: raw["config"][key] for key in typed["config"]}


def test_a_summary_of_another_shape_is_refused_naming_the_key(run: Path) -> None:
    raw = load_summary(run)
    statistics = {k: v for k, v in raw["statistics"].items() if k != "flip_overall"}
    with pytest.raises(JsonShapeError, match=r"^statistics\.flip_overall is missing$"):
        RunSummary.from_json({**raw, "statistics": statistics})
    with pytest.raises(JsonShapeError, match=r"^it was written with summary schema 1, "):
        RunSummary.from_json({**raw, "schema_version": 1})  # refused before any key is read
    raw["statistics"]["error_gaps"][1]["p_value"] = "small"
    (run / "summary.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(RunDirError, match=r"statistics\.error_gaps\[1\]\.p_value should be a num"):
        RunStore.open(run).summary()


def test_json_arrays_become_tuples_and_numbers_keep_their_stored_value() -> None:
    rate = decode(Rate, {"n": 4, "k": 2, "rate": 0.5, "ci_low": 0, "ci_high": None, "more": 1})
    assert rate == Rate(4, 2, 0.5, 0, None)
    with pytest.raises(JsonShapeError, match=r"^n should be a whole number, not true$"):
        decode(Rate, {"n": True, "k": 0, "rate": None, "ci_low": None, "ci_high": None})


def test_the_gallery_reads_back_as_typed_items(run: Path) -> None:
    """gallery.json's items as typed objects holding what the file holds; an item of another
    shape is refused naming it and the command that writes it again."""
    raw = json.loads((run / "gallery.json").read_text(encoding="utf-8"))
    items = RunStore.open(run).gallery()
    assert items and all(isinstance(item, StoredGalleryItem) for item in items)
    assert [as_json(item) for item in items] == [
        {key: entry[key] for key in as_json(item)} for item, entry in zip(items, raw, strict=True)
    ]
    assert {item.probe for item in items} >= {"blackout@gradcam", "flip"}
    del raw[2]["probed_png"]
    (run / "gallery.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(RunDirError, match=r"\[2\]\.probed_png is missing; rerun `audit run`"):
        RunStore.open(run).gallery()
