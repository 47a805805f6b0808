"""The hypothesis's batch step: the audit's read → predict → attribute → place → edit → re-score,
with the spec's filter after the prediction and its two edits in place of the probes.

A step keeps no state between batches and seeds every random control by (spec seed, image id),
so a batch's trials are the same whatever ran before; the run store writes them under the
batch's id, and a resumed run combines to the same verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from auditor.attribution import AttributionOptions, make_attributor
from auditor.data import Sample
from auditor.gallery import png_base64, thumbnail
from auditor.hypothesis.files import OUTCOME_CELLS
from auditor.hypothesis.plan import HypothesisPlan
from auditor.hypothesis.spec import SuccessSpec
from auditor.models import LoadedModel
from auditor.plan import PlannedBatch
from auditor.preprocess import to_tensor
from auditor.region_sources import ImageView, Placement, random_twin
from auditor.regions import Region
from auditor.rescore import score
from auditor.step import READER_THREADS, apply_edit, read_and_score
from probes.spec import make_probe

EXAMPLES_PER_OUTCOME = 2  # from each cell of the paired table, so failures are shown too
Item = TypeVar("Item")


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

    @property
    def cell(self) -> str:
        """The cell of the paired table the trial falls in (one of ``OUTCOME_CELLS``)."""
        assert self.hypothesis is not None and self.control is not None
        return outcome_cell(self.hypothesis.success, self.control.success)


@dataclass(frozen=True)
class TrialBatch:
    """What one batch adds: the trials of its selected images (in image-id order), the images
    it could not read, and thumbnails of its first trials in each cell of the paired table."""

    batch_id: str
    images: int
    trials: list[Trial]
    not_read: list[tuple[str, str]]  # (image id, reason)
    examples: list[dict[str, Any]]
    scored: int  # images the model gave a finite output
    model_failure: str | None  # the first reason it gave another image none


@dataclass(frozen=True)
class _Edited:
    """A selected image with both edits placed and made, to be re-scored."""

    view: ImageView
    probs: np.ndarray
    hypothesis: Region | None
    control: Region | None
    hypothesis_pixels: np.ndarray
    control_pixels: np.ndarray


class TrialStep:
    """Runs batches of one hypothesis plan; holds the model and attributors, opened once."""

    def __init__(self, plan: HypothesisPlan, model: LoadedModel | None = None) -> None:
        self.plan = plan
        self.model = model = model if model is not None else plan.options.open_model()
        options = AttributionOptions(seed=plan.spec.seed)
        self._attributors = {
            m: make_attributor(m, model, model.meta.target_layer, options) for m in plan.methods
        }
        spec = plan.spec
        self._probe = make_probe(spec.edit.probe)
        self._control_probe = (
            make_probe(spec.control.edit.probe) if spec.control.edit else self._probe
        )
        self._readers = ThreadPoolExecutor(max_workers=READER_THREADS)

    def close(self) -> None:
        self._readers.shutdown()

    def __call__(self, planned: PlannedBatch) -> TrialBatch:
        plan, model = self.plan, self.model
        batch_size = plan.options.batch_size
        scored = read_and_score(planned.samples, self._readers, model, batch_size)
        not_read = [(s.id, reason) for s, reason in scored.unreadable]
        keep = np.flatnonzero(plan.select([s.id for s in scored.samples], scored.probs))
        outputs = (len(scored.samples), scored.model_failure)
        if not len(keep):
            return TrialBatch(planned.batch_id, len(planned.samples), [], not_read, [], *outputs)
        pixels = scored.pixels[keep]
        probs = scored.probs[keep]
        targets = [int(p.argmax()) for p in probs]
        maps: dict[str, np.ndarray] = {}
        if self._attributors:
            tensor = to_tensor(pixels, model.meta, model.device)
            maps = {name: a(tensor, targets) for name, a in self._attributors.items()}
        views = [
            ImageView(scored.samples[k], scored.images[k], {m: v[i] for m, v in maps.items()})
            for i, k in enumerate(keep)
        ]
        edited, trials = self._edit(views, probs)
        trials += self._score(edited)
        order = {s.id: i for i, s in enumerate(planned.samples)}
        trials.sort(key=lambda t: order[t.image_id])
        examples = _examples(trials, edited)
        return TrialBatch(
            planned.batch_id, len(planned.samples), trials, not_read, examples, *outputs
        )

    def _edit(
        self, views: Sequence[ImageView], probs: np.ndarray
    ) -> tuple[list[_Edited], list[Trial]]:
        """Both edits of every image that can take them; a skipped trial for every other one."""
        plan = self.plan
        hypothesis_source, control_source = plan.hypothesis_source, plan.control_source
        edited: list[_Edited] = []
        skipped: list[Trial] = []
        for view, before in zip(views, probs, strict=True):
            hypothesis = hypothesis_source.place(view)
            control = (
                control_source.place(view)
                if control_source is not None
                else random_twin(hypothesis, seed=plan.spec.seed, image_id=view.sample.id)
            )
            if isinstance(hypothesis, str) or isinstance(control, str):
                reason = _why_not(hypothesis, control)
                skipped.append(_skipped(view.sample, before, reason))
                continue
            pixels = view.image.pixels
            edited.append(
                _Edited(
                    view,
                    before,
                    hypothesis[0],
                    control[0],
                    apply_edit(self._probe, pixels, *hypothesis),
                    apply_edit(self._control_probe, pixels, *control),
                )
            )
        return edited, skipped

    def _score(self, edited: Sequence[_Edited]) -> list[Trial]:
        """Re-score every edited image of the batch at once and judge each edit."""
        if not edited:
            return []
        rescored = score(
            self.model,
            np.stack([e.hypothesis_pixels for e in edited] + [e.control_pixels for e in edited]),
            self.plan.options.batch_size,
        )
        after, failures = rescored.probs, rescored.failures
        classes = self.model.meta.classes
        success = self.plan.spec.success
        trials = []
        for i, e in enumerate(edited):
            sample, before = e.view.sample, e.probs
            hypothesis_probs, control_probs = after[i], after[len(edited) + i]
            failure = failures[i] or failures[len(edited) + i]
            if failure is not None:
                which = "hypothesis" if failures[i] else "control"
                trials.append(_skipped(sample, before, f"{which} edit: {failure}"))
                continue
            label_index = classes.index(sample.label)
            trials.append(
                Trial(
                    sample.id,
                    sample.label,
                    sample.groups,
                    before.tolist(),
                    hypothesis=_outcome(
                        success, e.hypothesis, before, hypothesis_probs, label_index, classes
                    ),
                    control=_outcome(
                        success, e.control, before, control_probs, label_index, classes
                    ),
                )
            )
        return trials


def _why_not(hypothesis: Placement, control: Placement) -> str:
    """The skip reason, naming which of the two edits had no region."""
    if isinstance(hypothesis, str):
        return f"hypothesis region: {hypothesis}"
    return f"control region: {control}"


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


def outcome_cell(hypothesis: bool, control: bool) -> str:
    """The cell of the paired table a pair of outcomes falls in (one of ``OUTCOME_CELLS``)."""
    return OUTCOME_CELLS[2 * (not hypothesis) + (not control)]


def _skipped(sample: Sample, probs: np.ndarray, reason: str) -> Trial:
    return Trial(sample.id, sample.label, sample.groups, probs.tolist(), skip_reason=reason)


def first_per_cell(items: Sequence[Item], cell: Callable[[Item], str]) -> list[Item]:
    """The first ``EXAMPLES_PER_OUTCOME`` of ``items`` in each cell of the paired table, in the
    order given: showing only successes would make any edit look convincing. A batch keeps its
    first; the run keeps the first of those, batch by batch, which are the run's first."""
    count: dict[str, int] = {}
    kept = []
    for item in items:
        key = cell(item)
        if count.get(key, 0) < EXAMPLES_PER_OUTCOME:
            count[key] = count.get(key, 0) + 1
            kept.append(item)
    return kept


def _examples(trials: Sequence[Trial], edited: Sequence[_Edited]) -> list[dict[str, Any]]:
    """Thumbnails of the batch's first trials (in image-id order) from each cell."""
    images = {e.view.sample.id: e for e in edited}
    done = [t for t in trials if t.skip_reason is None]
    items = []
    for trial in first_per_cell(done, lambda t: t.cell):
        e = images[trial.image_id]
        assert trial.hypothesis is not None and trial.control is not None
        items.append(
            {
                "image_id": trial.image_id,
                "label": trial.label,
                "groups": trial.groups,
                "outcome": trial.cell,
                "orig_probs": trial.orig_probs,
                "hypothesis_probs": trial.hypothesis.probs,
                "control_probs": trial.control.probs,
                "original": png_base64(thumbnail(e.view.image.pixels)),
                "hypothesis": png_base64(thumbnail(e.hypothesis_pixels)),
                "control": png_base64(thumbnail(e.control_pixels)),
            }
        )
    return items
