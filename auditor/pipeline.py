"""The one place where the stages meet: load → predict → attribute → regions → probe → re-score
→ records → statistics → summary. Each stage lives in its own module and knows nothing of the
others; this module only passes their outputs along, a batch of images at a time.
"""

from __future__ import annotations

import functools
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auditor.attribute import Attributor, default_method, make_attributor
from auditor.config import AuditConfig
from auditor.data import Sample, load_dataset
from auditor.errors import ConfigError
from auditor.faces import detect_face
from auditor.gallery import Gallery, GalleryItem, heatmap_overlay, thumbnail
from auditor.models import LoadedModel, load_model, read_meta
from auditor.preprocess import ImageReadError, ReadImage, read_image, to_tensor
from auditor.records import PLACEBO, Record, RecordWriter, direction_of, read_records
from auditor.regions import Region, face_masks, placebo_region, propose_region, scale_box
from auditor.rescore import predict
from auditor.stats import compute_statistics
from auditor.summary import write_summary
from probes import PROBES, Probe

ProgressFn = Callable[[int, int], None]  # (images done, images in all)


@dataclass(frozen=True)
class Edit:
    """One probe applied to one image of the batch, with the region it was given."""

    index: int
    probe: Probe
    source: str
    region: Region | None
    keep: np.ndarray | None


@dataclass(frozen=True)
class Regions:
    """Per image and region source: the region and the pixels to keep, or why there is none."""

    found: dict[str, tuple[Region | None, np.ndarray | None]]
    missing: dict[str, str]


def run_audit(config: AuditConfig, progress: ProgressFn | None = None) -> Path:
    """Audit ``config.model_path`` on ``config.dataset_dir``; return the run directory.

    Raises:
        AuditorError: (and subclasses) for unusable model, metadata or dataset.
    """
    started = time.time()
    meta = read_meta(config.model_path, config.model_config, config.meta_overrides)
    model = load_model(
        config.model_path, meta, trust_model=config.trust_model, device=config.device
    )
    dataset = load_dataset(
        config.dataset_dir,
        meta.classes,
        label_column=config.label_column,
        group_columns=config.group_columns,
    )
    if config.target not in ("predicted", "true", *meta.classes):
        raise ConfigError(
            f"--target must be 'predicted', 'true' or a class ({', '.join(meta.classes)}), "
            f"got '{config.target}'"
        )
    method = config.method or default_method(model)
    attributor = make_attributor(method, model, meta.target_layer)
    probes = [PROBES[name]() for name in config.probes]
    run_dir = config.out_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = RecordWriter(run_dir, dataset.group_columns)
    gallery = Gallery(config.gallery_size)
    writer.write(
        Record(
            s.id,
            s.label,
            s.groups,
            probe=None,
            region_source=None,
            method=None,
            skip_reason=s.reason,
        )
        for s in dataset.skips
    )
    total = len(dataset.samples)
    done = 0
    with ThreadPoolExecutor(max_workers=4) as readers:
        for batch in _batches(dataset.samples, config.batch_size):
            records = _audit_batch(
                batch, readers, model, attributor, method, probes, config, gallery
            )
            writer.write(records)
            done += len(batch)
            if progress:
                progress(done, total)
    writer.finish()
    gallery.write(run_dir)
    records_table = read_records(run_dir)
    statistics = compute_statistics(
        records_table, alpha=config.alpha, min_group_size=config.min_group_size, seed=config.seed
    )
    write_summary(
        run_dir,
        config=config,
        meta=model.meta,
        model_kind=model.kind,
        single_logit=model.single_logit,
        method=method,
        target_layer=getattr(attributor, "target_layer", None),
        dataset=dataset,
        probes=probes,
        records=records_table,
        statistics=statistics,
        seconds=time.time() - started,
    )
    return run_dir


def _batches(samples: Sequence[Sample], size: int) -> Iterator[Sequence[Sample]]:
    for start in range(0, len(samples), size):
        yield samples[start : start + size]


def _audit_batch(
    batch: Sequence[Sample],
    readers: ThreadPoolExecutor,
    model: LoadedModel,
    attributor: Attributor,
    method: str,
    probes: Sequence[Probe],
    config: AuditConfig,
    gallery: Gallery,
) -> list[Record]:
    records: list[Record] = []
    loaded: list[tuple[Sample, ReadImage]] = []
    for sample, image in zip(batch, readers.map(lambda s: _read(s, model), batch), strict=True):
        if isinstance(image, str):
            records.append(
                Record(
                    sample.id,
                    sample.label,
                    sample.groups,
                    probe=None,
                    region_source=None,
                    method=None,
                    skip_reason=image,
                )
            )
        else:
            loaded.append((sample, image))
    if not loaded:
        return records
    classes = model.meta.classes
    pixels = np.stack([image.pixels for _, image in loaded])
    probs = predict(model, pixels, config.batch_size)
    predicted = probs.argmax(axis=1)
    targets = [
        _target_index(config.target, int(p), s.label, classes)
        for (s, _), p in zip(loaded, predicted, strict=True)
    ]
    maps = attributor(to_tensor(pixels, model.meta, model.device), targets)

    edits: list[Edit] = []
    for index, (sample, image) in enumerate(loaded):
        regions = _regions(sample, image, maps[index], config)
        for probe in probes:
            sources = [probe.region_from] + (
                [PLACEBO] if probe.region_from != "whole_image" else []
            )
            for source in sources:
                key = f"{probe.region_from}/{source}"
                if key in regions.missing:
                    records.append(
                        Record(
                            sample.id,
                            sample.label,
                            sample.groups,
                            probe.name,
                            source,
                            _method_of(probe, method),
                            skip_reason=regions.missing[key],
                        )
                    )
                    continue
                region, keep = regions.found[key]
                edits.append(Edit(index, probe, source, region, keep))

    probed = (
        np.stack(
            [
                e.probe(
                    image=loaded[e.index][1].pixels,
                    region=None if e.region is None else e.region.mask,
                    keep=e.keep,
                )["image"]
                for e in edits
            ]
        )
        if edits
        else np.zeros((0, *pixels.shape[1:]), np.uint8)
    )
    probed_probs = predict(model, probed, config.batch_size)

    for edit, image_after, after in zip(edits, probed, probed_probs, strict=True):
        sample, image = loaded[edit.index]
        before = probs[edit.index]
        record = _record(sample, edit, before, after, classes, method, image.pixels.shape[:2])
        records.append(record)
        if edit.source != PLACEBO:
            gallery.offer(
                edit.probe.name,
                _effect(record),
                functools.partial(
                    _gallery_item,
                    record,
                    sample,
                    image.pixels,
                    maps[edit.index],
                    edit,
                    image_after,
                ),
            )
    return records


def _effect(record: Record) -> float:
    """How strongly an edit moved the prediction: flips first, then by probability lost."""
    drop = (record.orig_p_pred or 0.0) - (record.probed_p_orig_pred or 0.0)
    return drop + float(bool(record.flipped))


def _gallery_item(
    record: Record,
    sample: Sample,
    pixels: np.ndarray,
    attribution: np.ndarray,
    edit: Edit,
    probed: np.ndarray,
) -> GalleryItem:
    region = None if edit.region is None else edit.region.mask
    return GalleryItem(
        probe=edit.probe.name,
        region_source=edit.source,
        image_id=record.image_id,
        label=sample.label,
        groups=sample.groups,
        orig_pred=record.orig_pred or "",
        probed_pred=record.probed_pred or "",
        orig_p_pred=record.orig_p_pred or 0.0,
        probed_p_orig_pred=record.probed_p_orig_pred or 0.0,
        direction=record.direction or "",
        original=thumbnail(pixels),
        heatmap=thumbnail(heatmap_overlay(pixels, attribution, region)),
        probed=thumbnail(probed),
    )


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


def _method_of(probe: Probe, method: str) -> str | None:
    return method if probe.region_from == "attribution" else None


def _regions(
    sample: Sample, image: ReadImage, attribution: np.ndarray, config: AuditConfig
) -> Regions:
    """Every region this image's probes need, keyed ``region_from/source``."""
    rng = np.random.default_rng([config.seed, zlib.crc32(sample.id.encode())])
    found: dict[str, tuple[Region | None, np.ndarray | None]] = {
        "whole_image/whole_image": (None, None)
    }
    missing: dict[str, str] = {}

    guided = propose_region(attribution, config.region_area)
    if guided is None:
        missing["attribution/attribution"] = missing["attribution/placebo"] = (
            "attribution map is flat: no region stands out"
        )
    else:
        found["attribution/attribution"] = (guided, None)

    face = _face_regions(sample, image)
    if isinstance(face, str):
        missing["face/face"] = missing["face/placebo"] = face
    else:
        found["face/face"] = face

    for kind in ("attribution", "face"):
        if f"{kind}/{kind}" not in found:
            continue
        region = found[f"{kind}/{kind}"][0]
        assert region is not None
        twin = placebo_region(region, rng)
        if twin is None:
            missing[f"{kind}/placebo"] = (
                "no room for a random region of the same size that does not overlap"
            )
        else:
            found[f"{kind}/placebo"] = (twin, None)
    return Regions(found, missing)


def _face_regions(sample: Sample, image: ReadImage) -> tuple[Region, np.ndarray] | str:
    """(hair region, face mask to keep), or why hair_crop does not apply to this image."""
    size = image.pixels.shape[:2]
    if sample.face_box is not None:
        box = scale_box(sample.face_box, image.original_size, (size[0], size[1]))
    else:
        detected = detect_face(image.pixels)
        if detected is None:
            return "not applicable: no face geometry in labels.csv and no face detected"
        box = detected
    masks = face_masks(box, (size[0], size[1]))
    if masks is None:
        return "not applicable: the face box leaves no head area inside the image"
    hair, face = masks
    return hair, face.mask


def _record(
    sample: Sample,
    edit: Edit,
    before: np.ndarray,
    after: np.ndarray,
    classes: Sequence[str],
    method: str,
    shape: tuple[int, int],
) -> Record:
    orig, new = int(before.argmax()), int(after.argmax())
    label_index = classes.index(sample.label)
    box = edit.region.box if edit.region is not None else None
    return Record(
        image_id=sample.id,
        label=sample.label,
        groups=sample.groups,
        probe=edit.probe.name,
        region_source=edit.source,
        method=_method_of(edit.probe, method),
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
    )
