"""Run a hypothesis spec: score every image, select, place both edits, re-score, judge, write.

The stages are the audit's own (:mod:`auditor.pipeline` wires them the same way): images are
read and resized once per pass, predicted in batches, attributed for the predicted class, and
every random control region is seeded by (spec seed, image id), so an image's result does not
depend on the batch it falls in or on the other images selected.

Images are read twice, once to predict all of them (the filter may use the prediction) and once
for the selected ones, so that memory stays one batch of images whatever the dataset's size.
"""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor import __version__
from auditor.attribution import AttributionOptions, Attributor, default_method, make_attributor
from auditor.data import BOX_SUFFIX, Dataset, Sample, load_dataset
from auditor.errors import ConfigError
from auditor.faces import image_geometry
from auditor.gallery import png_base64, thumbnail
from auditor.hypothesis.files import EXAMPLES_FILE, HYPOTHESIS_FILE, OUTCOME_CELLS, TRIALS_FILE
from auditor.hypothesis.spec import EditSpec, HypothesisSpec, RegionSpec, SuccessSpec
from auditor.hypothesis.verdict import Verdict, decide
from auditor.hypothesis.where import typed
from auditor.localisation import box_mask, named_regions
from auditor.models import LoadedModel, open_model
from auditor.preprocess import ImageReadError, ReadImage, read_image, to_tensor
from auditor.records import GROUP_PREFIX
from auditor.regions import Region, placebo_region, propose_region, scale_box
from auditor.rescore import predict
from auditor.summary import (
    MAX_LISTED_SKIPS,
    dataset_identity,
    model_identity,
    package_versions,
    sha256_of,
)
from probes import PROBES, Probe

SCHEMA_VERSION = 1
EXAMPLES_PER_OUTCOME = 2  # from each cell of the paired table, so failures are shown too
ARMS = ("hypothesis", "control")  # column prefixes of trials.parquet
_BOX_KEYS = ("x0", "y0", "x1", "y1")
FACE_PARTS = ("eyes", "nose", "mouth", "rest_of_face")
PRED = "pred"  # the filter's name for the model's prediction; p_<class> for its probabilities

# (edit region or None for the whole image, pixels an inpainting edit must not touch) or why not
Placement = tuple[Region | None, np.ndarray | None] | str


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


@dataclass(frozen=True)
class Outcome:
    """One edit of one image: its region (box in model-input pixels; None for the whole
    image), the class probabilities after it, and whether it met the success criterion."""

    box: tuple[int, int, int, int] | None
    area: float  # fraction of the image
    probs: list[float]
    success: bool


@dataclass(frozen=True)
class Trial:
    """One selected image: both outcomes, or the reason it could not take both edits."""

    image_id: str
    label: str
    groups: dict[str, str]
    orig_probs: list[float]
    hypothesis: Outcome | None = None
    control: Outcome | None = None
    skip_reason: str | None = None


@dataclass(frozen=True)
class HypothesisResult:
    out_dir: Path
    verdict: Verdict
    expectation_met: bool | None  # None when the spec states no expectation


@dataclass(frozen=True)
class _Image:
    """A selected image as the edits see it: resized pixels, its maps, its prediction."""

    sample: Sample
    read: ReadImage
    maps: dict[str, np.ndarray]  # attribution method → map [H, W]
    probs: np.ndarray


def run_hypothesis(spec: HypothesisSpec, options: RunOptions) -> HypothesisResult:
    """Run ``spec`` on the model and dataset of ``options``; write the outputs to its out_dir.

    Raises:
        AuditorError: (and subclasses) for an unusable model, dataset, or a spec that does not
            fit them (an unknown class, box column or filter column).
    """
    started = time.time()
    model = open_model(
        options.model_path,
        model_config=options.model_config,
        meta_overrides=options.meta_overrides,
        trust_model=options.trust_model,
        device=options.device,
    )
    meta = model.meta
    spec = _resolve_methods(spec, model)
    _check_classes(spec.success, meta.classes)
    dataset = load_dataset(options.dataset_dir, meta.classes, label_column=options.label_column)
    labels = _labels_table(dataset)
    _check_box_columns(spec, list(labels.columns))
    scores, unreadable = _score(dataset.samples, model, options.batch_size)
    selected = _select(spec, dataset.samples, scores, labels, meta.classes)
    trials, examples = _run_trials(spec, selected, scores, model, options.batch_size)
    done = [t for t in trials if t.skip_reason is None]
    verdict = decide(
        [bool(t.hypothesis and t.hypothesis.success) for t in done],
        [bool(t.control and t.control.success) for t in done],
        spec.alpha,
    )
    met = None if spec.expect is None else verdict.verdict == spec.expect
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    _trials_frame(trials, meta.classes, dataset.group_columns).to_parquet(
        out / TRIALS_FILE, index=False
    )
    (out / EXAMPLES_FILE).write_text(json.dumps(examples, indent=1) + "\n", encoding="utf-8")
    document = _document(
        spec, options, model, dataset, unreadable, trials, verdict, met, time.time() - started
    )
    (out / HYPOTHESIS_FILE).write_text(
        json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return HypothesisResult(out, verdict, met)


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


def _chunks(items: Sequence[Sample], size: int) -> Iterator[Sequence[Sample]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read(sample: Sample, model: LoadedModel) -> ReadImage | str:
    try:
        return read_image(sample.path, model.meta.input_size)
    except ImageReadError as exc:
        return str(exc)


def _score(
    samples: Sequence[Sample], model: LoadedModel, batch_size: int
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Class probabilities of every readable image, and the reason for each unreadable one."""
    scores: dict[str, np.ndarray] = {}
    unreadable: dict[str, str] = {}
    for chunk in _chunks(samples, batch_size):
        images: list[tuple[Sample, ReadImage]] = []
        for sample in chunk:
            image = _read(sample, model)
            if isinstance(image, str):
                unreadable[sample.id] = image
            else:
                images.append((sample, image))
        if images:
            probs = predict(model, np.stack([i.pixels for _, i in images]), batch_size)
            scores.update((s.id, p) for (s, _), p in zip(images, probs, strict=True))
    return scores, unreadable


def _select(
    spec: HypothesisSpec,
    samples: Sequence[Sample],
    scores: dict[str, np.ndarray],
    labels: pd.DataFrame,
    classes: Sequence[str],
) -> list[Sample]:
    """The readable samples that match ``[images] where``, in dataset order."""
    scored = [s for s in samples if s.id in scores]
    if spec.where is None:
        return scored
    table = labels.loc[[s.id for s in scored]]
    probs = np.stack([scores[s.id] for s in scored]) if scored else np.zeros((0, len(classes)))
    computed: dict[str, Any] = {PRED: [classes[int(i)] for i in probs.argmax(axis=1)]}
    computed.update({f"p_{c}": probs[:, k] for k, c in enumerate(classes)})
    clash = sorted(set(computed) & set(table.columns))
    if clash:
        raise ConfigError(
            f"labels.csv has column(s) {', '.join(clash)}, which [images] where reserves for "
            "the model's prediction and probabilities; rename them"
        )
    table = table.assign(**computed)
    return [s for s, keep in zip(scored, spec.where.select(table), strict=True) if keep]


def _run_trials(
    spec: HypothesisSpec,
    selected: Sequence[Sample],
    scores: dict[str, np.ndarray],
    model: LoadedModel,
    batch_size: int,
) -> tuple[list[Trial], list[dict[str, Any]]]:
    """Every selected image's trial, and thumbnails of a few from each outcome."""
    edits = [spec.edit, *([spec.control.edit] if spec.control.edit else [])]
    methods = {e.region.method for e in edits if e.region.method is not None}
    options = AttributionOptions(seed=spec.seed)
    attributors = {
        m: make_attributor(m, model, model.meta.target_layer, options) for m in sorted(methods)
    }
    trials: list[Trial] = []
    examples = _Examples(model.meta.classes)
    for chunk in _chunks(selected, batch_size):
        images, unreadable = _prepare(chunk, scores, model, attributors)
        trials.extend(unreadable)
        trials.extend(_edit_and_score(spec, images, model, batch_size, examples))
    order = {s.id: i for i, s in enumerate(selected)}  # dataset order, whatever the batches
    return sorted(trials, key=lambda t: order[t.image_id]), examples.items


def _prepare(
    chunk: Sequence[Sample],
    scores: dict[str, np.ndarray],
    model: LoadedModel,
    attributors: dict[str, Attributor],
) -> tuple[list[_Image], list[Trial]]:
    """Re-read a chunk of selected images and map each for its predicted class."""
    read: list[tuple[Sample, ReadImage]] = []
    failed: list[Trial] = []
    for sample in chunk:
        image = _read(sample, model)
        if isinstance(image, str):  # readable when scored, gone since
            failed.append(_skipped(sample, scores[sample.id], image))
        else:
            read.append((sample, image))
    if not read:
        return [], failed
    pixels = np.stack([image.pixels for _, image in read])
    targets = [int(scores[s.id].argmax()) for s, _ in read]
    maps = {
        name: attributor(to_tensor(pixels, model.meta, model.device), targets)
        for name, attributor in attributors.items()
    }
    images = [
        _Image(sample, image, {m: values[i] for m, values in maps.items()}, scores[sample.id])
        for i, (sample, image) in enumerate(read)
    ]
    return images, failed


def _edit_and_score(
    spec: HypothesisSpec,
    images: Sequence[_Image],
    model: LoadedModel,
    batch_size: int,
    examples: _Examples,
) -> list[Trial]:
    """Make both edits on each image, re-score all edited images of the chunk in one batch."""
    edited, trials = _edit(spec, images)
    if not edited:
        return trials
    after = predict(
        model,
        np.stack([e.hypothesis_pixels for e in edited] + [e.control_pixels for e in edited]),
        batch_size,
    )
    classes = model.meta.classes
    for e, hypothesis_probs, control_probs in zip(
        edited, after[: len(edited)], after[len(edited) :], strict=True
    ):
        sample, before = e.image.sample, e.image.probs
        label_index = classes.index(sample.label)
        trial = Trial(
            sample.id,
            sample.label,
            sample.groups,
            before.tolist(),
            hypothesis=_outcome(
                spec.success, e.hypothesis, before, hypothesis_probs, label_index, classes
            ),
            control=_outcome(spec.success, e.control, before, control_probs, label_index, classes),
        )
        trials.append(trial)
        examples.offer(trial, e.image.read.pixels, e.hypothesis_pixels, e.control_pixels)
    return trials


@dataclass(frozen=True)
class _Edited:
    """An image with both edits made (regions None for a whole-image edit), to be re-scored."""

    image: _Image
    hypothesis: Region | None
    control: Region | None
    hypothesis_pixels: np.ndarray
    control_pixels: np.ndarray


def _edit(spec: HypothesisSpec, images: Sequence[_Image]) -> tuple[list[_Edited], list[Trial]]:
    """Both edits of every image that can take them; a skipped trial for every other one."""
    probe = PROBES[spec.edit.probe]()
    control_probe = PROBES[spec.control.edit.probe]() if spec.control.edit else probe
    edited: list[_Edited] = []
    skipped: list[Trial] = []
    for image in images:
        hypothesis = _place(spec.edit.region, image)
        control = _place_control(spec, image, hypothesis)
        if isinstance(hypothesis, str) or isinstance(control, str):
            reason = _why_not(hypothesis, control)
            skipped.append(_skipped(image.sample, image.probs, reason))
            continue
        edited.append(
            _Edited(
                image,
                hypothesis[0],
                control[0],
                _apply(probe, image.read.pixels, hypothesis),
                _apply(control_probe, image.read.pixels, control),
            )
        )
    return edited, skipped


def _why_not(hypothesis: Placement, control: Placement) -> str:
    """The skip reason, naming which of the two edits had no region."""
    if isinstance(hypothesis, str):
        return f"hypothesis region: {hypothesis}"
    return f"control region: {control}"


def _apply(
    probe: Probe, pixels: np.ndarray, placement: tuple[Region | None, np.ndarray | None]
) -> np.ndarray:
    region, keep = placement
    mask = None if region is None else region.mask
    edited: np.ndarray = probe(image=pixels, region=mask, keep=keep)["image"]
    return edited


def _place(region: RegionSpec, image: _Image) -> Placement:
    """The region ``region`` describes on this image, or why it has none."""
    shape = (int(image.read.pixels.shape[0]), int(image.read.pixels.shape[1]))
    if region.kind == "whole_image":
        return (None, None)
    if region.kind == "attribution":
        assert region.method is not None, "run_hypothesis names the default method"
        found = propose_region(image.maps[region.method], region.area)
        return (found, None) if found else "attribution map is flat: no region stands out"
    if region.kind == "face_region":
        return _face_region(region, image, shape)
    if region.kind == "box_column":
        assert region.column is not None, "the spec requires a column"
        box = image.sample.boxes.get(region.column.removesuffix(BOX_SUFFIX))
        if box is None:
            return f"no usable {region.column} in labels.csv for this image"
        mask = box_mask(scale_box(box, image.read.original_size, shape), shape)
        return (Region(mask), None) if mask.any() else f"the {region.column} box is empty"
    assert region.box is not None, "the spec requires a box"
    x0, y0, x1, y1 = region.box
    height, width = shape
    mask = box_mask((x0 * width, y0 * height, x1 * width, y1 * height), shape)
    return (Region(mask), None) if mask.any() else "the box covers no pixel at this input size"


def _face_region(region: RegionSpec, image: _Image, shape: tuple[int, int]) -> Placement:
    """A named face region; the rest of the face is kept out of inpainting edits."""
    # Only the face: labels.csv boxes are box_column's, and must not stand in for face parts.
    geometry = dataclasses.replace(image_geometry(image.sample, image.read), boxes={})
    regions = named_regions(geometry, shape)
    assert region.name is not None, "the spec requires a name"
    if region.name not in regions:
        return "no face geometry in labels.csv and no face detected"
    mask = regions[region.name]
    if not mask.any():
        return f"the {region.name} region lies outside the image"
    face = np.logical_or.reduce([regions[p] for p in FACE_PARTS]) & ~mask
    return (Region(mask), face if face.any() else None)


def _place_control(spec: HypothesisSpec, image: _Image, hypothesis: Placement) -> Placement:
    """The control's region: the spec control's own, or the hypothesis region moved at random.

    The random move is seeded by (spec seed, image id) alone, as the audit's placebos are, so
    adding images or changing the batch size moves no other image's control. As there, the
    moved region keeps no pixels back: it is the same edit, somewhere else.
    """
    if spec.control.edit is not None:
        return _place(spec.control.edit.region, image)
    if isinstance(hypothesis, str):
        return "no hypothesis region to move"
    assert hypothesis[0] is not None, "a random-region control needs a region (spec checks)"
    rng = np.random.default_rng([spec.seed, zlib.crc32(image.sample.id.encode())])
    moved = placebo_region(hypothesis[0], rng)
    if moved is None:
        return "no room for a random region of the same shape that does not overlap"
    return (moved, None)


def _outcome(
    success: SuccessSpec,
    region: Region | None,
    before: np.ndarray,
    after: np.ndarray,
    label_index: int,
    classes: Sequence[str],
) -> Outcome:
    return Outcome(
        box=region.box if region is not None else None,
        area=region.area / region.mask.size if region is not None else 1.0,
        probs=after.tolist(),
        success=succeeded(success, before, after, label_index, classes),
    )


def succeeded(
    success: SuccessSpec,
    before: np.ndarray,
    after: np.ndarray,
    label_index: int,
    classes: Sequence[str],
) -> bool:
    """Whether an edit that turned probabilities ``before`` into ``after`` met ``success``."""
    if success.kind == "becomes_label":
        return int(after.argmax()) == label_index
    if success.kind == "probability_drop":
        assert success.class_name is not None and success.at_least is not None
        k = classes.index(success.class_name)
        return bool(before[k] - after[k] >= success.at_least)
    return int(after.argmax()) != int(before.argmax())


def _skipped(sample: Sample, probs: np.ndarray, reason: str) -> Trial:
    return Trial(sample.id, sample.label, sample.groups, probs.tolist(), skip_reason=reason)


class _Examples:
    """Thumbnails of the first few trials from each cell of the paired table, in dataset
    order: showing only successes would make any edit look convincing."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.items: list[dict[str, Any]] = []
        self._count: dict[str, int] = {}

    def offer(
        self, trial: Trial, original: np.ndarray, hypothesis: np.ndarray, control: np.ndarray
    ) -> None:
        assert trial.hypothesis is not None and trial.control is not None
        cell = outcome_cell(trial.hypothesis.success, trial.control.success)
        if self._count.get(cell, 0) >= EXAMPLES_PER_OUTCOME:
            return
        self._count[cell] = self._count.get(cell, 0) + 1
        self.items.append(
            {
                "image_id": trial.image_id,
                "label": trial.label,
                "groups": trial.groups,
                "outcome": cell,
                "orig_probs": trial.orig_probs,
                "hypothesis_probs": trial.hypothesis.probs,
                "control_probs": trial.control.probs,
                "original": png_base64(thumbnail(original)),
                "hypothesis": png_base64(thumbnail(hypothesis)),
                "control": png_base64(thumbnail(control)),
            }
        )


def outcome_cell(hypothesis: bool, control: bool) -> str:
    """The cell of the paired table a trial falls in (one of ``OUTCOME_CELLS``)."""
    return OUTCOME_CELLS[2 * (not hypothesis) + (not control)]


def _trials_frame(
    trials: Sequence[Trial], classes: Sequence[str], group_columns: Sequence[str]
) -> pd.DataFrame:
    """trials.parquet: one row per selected image, outcomes empty where it was skipped."""
    rows = []
    for t in trials:
        row: dict[str, Any] = {
            "image_id": t.image_id,
            "label": t.label,
            **{GROUP_PREFIX + c: t.groups.get(c) for c in group_columns},
            "orig_pred": classes[int(np.argmax(t.orig_probs))],
            **{f"orig_p_{c}": p for c, p in zip(classes, t.orig_probs, strict=True)},
            "skip_reason": t.skip_reason,
        }
        for arm, outcome in zip(ARMS, (t.hypothesis, t.control), strict=True):
            row.update(_outcome_columns(arm, outcome, classes))
        rows.append(row)
    columns = [
        "image_id", "label", *(GROUP_PREFIX + c for c in group_columns), "orig_pred",
        *(f"orig_p_{c}" for c in classes), "skip_reason",
        *(name for arm in ARMS for name in _outcome_columns(arm, None, classes)),
    ]  # fmt: skip
    types = {f"{arm}_{k}": "Int64" for arm in ARMS for k in _BOX_KEYS}
    types.update({f"{arm}_success": "boolean" for arm in ARMS})  # empty where skipped
    return pd.DataFrame(rows, columns=columns).astype(types)


def _outcome_columns(arm: str, outcome: Outcome | None, classes: Sequence[str]) -> dict[str, Any]:
    box = outcome.box if outcome is not None and outcome.box is not None else (None,) * 4
    probs = outcome.probs if outcome is not None else [None] * len(classes)
    return {
        **{f"{arm}_{k}": v for k, v in zip(_BOX_KEYS, box, strict=True)},
        f"{arm}_area": outcome.area if outcome else None,
        f"{arm}_pred": classes[int(np.argmax(outcome.probs))] if outcome else None,
        **{f"{arm}_p_{c}": p for c, p in zip(classes, probs, strict=True)},
        f"{arm}_success": outcome.success if outcome else None,
    }


def _document(
    spec: HypothesisSpec,
    options: RunOptions,
    model: LoadedModel,
    dataset: Dataset,
    unreadable: dict[str, str],
    trials: Sequence[Trial],
    verdict: Verdict,
    expectation_met: bool | None,
    seconds: float,
) -> dict[str, Any]:
    """hypothesis.json: the spec, the verdict, every figure, and what reproduces them."""
    skipped = [t for t in trials if t.skip_reason]
    not_read = [{"image_id": s.id, "reason": s.reason} for s in dataset.skips] + [
        {"image_id": i, "reason": r} for i, r in unreadable.items()
    ]
    spec_json = spec.to_json()
    spec_json["sha256"] = sha256_of(spec.path)
    if spec.control.path is not None:
        spec_json["control"]["sha256"] = sha256_of(spec.control.path)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "auditor", "version": __version__},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "spec": spec_json,
        "described": {
            "hypothesis_edit": spec.edit.describe(),
            "control_edit": spec.control.describe(),
            "success": spec.success.describe(dataset.label_column),
        },
        "model": model_identity(
            options.model_path, None, model.kind, model.single_logit, model.meta
        ),
        "dataset": {
            **dataset_identity(dataset),
            "images_scored": len(dataset.samples) - len(unreadable),
            "not_read": not_read[:MAX_LISTED_SKIPS],
            "not_read_count": len(not_read),
        },
        "selection": {
            "selected": len(trials),
            "trials": verdict.trials,
            "skipped": len(skipped),
            "skips_by_reason": _count_reasons(skipped),
            "skipped_images": [
                {"image_id": t.image_id, "reason": t.skip_reason}
                for t in skipped[:MAX_LISTED_SKIPS]
            ],
        },
        "verdict": dataclasses.asdict(verdict),
        "expect": spec.expect,
        "expectation_met": expectation_met,
        "versions": package_versions(),
    }


def _count_reasons(skipped: Sequence[Trial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in skipped:
        assert trial.skip_reason is not None
        counts[trial.skip_reason] = counts.get(trial.skip_reason, 0) + 1
    return dict(sorted(counts.items()))
