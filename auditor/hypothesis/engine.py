"""Run a hypothesis spec through the audit's plan, step and store; judge it; write the results.

A spec is a plan (:mod:`auditor.hypothesis.plan`: the audit's batches with a filter, two region
sources and a success rule), its batches run through :class:`auditor.hypothesis.step.TrialStep`
(the audit's read, predict, attribute, place and re-score), and each batch's trials are stored
as a part of a :class:`auditor.store.RunStore`, so a killed run resumes where it stopped. The
parts combine, in batch-id order, into ``trials.parquet`` and ``examples.json``; the verdict is
computed from the combined trials, and ``hypothesis.json`` is written before the manifest seals
the run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor import __version__
from auditor.data import load_dataset
from auditor.executors import Execution, make_executor
from auditor.hypothesis.document import read_hypothesis
from auditor.hypothesis.files import (
    EXAMPLES_FILE,
    HYPOTHESIS_ENTRIES,
    HYPOTHESIS_FILE,
    SCHEMA_VERSION,
    TRIALS_FILE,
)
from auditor.hypothesis.plan import (
    HypothesisPlan,
    RunOptions,
    make_hypothesis_plan,
    spec_sha256,
)
from auditor.hypothesis.spec import HypothesisSpec
from auditor.hypothesis.step import Outcome, Trial, TrialBatch, TrialStep, first_per_cell
from auditor.hypothesis.verdict import Verdict, decide
from auditor.records import GROUP_PREFIX
from auditor.rescore import check_first_scores
from auditor.run_summary import decode
from auditor.store import PLAN_FILE, RunStore, write_atomically
from auditor.summary import MAX_LISTED_SKIPS, package_versions

ARMS = ("hypothesis", "control")  # column prefixes of trials.parquet
_BOX_KEYS = ("x0", "y0", "x1", "y1")
_PART_TRIALS, _PART_EXAMPLES = "trials.json", "examples.json"


@dataclass(frozen=True)
class HypothesisResult:
    out_dir: Path
    verdict: str  # "supported", "not supported" or "insufficient data"
    expectation_met: bool | None  # None when the spec states no expectation


def run_hypothesis(
    spec: HypothesisSpec, options: RunOptions, execution: Execution | None = None
) -> HypothesisResult:
    """Run ``spec`` on the model and dataset of ``options``; write the outputs to its out_dir.

    ``execution`` says where the batches run (local by default, or Ray) and whether to resume
    an interrupted run in out_dir (its plan must match) or overwrite the run there; without
    either, a directory that holds a run is refused.

    Raises:
        AuditorError: (and subclasses) for an unusable model, dataset, or a spec that does not
            fit them (an unknown class, box column or filter column); ``RunDirError`` for a
            run directory that holds another run or is in use.
    """
    started = time.time()
    execution = execution or Execution()
    model = options.open_model()
    dataset = load_dataset(
        options.dataset_dir, model.meta.classes, label_column=options.label_column
    )
    plan = make_hypothesis_plan(spec, options, model, dataset)
    step = TrialStep(plan, model)
    executor = make_executor(execution, step)
    store = RunStore(options.out_dir, entries=HYPOTHESIS_ENTRIES)
    with store.lock():
        if not store.prepare(
            plan.fingerprint(), resume=execution.resume, overwrite=execution.overwrite
        ):
            done = store.done()
            pending = [b for b in plan.batches if b.batch_id not in done]
            for number, result in enumerate(executor.run(plan, pending)):
                if not done and not number:  # a model that gives nothing stops here
                    check_first_scores(result.scored, result.model_failure)
                _write(store, result)
            _finish(plan, store, seconds_before=time.time() - started)
    step.close()
    document = read_hypothesis(options.out_dir)
    return HypothesisResult(options.out_dir, document.verdict.verdict, document.expectation_met)


def _write(store: RunStore, result: TrialBatch) -> None:
    trials = [dataclasses.asdict(t) for t in result.trials]
    store.write_part(
        result.batch_id,
        result.images,
        {
            _PART_TRIALS: lambda p: p.write_text(json.dumps(trials), encoding="utf-8"),
            _PART_EXAMPLES: lambda p: p.write_text(json.dumps(result.examples), encoding="utf-8"),
        },
        {"not_read": [list(pair) for pair in result.not_read]},
    )


def _finish(plan: HypothesisPlan, store: RunStore, seconds_before: float) -> None:
    """Combine the parts, judge the trials, write the final files and seal the run."""
    started = time.time()
    trials: list[Trial] = []
    examples: list[dict[str, Any]] = []
    not_read: list[tuple[str, str]] = []
    for part in store.parts([b.batch_id for b in plan.batches]):
        stored = json.loads((part.folder / _PART_TRIALS).read_text(encoding="utf-8"))
        trials += [decode(Trial, t) for t in stored]
        examples += json.loads((part.folder / _PART_EXAMPLES).read_text(encoding="utf-8"))
        not_read += [(image_id, reason) for image_id, reason in part.extra["not_read"]]
    done = [t for t in trials if t.skip_reason is None]
    verdict = decide(
        [bool(t.hypothesis and t.hypothesis.success) for t in done],
        [bool(t.control and t.control.success) for t in done],
        plan.spec.alpha,
    )
    out = store.run_dir
    frame = _trials_frame(trials, plan.meta.classes, plan.group_columns)
    write_atomically(out / TRIALS_FILE, lambda p: frame.to_parquet(p, index=False))
    shown = first_per_cell(examples, lambda e: str(e["outcome"]))
    write_atomically(
        out / EXAMPLES_FILE, lambda p: p.write_text(json.dumps(shown, indent=1) + "\n", "utf-8")
    )
    document = _document(plan, not_read, trials, verdict, seconds_before + time.time() - started)
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    write_atomically(out / HYPOTHESIS_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    store.finish([PLAN_FILE, TRIALS_FILE, EXAMPLES_FILE, HYPOTHESIS_FILE])


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
    plan: HypothesisPlan,
    unreadable: Sequence[tuple[str, str]],
    trials: Sequence[Trial],
    verdict: Verdict,
    seconds: float,
) -> dict[str, Any]:
    """hypothesis.json: the spec, the verdict, every figure, and what reproduces them."""
    spec = plan.spec
    skipped = [t for t in trials if t.skip_reason]
    not_read = [{"image_id": s.id, "reason": s.reason} for s in plan.skips] + [
        {"image_id": i, "reason": r} for i, r in unreadable
    ]
    spec_json = spec.to_json()
    spec_json["sha256"], control_sha256 = spec_sha256(spec)
    if control_sha256 is not None:
        spec_json["control"]["sha256"] = control_sha256
    expectation_met = None if spec.expect is None else verdict.verdict == spec.expect
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "auditor", "version": __version__},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "spec": spec_json,
        "described": {
            "hypothesis_edit": spec.edit.describe(),
            "control_edit": spec.control.describe(),
            "success": spec.success.describe(plan.options.label_column),
        },
        "model": plan.model,
        "dataset": {
            **plan.dataset,
            "images_scored": plan.images - len(unreadable),
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
