"""Executors run a plan's batches and hand back their results, in any order.

An executor is one file: a class with ``run(plan, batches) -> Iterator[Result]``. It runs any
:class:`Step`: an audit's :class:`auditor.step.BatchStep` or a hypothesis's
:class:`auditor.hypothesis.step.TrialStep`. The run store writes each result as it arrives and
combines them in batch-id order, so an executor may spread batches over threads, processes or
machines without changing a figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from auditor.errors import ConfigError

if TYPE_CHECKING:
    from auditor.plan import PlannedBatch

ENGINES = ("local", "ray")
Result = TypeVar("Result", covariant=True)


@dataclass(frozen=True)
class Execution:
    """How to run the batches: ``engine`` local or ray (``workers`` actors on the cluster at
    ``address``, a local one if None), and what to do with a run directory that is not empty."""

    engine: str = "local"
    workers: int | None = None
    address: str | None = None
    resume: bool = False
    overwrite: bool = False


class Step(Protocol[Result]):
    """A batch step: made for one plan, it turns a batch of that plan into a result.

    A step class is also how a remote executor makes its own steps: ``type(step)(plan)`` must
    open the plan's model by itself (each worker holds its own copy).
    """

    @property
    def plan(self) -> object: ...

    def __call__(self, batch: PlannedBatch, /) -> Result: ...

    def close(self) -> None: ...


class Executor(Protocol[Result]):
    def run(self, plan: object, batches: Sequence[PlannedBatch]) -> Iterator[Result]:
        """Run ``batches`` of ``plan``; yield each result as soon as it is done."""
        ...


def make_executor(execution: Execution, step: Step[Result]) -> Executor[Result]:
    """The executor for ``execution.engine``; ``step`` is the planner's own, which ``local``
    reuses and ``ray`` remakes in every actor from its class.

    Raises:
        ConfigError: an unknown engine, options the engine does not take, or ``ray`` without
            Ray installed.
    """
    if execution.engine == "local":
        if execution.address is not None or (execution.workers or 1) != 1:
            raise ConfigError("--workers and --ray-address need --engine ray")
        from auditor.executors.local import LocalExecutor

        return LocalExecutor(step)
    if execution.engine == "ray":
        from auditor.executors.ray import RayExecutor

        return RayExecutor(type(step), workers=execution.workers or 2, address=execution.address)
    raise ConfigError(f"unknown --engine {execution.engine!r} (known: {', '.join(ENGINES)})")
