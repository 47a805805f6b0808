"""The one place where the stages meet: load → plan → batch steps (on an executor) → run store
→ combine → statistics → summary. Each stage lives in its own module and knows nothing of the
others; this module only passes their outputs along.

After the statistics, cue discovery (:mod:`auditor.cues`, unless ``config.cues`` is off)
re-reads the images it needs and uses the model once more: it clusters the misclassified
images' attribution regions into candidate cues and tests each one's reliance.

The run directory is written through :class:`auditor.store.RunStore`: each batch's result is
stored as it arrives, so a killed run keeps every finished batch and ``resume=True`` audits only
the rest; the final files are combined from the parts in batch-id order, so the figures are the
same whatever the executor, the order of the batches, or the number of restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor import cost
from auditor.config import AuditConfig
from auditor.cues import RECORD_COLUMNS, CueOptions, discover_cues
from auditor.cues_store import CUES_FILE, CUES_SUMMARY_FILE
from auditor.data import load_dataset
from auditor.errors import ConfigError
from auditor.executors import Execution, make_executor
from auditor.maps import summarise_maps
from auditor.plan import RunPlan, make_plan
from auditor.records import MEASURES_FILE, RESULTS_FILE, Record
from auditor.rescore import check_first_scores
from auditor.stats import STATISTICS_COLUMNS, compute_statistics
from auditor.step import BatchStep, make_probes, open_plan_model
from auditor.store import (
    GALLERY_FILE,
    MEAN_MAPS_FILE,
    PLAN_FILE,
    RUN_ENTRIES,
    SUMMARY_FILE,
    RunStore,
)
from auditor.summary import write_summary

PlanFn = Callable[[cost.CostEstimate], None]


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: batches and images stored (earlier attempts' included), and this
    attempt's speed."""

    batches_done: int
    batches: int
    images_done: int
    images: int
    images_per_second: float


ProgressFn = Callable[[RunProgress], None]


def run_audit(
    config: AuditConfig,
    progress: ProgressFn | None = None,
    plan: PlanFn | None = None,
    execution: Execution | None = None,
) -> Path:
    """Audit ``config.model_path`` on ``config.dataset_dir``; return the run directory.

    Raises:
        AuditorError: (and subclasses) for unusable model, metadata or dataset, and
            ``RunDirError`` for a run directory that holds another run or is in use.
    """
    started = time.time()
    execution = execution or Execution()
    model = open_plan_model(config)
    meta = model.meta
    dataset = load_dataset(
        config.dataset_dir,
        meta.classes,
        label_column=config.label_column,
        group_columns=config.group_columns,
        adjust_for=config.adjust_for,
    )
    if config.target not in ("predicted", "true", *meta.classes):
        raise ConfigError(
            f"--target must be 'predicted', 'true' or a class ({', '.join(meta.classes)}), "
            f"got '{config.target}'"
        )
    choice = cost.choose_methods(model, make_probes(config), len(dataset.samples), config)
    run_plan = make_plan(
        config,
        meta=meta,
        model_kind=model.kind,
        single_logit=model.single_logit,
        dataset=dataset,
        methods=choice.methods,
        options=choice.options,
        default_note=choice.note,
    )
    step = BatchStep(run_plan, model)
    executor = make_executor(execution, step)
    store = RunStore(
        config.out_dir,
        dataset.group_columns,
        # The cue files are the run's too: --overwrite removes them, whether or not it makes new.
        entries=(*RUN_ENTRIES, CUES_FILE, CUES_SUMMARY_FILE),
        covariate_columns=dataset.covariate_columns,
    )
    with store.lock():
        finished = store.prepare(
            run_plan.fingerprint(), resume=execution.resume, overwrite=execution.overwrite
        )
        if finished:
            return config.out_dir
        done = store.done()
        pending = [b for b in run_plan.batches if b.batch_id not in done]
        if plan:
            speeds = cost.measure_speeds(model, config.batch_size)
            images = sum(len(b.samples) for b in pending)
            plan(cost.estimate_cost(model, choice, step.probes, images, config, speeds))
        stored_images = sum(p.images for p in done.values())
        tracker = _Tracker(run_plan, done_images=stored_images, progress=progress)
        tracker.report(len(done))
        for number, result in enumerate(executor.run(run_plan, pending)):
            if not done and not number:  # a model that gives nothing stops here
                check_first_scores(result.scored, result.model_failure)
            store.write(result)
            tracker.add(result.images)
        step.close()
        _finish(run_plan, store, step, seconds_before=time.time() - started)
    return config.out_dir


def _finish(run_plan: RunPlan, store: RunStore, step: BatchStep, seconds_before: float) -> None:
    """Combine the parts, compute the statistics, write the summary and seal the run."""
    started = time.time()
    config = run_plan.config
    skips = [
        Record(s.id, s.label, s.groups, None, None, None, skip_reason=s.reason)
        for s in run_plan.skips
    ]
    mean_maps = store.combine([b.batch_id for b in run_plan.batches], skips, config.gallery_size)
    run_dir = store.run_dir
    records = store.records(STATISTICS_COLUMNS)
    statistics = compute_statistics(
        records,
        alpha=config.alpha,
        min_group_size=config.min_group_size,
        seed=config.seed,
        mcnemar=config.mcnemar,
        covers={p.name: p.cover for p in step.probes},
    )
    maps = summarise_maps(
        run_dir,
        mean_maps,
        store.measures(),
        group_columns=run_plan.group_columns,
        min_group_size=config.min_group_size,
        seed=config.seed,
    )
    cue_files = []
    if config.cues:
        samples = [s for batch in run_plan.batches for s in batch.samples]
        discover_cues(
            run_dir,
            store.records(RECORD_COLUMNS),
            samples,
            step.model,
            _cue_options(run_plan, step),
        )
        cue_files = [CUES_FILE, CUES_SUMMARY_FILE]
    write_summary(
        run_dir,
        plan=run_plan,
        attributors=list(step.attributors.values()),
        probes=step.probes,
        records=records,
        statistics=statistics,
        maps=maps,
        seconds=seconds_before + time.time() - started,
    )
    store.finish(
        [
            PLAN_FILE,
            RESULTS_FILE,
            MEASURES_FILE,
            GALLERY_FILE,
            MEAN_MAPS_FILE,
            SUMMARY_FILE,
            *cue_files,
        ]
    )


def _cue_options(run_plan: RunPlan, step: BatchStep) -> CueOptions:
    """Cue discovery's settings: the regions of the run's first method, where a probe edits
    attribution regions at all, and the run's seed, α and McNemar variant."""
    config = run_plan.config
    guided = any(p.region_from == "attribution" for p in step.probes)
    return CueOptions(
        method=run_plan.methods[0] if guided and run_plan.methods else None,
        seed=config.seed,
        alpha=config.alpha,
        mid_p=config.mcnemar == "mid-p",
        batch_size=config.batch_size,
        label_column=config.label_column,
        group_columns=run_plan.group_columns,
    )


class _Tracker:
    """Counts stored batches and images for the progress callback."""

    def __init__(self, run_plan: RunPlan, done_images: int, progress: ProgressFn | None) -> None:
        self._plan = run_plan
        self._progress = progress
        self._batches = 0
        self._images_before = done_images
        self._images_now = 0
        self._started = time.monotonic()

    def report(self, batches_done: int) -> None:
        self._batches = batches_done
        if self._progress:
            elapsed = max(time.monotonic() - self._started, 1e-9)
            self._progress(
                RunProgress(
                    batches_done=self._batches,
                    batches=len(self._plan.batches),
                    images_done=self._images_before + self._images_now,
                    images=self._plan.images,
                    images_per_second=self._images_now / elapsed,
                )
            )

    def add(self, images: int) -> None:
        self._images_now += images
        self.report(self._batches + 1)
