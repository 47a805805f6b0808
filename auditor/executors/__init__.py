"""Executors run a plan's batches and hand back their results, in any order.

An executor is one file: a class with ``run(plan, batches) -> Iterator[BatchResult]``. The run
store writes each result as it arrives and combines them in batch-id order, so an executor may
spread batches over threads, processes or machines without changing a figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from auditor.errors import ConfigError

if TYPE_CHECKING:
    from auditor.plan import PlannedBatch, RunPlan
    from auditor.step import BatchResult, BatchStep

ENGINES = ("local", "ray")


class Executor(Protocol):
    def run(self, plan: RunPlan, batches: Sequence[PlannedBatch]) -> Iterator[BatchResult]:
        """Audit ``batches`` of ``plan``; yield each result as soon as it is done."""
        ...


def make_executor(
    engine: str, step: BatchStep, *, workers: int | None, address: str | None
) -> Executor:
    """The executor for ``--engine``; ``step`` is the planner's own, which ``local`` reuses.

    Raises:
        ConfigError: an unknown engine, or options the engine does not take.
    """
    if engine == "local":
        if address is not None or (workers or 1) != 1:
            raise ConfigError("--workers and --ray-address need --engine ray")
        from auditor.executors.local import LocalExecutor

        return LocalExecutor(step)
    if engine == "ray":
        from auditor.executors.ray import RayExecutor

        return RayExecutor(workers=workers or 2, address=address)
    raise ConfigError(f"unknown --engine {engine!r} (known: {', '.join(ENGINES)})")
