"""The default executor: every batch in this process, one after another, on the planner's
model (loaded once, shared with the planner's cost measurement). It runs any step: an audit's
:class:`auditor.step.BatchStep` or a hypothesis's :class:`auditor.hypothesis.step.TrialStep`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from auditor.plan import PlannedBatch

Result = TypeVar("Result", covariant=True)


class Step(Protocol[Result]):
    """A batch step: made for one plan, it turns a batch of that plan into a result."""

    @property
    def plan(self) -> object: ...

    def __call__(self, batch: PlannedBatch, /) -> Result: ...


class LocalExecutor(Generic[Result]):
    def __init__(self, step: Step[Result]) -> None:
        self._step: Callable[[PlannedBatch], Result] = step
        self._plan = step.plan

    def run(self, plan: object, batches: Sequence[PlannedBatch]) -> Iterator[Result]:
        if plan is not self._plan:
            raise ValueError("the local executor runs the plan its step was made for")
        for batch in batches:
            yield self._step(batch)
