"""A hypothesis run's plan: the audit's plan with a filter, two region sources and a success rule.

Like :class:`auditor.plan.RunPlan` it is frozen and fixed before the first batch: the batches
are cut from the samples sorted by image id (:func:`auditor.plan.cut_batches`), the filter's
labels.csv columns are typed once over the whole table (so a batch of numbers-only rows reads a
column as the rest do), and :meth:`HypothesisPlan.fingerprint` is what a resumed run must match.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor.attribution import default_method
from auditor.data import BOX_SUFFIX, Dataset, Skip
from auditor.errors import ConfigError
from auditor.hypothesis.spec import EditSpec, HypothesisSpec, RegionSpec, SuccessSpec
from auditor.hypothesis.where import typed
from auditor.models import LoadedModel, ModelMeta, open_model
from auditor.plan import PlannedBatch, cut_batches, labels_digest
from auditor.region_sources import (
    AttributionRegion,
    BoxColumn,
    FacePart,
    FixedBox,
    RegionSource,
    WholeImage,
)
from auditor.store import sha256_of
from auditor.summary import dataset_identity, model_identity

PRED = "pred"  # the filter's name for the model's prediction; p_<class> for its probabilities


@dataclass(frozen=True)
class RunOptions:
    """Where the model and the images are, and how to run them (as ``audit run`` takes them)."""

    model_path: Path
    dataset_dir: Path
    out_dir: Path
    label_column: str = "label"
    model_config: Path | None = None
    meta_overrides: dict[str, Any] = field(default_factory=dict)
    trust_model: bool = False
    batch_size: int = 32
    device: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")

    def open_model(self) -> LoadedModel:
        """The model these options name, opened as the planner opens it (and every worker)."""
        return open_model(
            self.model_path,
            model_config=self.model_config,
            meta_overrides=self.meta_overrides,
            trust_model=self.trust_model,
            device=self.device,
        )


@dataclass(frozen=True)
class HypothesisPlan:
    """What to test and on which images; ``filter_table`` holds, by image id, the typed
    labels.csv columns the spec's ``[images] where`` reads (None without a filter)."""

    spec: HypothesisSpec
    options: RunOptions
    meta: ModelMeta
    model: dict[str, Any]
    dataset: dict[str, Any]
    group_columns: tuple[str, ...]
    labels_sha256: str
    filter_table: pd.DataFrame | None
    skips: tuple[Skip, ...]
    batches: tuple[PlannedBatch, ...]

    @property
    def images(self) -> int:
        return sum(len(b.samples) for b in self.batches)

    @property
    def hypothesis_source(self) -> RegionSource:
        return region_source(self.spec.edit.region)

    @property
    def control_source(self) -> RegionSource | None:
        """The spec control's own region source; None for a random-region control."""
        edit = self.spec.control.edit
        return region_source(edit.region) if edit is not None else None

    @property
    def methods(self) -> tuple[str, ...]:
        """The attribution methods whose maps place a region, each computed once per image."""
        edits = [self.spec.edit, *([self.spec.control.edit] if self.spec.control.edit else [])]
        return tuple(sorted({e.region.method for e in edits if e.region.method is not None}))

    def select(self, ids: Sequence[str], probs: np.ndarray) -> np.ndarray:
        """Which of the images ``ids`` (with class probabilities ``probs``) the filter keeps."""
        if self.spec.where is None or self.filter_table is None:
            return np.ones(len(ids), dtype=bool)
        return self.spec.where.select(
            with_prediction(self.filter_table.loc[list(ids)], probs, self.meta.classes)
        )

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the stored one (the output directory and the
        device are left out, as an audit's are)."""
        spec = self.spec.to_json()
        spec.pop("path")
        spec["control"].pop("path")
        fingerprint = {
            "model_sha256": self.model["sha256"],
            "arch_sha256": self.model["arch_sha256"],
            "labels_sha256": self.labels_sha256,
            "spec": spec,
            "label_column": self.options.label_column,
            "batches": [b.batch_id for b in self.batches],
        }
        stored: dict[str, Any] = json.loads(json.dumps(fingerprint))  # as plan.json holds it
        return stored


def make_hypothesis_plan(
    spec: HypothesisSpec, options: RunOptions, model: LoadedModel, dataset: Dataset
) -> HypothesisPlan:
    """The plan of ``spec`` on ``dataset``, with every check that needs the model and the data.

    Raises:
        ConfigError: a class, box column or filter column that the model or labels.csv lacks.
    """
    meta = model.meta
    spec = _resolve_methods(spec, model)
    _check_classes(spec.success, meta.classes)
    labels = _labels_table(dataset)
    _check_box_columns(spec, list(labels.columns))
    filter_table = None
    if spec.where is not None:
        _check_filter(spec, labels, meta.classes)
        filter_table = labels[sorted(spec.where.columns & set(labels.columns))]
    samples = sorted(dataset.samples, key=lambda s: s.id)
    return HypothesisPlan(
        spec=spec,
        options=options,
        meta=meta,
        model=model_identity(options.model_path, None, model.kind, model.single_logit, meta),
        dataset=dataset_identity(dataset),
        group_columns=dataset.group_columns,
        labels_sha256=labels_digest(samples, dataset.skips),
        filter_table=filter_table,
        skips=tuple(dataset.skips),
        batches=tuple(cut_batches(samples, options.batch_size)),
    )


def region_source(region: RegionSpec) -> RegionSource:
    """The region source a spec's ``[region]`` (or its control's) describes."""
    if region.kind == "attribution":
        assert region.method is not None, "make_hypothesis_plan names the default method"
        return AttributionRegion(region.method, region.area)
    if region.kind == "face_region":
        assert region.name is not None, "the spec requires a name"
        return FacePart(region.name)
    if region.kind == "box_column":
        assert region.column is not None, "the spec requires a column"
        return BoxColumn(region.column)
    if region.kind == "box":
        assert region.box is not None, "the spec requires a box"
        return FixedBox(region.box)
    return WholeImage()


def with_prediction(table: pd.DataFrame, probs: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """``table`` with the columns the filter reserves: ``pred`` and ``p_<class>``."""
    computed: dict[str, Any] = {PRED: [classes[int(i)] for i in probs.argmax(axis=1)]}
    computed.update({f"p_{c}": probs[:, k] for k, c in enumerate(classes)})
    return table.assign(**computed)


def spec_sha256(spec: HypothesisSpec) -> tuple[str, str | None]:
    """SHA-256 of the spec file and of its control's spec file (None for a random control)."""
    control = spec.control.path
    return sha256_of(spec.path), sha256_of(control) if control is not None else None


def _resolve_methods(spec: HypothesisSpec, model: LoadedModel) -> HypothesisSpec:
    """Name the model's default attribution method wherever a spec leaves it to the model."""

    def resolved(edit: EditSpec) -> EditSpec:
        region = edit.region
        if region.kind != "attribution" or region.method is not None:
            return edit
        return dataclasses.replace(
            edit, region=dataclasses.replace(region, method=default_method(model))
        )

    control = spec.control
    if control.edit is not None:
        control = dataclasses.replace(control, edit=resolved(control.edit))
    return dataclasses.replace(spec, edit=resolved(spec.edit), control=control)


def _check_classes(success: SuccessSpec, classes: Sequence[str]) -> None:
    if success.kind == "probability_drop" and success.class_name not in classes:
        raise ConfigError(
            f"[success] class '{success.class_name}' is not a class of the model "
            f"(classes: {', '.join(classes)})"
        )


def _check_box_columns(spec: HypothesisSpec, columns: Sequence[str]) -> None:
    edits = [spec.edit, *([spec.control.edit] if spec.control.edit else [])]
    for edit in edits:
        column = edit.region.column
        if column is not None and column not in columns:
            boxes = [c for c in columns if str(c).endswith(BOX_SUFFIX)]
            raise ConfigError(
                f"[region] column '{column}' is not in labels.csv "
                f"(box columns: {', '.join(map(str, boxes)) or 'none'})"
            )


def _check_filter(spec: HypothesisSpec, table: pd.DataFrame, classes: Sequence[str]) -> None:
    """Refuse, before any image is read, a filter that names a missing column, compares a
    column with the wrong kind of value, or would be shadowed by the prediction's columns."""
    assert spec.where is not None
    reserved = {PRED, *(f"p_{c}" for c in classes)}
    clash = sorted(reserved & set(table.columns))
    if clash:
        raise ConfigError(
            f"labels.csv has column(s) {', '.join(clash)}, which [images] where reserves for "
            "the model's prediction and probabilities; rename them"
        )
    head = table.head(1)
    spec.where.select(with_prediction(head, np.full((len(head), len(classes)), 0.5), classes))


def _labels_table(dataset: Dataset) -> pd.DataFrame:
    """labels.csv by image id, typed for the filter; the label and group columns for an
    ImageFolder dataset without one."""
    ids = [s.id for s in dataset.samples]
    if dataset.labels_csv is None:
        return pd.DataFrame(
            {
                dataset.label_column: [s.label for s in dataset.samples],
                **{c: [s.groups[c] for s in dataset.samples] for c in dataset.group_columns},
            },
            index=ids,
        )
    table = pd.read_csv(dataset.labels_csv, dtype=str, keep_default_na=False, skipinitialspace=True)
    table.columns = [str(c).strip() for c in table.columns]
    table["file"] = table["file"].astype(str).str.strip()
    table = typed(table.drop_duplicates("file").set_index("file"))
    if dataset.label_column not in table.columns:  # an ImageFolder: the label is the folder
        table[dataset.label_column] = pd.Series({s.id: s.label for s in dataset.samples})
    return table.reindex(ids)
