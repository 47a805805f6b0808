"""Ray executor (``--engine ray``): batches spread over Ray actors, one model per actor.

The plan's batches become a Ray Data dataset, one row per batch; ``map_batches`` runs the
batch step (an audit's or a hypothesis's) as a stateful class, so each actor opens the model
once and runs the batches it is handed. Results stream back to this process as they finish,
in any order, and only this process writes the run store: one writer per run directory holds
on a cluster too.

Every worker reads the images and the model from the paths in the plan, so on a multi-machine
cluster the dataset and the model must be on storage every node sees under the same path.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic

import numpy as np

from auditor.errors import ConfigError
from auditor.executors import Result, Step
from auditor.plan import PlannedBatch

INSTALL_HINT = "--engine ray needs Ray: pip install 'auditor[ray]' (or -e '.[ray]' in a checkout)"


class RayExecutor(Generic[Result]):
    """Runs ``make_step(plan)`` in each of ``workers`` actors; ``make_step`` (a step class)
    must be importable where the actors run."""

    def __init__(
        self, make_step: Callable[[Any], Step[Result]], *, workers: int, address: str | None
    ) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        try:
            import ray
            import ray.data  # noqa: F401
        except ImportError:
            raise ConfigError(INSTALL_HINT) from None
        self._make_step = make_step
        self._workers = workers
        self._address = address

    def run(self, plan: Any, batches: Sequence[PlannedBatch]) -> Iterator[Result]:
        import ray

        if not batches:
            return
        if not ray.is_initialized():
            ray.init(
                address=self._address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI shows its own progress
        context.execution_options.preserve_order = False
        # The actors need no batch list: each row brings its own batch.
        shared = dataclasses.replace(plan, batches=())
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= self._workers else 0
        rows = ray.data.from_items(
            [{"batch": pickle.dumps(b)} for b in batches], override_num_blocks=len(batches)
        )
        results = rows.map_batches(
            _RayStep,
            fn_constructor_kwargs={"make_step": self._make_step, "plan": shared},
            batch_size=1,
            concurrency=min(self._workers, len(batches)),
            num_cpus=1,
            num_gpus=gpus,
        )
        for row in results.iter_rows():
            yield pickle.loads(row["result"])


class _RayStep:
    """The batch step inside a Ray actor: the model is opened once, when the actor starts."""

    def __init__(self, make_step: Callable[[Any], Step[object]], plan: object) -> None:
        self._step = make_step(plan)

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        results = [pickle.dumps(self._step(pickle.loads(b))) for b in rows["batch"]]
        return {"result": np.array(results, dtype=object)}
