"""The default executor: every batch in this process, one after another, on the planner's
model (loaded once, shared with the planner's cost measurement)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Generic

from auditor.executors import Result, Step
from auditor.plan import PlannedBatch


class LocalExecutor(Generic[Result]):
    def __init__(self, step: Step[Result]) -> None:
        self._step = step

    def run(self, plan: object, batches: Sequence[PlannedBatch]) -> Iterator[Result]:
        if plan is not self._step.plan:
            raise ValueError("the local executor runs the plan its step was made for")
        for batch in batches:
            yield self._step(batch)
