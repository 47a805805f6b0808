"""The default executor: every batch in this process, one after another, on the planner's
model (loaded once, shared with the planner's cost measurement)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from auditor.plan import PlannedBatch, RunPlan
from auditor.step import BatchResult, BatchStep


class LocalExecutor:
    def __init__(self, step: BatchStep) -> None:
        self._step = step

    def run(self, plan: RunPlan, batches: Sequence[PlannedBatch]) -> Iterator[BatchResult]:
        if plan is not self._step.plan:
            raise ValueError("the local executor runs the plan its step was made for")
        for batch in batches:
            yield self._step(batch)
