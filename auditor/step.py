"""The batch step: one batch of images in, everything the run keeps about it out.

predict → attribute → propose regions → probe → re-score → records, attribution measures and
the batch's mergeable partials (mean-map sums and counts, gallery candidates). A step keeps no
state between batches and seeds everything by image id, so a batch's result is the same
whatever worker runs it and whatever ran before: the run store can write it under the batch's
id, and a resumed or distributed run combines to the same figures.

Attribution methods are a dimension of the results: every method proposes its own regions, and
every probe that edits an attribution region runs once per method, on the same images. Probes
that need no map (a mirror flip, a hair crop) run once per image.

Every probe has a control arm on the same images (region source ``placebo``, its kind in
``control_kind``): a region probe's is its region moved at random, or, where the shape fits
nowhere else, a random blob of the same area and compactness; the whole-image probes share one
noise floor, the image shifted by one pixel and scored once, recorded as each one's control.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import numpy as np

from auditor.attribution import Attributor, make_attributor
from auditor.config import AuditConfig, build_probes
from auditor.data import Sample
from auditor.faces import image_geometry
from auditor.gallery import (
    Gallery,
    GalleryCandidate,
    GalleryItem,
    encode,
    heatmap_overlay,
    region_thumbnail,
    thumbnail,
)
from auditor.localisation import Geometry
from auditor.maps import MapAccumulator, MapKey
from auditor.models import LoadedModel, open_model
from auditor.plan import PlannedBatch, RunPlan
from auditor.preprocess import ImageReadError, ReadImage, read_image, to_tensor
from auditor.records import NOISE_FLOOR, PLACEBO, Measure, Record, direction_of
from auditor.region_sources import (
    AttributionRegion,
    HairRegion,
    ImageView,
    Placement,
    RegionSource,
    WholeImage,
    random_control,
)
from auditor.regions import Region
from auditor.rescore import predict, score
from auditor.stats import arm
from probes import Probe
from probes.crop_shift import CropShift

READER_THREADS = 4  # image decoding overlaps the model's work on the previous images


@dataclass(frozen=True)
class BatchResult:
    """What one batch adds to the run: its rows and its share of the run-wide aggregates.

    ``mean_maps`` holds, per (method, grouping, group, outcome), the sum of the batch's
    normalised aligned maps and how many were added; sums of batches merge by addition.
    """

    batch_id: str
    images: int
    records: list[Record]
    measures: list[Measure]
    mean_maps: dict[MapKey, tuple[np.ndarray, int]]
    gallery: list[GalleryCandidate]
    scored: int  # images the model gave a finite output
    model_failure: str | None  # the first reason it gave another image none


def open_plan_model(config: AuditConfig) -> LoadedModel:
    """The plan's model, opened as the planner opened it (each worker opens its own)."""
    return open_model(
        config.model_path,
        predict=config.predict,
        model_config=config.model_config,
        meta_overrides=config.meta_overrides,
        trust_model=config.trust_model,
        device=config.device,
    )


def make_probes(config: AuditConfig) -> list[Probe]:
    """The configured probes (built from their spec strings), in the configured order."""
    return build_probes(config.probes)


class BatchStep:
    """Audits batches of one plan; holds the model and attributors, opened once per worker."""

    def __init__(self, plan: RunPlan, model: LoadedModel | None = None) -> None:
        self.plan = plan
        self.model = model if model is not None else open_plan_model(plan.config)
        self.probes = make_probes(plan.config)
        self.attributors: dict[str, Attributor] = {
            name: make_attributor(name, self.model, self.model.meta.target_layer, plan.options)
            for name in plan.methods
        }
        self._readers = ThreadPoolExecutor(max_workers=READER_THREADS)

    def close(self) -> None:
        self._readers.shutdown()

    def __call__(self, planned: PlannedBatch) -> BatchResult:
        config, model = self.plan.config, self.model
        scored = read_and_score(planned.samples, self._readers, model, config.batch_size)
        batch, records = _batch(scored, config, model.meta.classes)
        maps = MapAccumulator(
            self.plan.group_columns,
            scorer=functools.partial(predict, model, batch_size=config.batch_size),
            faithful_ids=self.plan.faithful_ids,
            seed=config.seed,
        )
        gallery = Gallery(config.gallery_size)
        measures: list[Measure] = []
        if batch is not None:
            tensor = to_tensor(batch.pixels, model.meta, model.device)
            attributions = {
                name: attributor(tensor, batch.targets)
                for name, attributor in self.attributors.items()
            }
            records += _probe(batch, attributions, self.probes, model, config, gallery)
            predictions = [model.meta.classes[i] for i in batch.probs.argmax(axis=1)]
            measures = maps.add(
                batch.samples,
                batch.geometry,
                batch.pixels,
                predictions,
                batch.targets,
                attributions,
            )
        return BatchResult(
            batch_id=planned.batch_id,
            images=len(planned.samples),
            records=records,
            measures=measures,
            mean_maps=cast(dict[MapKey, tuple[np.ndarray, int]], maps.mean_maps.partial()),
            gallery=gallery.candidates(),
            scored=len(scored.samples),
            model_failure=scored.model_failure,
        )


@dataclass(frozen=True)
class Batch:
    """The readable images of one batch, their predictions and the class each map explains."""

    samples: list[Sample]
    images: list[ReadImage]
    geometry: list[Geometry]
    pixels: np.ndarray  # uint8 [N, H, W, 3]
    probs: np.ndarray  # [N, classes]
    targets: list[int]


@dataclass(frozen=True)
class Edit:
    """One change to one image of the batch, with its region, and the probes whose arm its
    outcome is: one probe, or every whole-image probe for their shared noise floor."""

    index: int
    probes: tuple[Probe, ...]
    change: Probe  # what is applied: the probe itself, or the noise floor's one-pixel shift
    method: str | None  # the attribution method that placed the region, if a map did
    source: str
    control: str | None  # the control's kind (records.CONTROL_KINDS); None for the edit itself
    region: Region | None
    keep: np.ndarray | None


@dataclass(frozen=True)
class Scored:
    """A batch as first read: its readable images with their class probabilities, and the
    reason each other image could not be read."""

    samples: list[Sample]
    images: list[ReadImage]
    pixels: np.ndarray  # uint8 [N, H, W, 3]
    probs: np.ndarray  # [N, classes]
    unreadable: list[tuple[Sample, str]]  # not read, or given no finite output by the model
    model_failure: str | None  # the first reason the model gave an image no output


def read_and_score(
    samples: Sequence[Sample], readers: ThreadPoolExecutor, model: LoadedModel, batch_size: int
) -> Scored:
    """Read (on ``readers``, overlapping the model's work) and predict a batch of samples."""
    unreadable: list[tuple[Sample, str]] = []
    loaded: list[tuple[Sample, ReadImage]] = []
    for sample, image in zip(samples, readers.map(lambda s: _read(s, model), samples), strict=True):
        if isinstance(image, str):
            unreadable.append((sample, image))
        else:
            loaded.append((sample, image))
    pixels = (
        np.stack([image.pixels for _, image in loaded])
        if loaded
        else np.zeros((0, 0, 0, 3), np.uint8)
    )
    scores = score(model, pixels, batch_size)
    unreadable += [(s, f) for (s, _), f in zip(loaded, scores.failures, strict=True) if f]
    keep = [i for i, f in enumerate(scores.failures) if f is None]
    return Scored(
        [loaded[i][0] for i in keep],
        [loaded[i][1] for i in keep],
        pixels[keep],
        scores.probs[keep],
        unreadable,
        scores.first_failure,
    )


def apply_edit(
    probe: Probe, pixels: np.ndarray, region: Region | None, keep: np.ndarray | None
) -> np.ndarray:
    """``probe`` applied to one image's pixels on ``region`` (None: the whole image)."""
    edited: np.ndarray = probe(
        image=pixels, region=None if region is None else region.mask, keep=keep
    )["image"]
    return edited


def _batch(
    scored: Scored, config: AuditConfig, classes: Sequence[str]
) -> tuple[Batch | None, list[Record]]:
    """The scored images of a batch; the others become skip records with their reasons."""
    unreadable = [
        Record(*_keys(sample), None, None, None, skip_reason=reason, covariates=sample.covariates)
        for sample, reason in scored.unreadable
    ]
    if not scored.samples:
        return None, unreadable
    targets = [
        _target_index(config.target, int(p), s.label, classes)
        for s, p in zip(scored.samples, scored.probs.argmax(axis=1), strict=True)
    ]
    batch = Batch(
        samples=scored.samples,
        images=scored.images,
        geometry=[image_geometry(s, i) for s, i in zip(scored.samples, scored.images, strict=True)],
        pixels=scored.pixels,
        probs=scored.probs,
        targets=targets,
    )
    return batch, unreadable


def _probe(
    batch: Batch,
    attributions: dict[str, np.ndarray],
    probes: Sequence[Probe],
    model: LoadedModel,
    config: AuditConfig,
    gallery: Gallery,
) -> list[Record]:
    """Plan every edit of the batch, apply them, re-score, and turn the outcomes into records."""
    edits, records = _edits(batch, attributions, probes, config)
    probed = (
        np.stack([apply_edit(e.change, batch.pixels[e.index], e.region, e.keep) for e in edits])
        if edits
        else np.zeros((0, *batch.pixels.shape[1:]), np.uint8)
    )
    rescored = score(model, probed, config.batch_size)
    classes = model.meta.classes
    for edit, image_after, after, failure in zip(
        edits, probed, rescored.probs, rescored.failures, strict=True
    ):
        sample = batch.samples[edit.index]
        for probe in edit.probes:
            if failure is not None:
                reason = f"edited image: {failure}"
                records.append(_skip(sample, probe, edit.source, edit.method, edit.control, reason))
                continue
            before = batch.probs[edit.index]
            record = _record(sample, probe, edit, before, after, classes, probed.shape[1:3])
            records.append(record)
            if edit.control is None:
                attribution = attributions[edit.method][edit.index] if edit.method else None
                gallery.offer(
                    (arm(probe.name, edit.method), *map(str, sorted(record.groups.items()))),
                    _effect(record),
                    record.image_id,
                    functools.partial(
                        _gallery_item,
                        record,
                        batch.pixels[edit.index],
                        attribution,
                        edit,
                        image_after,
                    ),
                )
    return records


def _edits(
    batch: Batch,
    attributions: dict[str, np.ndarray],
    probes: Sequence[Probe],
    config: AuditConfig,
) -> tuple[list[Edit], list[Record]]:
    """Every edit to make, and a skip record for each edit whose region does not exist."""
    edits: list[Edit] = []
    skipped: list[Record] = []
    whole = tuple(p for p in probes if p.region_from == "whole_image")
    noise_floor = _noise_floor(batch.pixels.shape[2])
    for index, sample in enumerate(batch.samples):
        view = ImageView(
            sample,
            batch.images[index],
            {name: maps[index] for name, maps in attributions.items()},
            batch.geometry[index],
        )
        for probe in probes:
            methods: Sequence[str | None] = (
                list(attributions) if probe.region_from == "attribution" else [None]
            )
            for method in methods:
                for source, control, found in _regions(probe, method, view, config):
                    if isinstance(found, str):
                        skipped.append(_skip(sample, probe, source, method, control, found))
                    else:
                        region, keep = found
                        edits.append(
                            Edit(index, (probe,), probe, method, source, control, region, keep)
                        )
        if whole:
            edits.append(Edit(index, whole, noise_floor, None, PLACEBO, NOISE_FLOOR, None, None))
    return edits, skipped


@functools.lru_cache(maxsize=8)
def _noise_floor(width: int) -> Probe:
    """The whole-image probes' control: the crop moved one pixel right (and down, on a square
    input), an edit that should change nothing, so what it flips is what nothing at all flips."""
    return CropShift(shift=1 / width)


def _skip(
    sample: Sample, probe: Probe, source: str, method: str | None, control: str | None, reason: str
) -> Record:
    """The record of an edit of ``sample`` that was not made or not scored, and why."""
    return Record(
        *_keys(sample),
        probe.name,
        source,
        method,
        skip_reason=reason,
        control_kind=control,
        covariates=sample.covariates,
    )


def _keys(sample: Sample) -> tuple[str, str, dict[str, str]]:
    """The first fields of every record of ``sample``: its id, label and groups."""
    return sample.id, sample.label, sample.groups


def _region_source(probe: Probe, method: str | None, area: float) -> RegionSource:
    """Where ``probe`` edits: ``method``'s attribution region, the hair, or the whole image."""
    if probe.region_from == "attribution":
        assert method is not None, "an attribution probe runs once per method"
        return AttributionRegion(method, area)
    if probe.region_from == "face":
        return HairRegion()
    return WholeImage()


def _regions(
    probe: Probe, method: str | None, view: ImageView, config: AuditConfig
) -> list[tuple[str, str | None, Placement]]:
    """The probe's region for this image and a region probe's control, each with its region
    source and control kind (None for the probe's own region)."""
    kind = probe.region_from
    guided = _region_source(probe, method, config.region_area).place(view)
    if kind == "whole_image":
        return [(kind, None, guided)]
    # Seeded per image and method: adding a method or an image changes no other control.
    control, placed = random_control(
        guided, seed=config.seed, image_id=view.sample.id, salt=method or kind
    )
    return [(kind, None, guided), (PLACEBO, control, placed)]


def _effect(record: Record) -> float:
    """How strongly an edit moved the prediction: flips first, then by probability lost."""
    drop = (record.orig_p_pred or 0.0) - (record.probed_p_orig_pred or 0.0)
    return drop + float(bool(record.flipped))


def _gallery_item(
    record: Record,
    pixels: np.ndarray,
    attribution: np.ndarray | None,
    edit: Edit,
    probed: np.ndarray,
) -> dict[str, object]:
    item = GalleryItem(
        probe=arm(record.probe or "", edit.method),
        region_source=edit.source,
        image_id=record.image_id,
        label=record.label or "",
        groups=record.groups,
        orig_pred=record.orig_pred or "",
        probed_pred=record.probed_pred or "",
        orig_p_pred=record.orig_p_pred or 0.0,
        probed_p_orig_pred=record.probed_p_orig_pred or 0.0,
        direction=record.direction or "",
        original=thumbnail(pixels),
        heatmap=thumbnail(heatmap_overlay(pixels, attribution)),
        probed=thumbnail(probed),
        region=None if edit.region is None else region_thumbnail(edit.region.mask),
    )
    return encode(item)


def _read(sample: Sample, model: LoadedModel) -> ReadImage | str:
    """The resized image, or the reason it cannot be read."""
    try:
        return read_image(sample.path, model.meta.input_size)
    except ImageReadError as exc:
        return str(exc)


def _target_index(target: str, predicted: int, label: str, classes: Sequence[str]) -> int:
    if target == "predicted":
        return predicted
    if target == "true":
        return classes.index(label)
    return classes.index(target)


def _record(
    sample: Sample,
    probe: Probe,
    edit: Edit,
    before: np.ndarray,
    after: np.ndarray,
    classes: Sequence[str],
    shape: tuple[int, ...],
) -> Record:
    orig, new = int(before.argmax()), int(after.argmax())
    label_index = classes.index(sample.label)
    box = edit.region.box if edit.region is not None else None
    return Record(
        image_id=sample.id,
        label=sample.label,
        groups=sample.groups,
        probe=probe.name,
        region_source=edit.source,
        method=edit.method,
        orig_pred=classes[orig],
        orig_p_pred=float(before[orig]),
        orig_p_label=float(before[label_index]),
        probed_pred=classes[new],
        probed_p_orig_pred=float(after[orig]),
        probed_p_label=float(after[label_index]),
        orig_probs=before.tolist(),
        probed_probs=after.tolist(),
        flipped=orig != new,
        direction=direction_of(sample.label, classes[orig], classes[new]),
        region_x0=box[0] if box else None,
        region_y0=box[1] if box else None,
        region_x1=box[2] if box else None,
        region_y1=box[3] if box else None,
        region_area=(edit.region.area / (shape[0] * shape[1])) if edit.region is not None else 1.0,
        control_kind=edit.control,
        covariates=sample.covariates,
    )
