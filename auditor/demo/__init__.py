"""The built-in example: a synthetic portrait world with a planted necktie cue, and two models.

``build_demo`` writes the audit split, trains one model on the biased split (the tie goes with the
male label) and one on the control split (the tie is independent of the label), and returns
where everything is. Re-running with the same seed reuses what is already there.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.demo.train import TrainingProgress, train_model
from auditor.demo.world import AUDIT, BIASED_TRAIN, CONTROL_TRAIN, generate_split

DEMO_LABEL_SOURCE = "the demo world's generator, which drew each synthetic portrait for its label"
DEMO_POLICY = Path(__file__).with_name("audit.toml")  # holds for the control, fails the biased
_STAMP = "demo.json"
_VERSION = 1

# Called with the model's name ("biased", "control") and where its training stands.
DemoProgressFn = Callable[[str, TrainingProgress], None]


@dataclass(frozen=True)
class DemoWorld:
    audit_dir: Path
    biased_model: Path
    control_model: Path


def build_demo(
    out_dir: Path, *, seed: int = 0, progress: DemoProgressFn | None = None
) -> DemoWorld:
    world = DemoWorld(
        audit_dir=out_dir / "world" / AUDIT.name,
        biased_model=out_dir / "models" / "biased.pt",
        control_model=out_dir / "models" / "control.pt",
    )
    stamp = out_dir / _STAMP
    wanted = {"version": _VERSION, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return world
    for split, model in ((BIASED_TRAIN, world.biased_model), (CONTROL_TRAIN, world.control_model)):
        split_dir = out_dir / "world" / split.name
        generate_split(split, split_dir, seed=seed)
        reporter = None if progress is None else functools.partial(progress, model.stem)
        train_model(split_dir, model, seed=seed, progress=reporter)
    generate_split(AUDIT, world.audit_dir, seed=seed)
    stamp.write_text(json.dumps(wanted), encoding="utf-8")
    return world
