"""Shared fixtures: the demo world with its two trained models (built once per session), their
audits, and a tiny untrained model for tests that only need something loadable and fast."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from click.testing import CliRunner
from hypothesis import settings
from PIL import Image

from auditor.cli import cli
from auditor.config import AuditConfig
from auditor.demo import DemoWorld, build_demo
from auditor.demo.world import draw_portrait
from auditor.pipeline import run_audit
from reports import render_report

SHARED_UTKFACE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "utkface-600"

torch.set_num_threads(2)

# Hypothesis profiles: "ci" (the default) is derandomised and bounded, so CI sees the same
# examples every run; "fuzz" (`nox -s fuzz`) draws ten times as many, freshly seeded.
settings.register_profile("ci", max_examples=80, derandomize=True, deadline=None, print_blob=True)
settings.register_profile("fuzz", max_examples=800, deadline=None, print_blob=True)
settings.load_profile("ci")


@pytest.fixture
def utkface() -> Path:
    """The 600 real UTKFace photos of ../shared (never copied into the repository)."""
    if not SHARED_UTKFACE.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {SHARED_UTKFACE}")
        # Only off CI (CI fails above): the photos' licence keeps them out of the repository,
        # so a checkout without ../shared beside it cannot run these tests.
        pytest.skip("../shared/data/utkface-600 is not beside this checkout")
    return SHARED_UTKFACE


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    """The demo world and its two trained models. ``AUDITOR_DEMO_CACHE`` names a folder to build
    them in once and reuse across test sessions while working (``build_demo`` reuses a folder
    stamped with the same seed and version); CI leaves it unset and builds afresh."""
    cache = os.environ.get("AUDITOR_DEMO_CACHE")
    return build_demo(Path(cache) if cache else tmp_path_factory.mktemp("demo"), seed=0)


# The biased model is audited with three gradient CAMs side by side (issue 3). Faithfulness
# curves on 80 images: enough for the marginal intervals to separate, not only the paired one.
BIASED_METHODS = ("gradcam", "gradcam++", "xgradcam")
FAITHFULNESS_IMAGES = 80


def _audit(world: DemoWorld, model: Path, out: Path, methods: tuple[str, ...]) -> Path:
    config = AuditConfig(
        model_path=model,
        dataset_dir=world.audit_dir,
        out_dir=out,
        label_column="gender",
        seed=0,
        methods=methods,
        faithfulness_images=FAITHFULNESS_IMAGES,
    )
    run_dir = run_audit(config)
    render_report(run_dir)
    return run_dir


@pytest.fixture(scope="session")
def biased_run(demo_world: DemoWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _audit(
        demo_world, demo_world.biased_model, tmp_path_factory.mktemp("biased"), BIASED_METHODS
    )


@dataclass(frozen=True)
class DemoCommand:
    """What README's first command gives: `audit demo`'s folder and its console output."""

    out_dir: Path
    output: str


@pytest.fixture(scope="session")
def demo_command(demo_world: DemoWorld, tmp_path_factory: pytest.TempPathFactory) -> DemoCommand:
    """`audit demo --out DIR`, run as a user runs it, on a copy of the session's trained world
    (its stamp, models and audit split): ``build_demo`` reuses them instead of training again."""
    world_dir = demo_world.audit_dir.parents[1]
    out = tmp_path_factory.mktemp("demo_command")
    shutil.copy2(world_dir / "demo.json", out / "demo.json")
    shutil.copytree(world_dir / "models", out / "models")
    shutil.copytree(demo_world.audit_dir, out / demo_world.audit_dir.relative_to(world_dir))
    result = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return DemoCommand(out, result.output)


@pytest.fixture(scope="session")
def control_run(demo_command: DemoCommand) -> Path:
    """The control model's run as `audit demo` writes it (judged by the demo's policy): the
    tests of the control read the very run the README quotes, and the session audits it once."""
    return demo_command.out_dir / "control"


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch on one thread here, as in Ray's actors (one CPU each, OMP_NUM_THREADS=1): float
    sums split over another number of threads differ in their last digits, so a run is compared
    bit for bit only with one computed on as many threads."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The small audits' faithfulness curves run on a few images: ROAD's sparse solves would otherwise
# cost more than the rest of such an audit. A test's own --faithfulness-images comes later and wins.
FEW_FAITHFULNESS = ("--faithfulness-images", "4")


def audit(model: Path, data: Path, out: Path, *extra: str) -> tuple[int, str]:
    """``audit run MODEL DATA --out OUT --label-column gender EXTRA...`` → (exit code, output),
    with faithfulness curves on FEW_FAITHFULNESS images unless EXTRA says otherwise."""
    args = [
        "run", str(model), str(data), "--out", str(out), "--label-column", "gender",
        *FEW_FAITHFULNESS, *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def save_torchscript(
    module: torch.nn.Module, path: Path, example: torch.Tensor | None = None
) -> Path:
    """Save ``module`` as TorchScript (traced on ``example``, else scripted), the way a model's
    author would; torch's deprecation warnings of torch.jit are the author's, not the test's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\..*` is deprecated", FutureWarning)
        compiled = torch.jit.script(module) if example is None else torch.jit.trace(module, example)
        torch.jit.save(compiled, str(path))
    return path


def load_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture
def tiny_model(tmp_path: Path) -> Callable[..., Path]:
    """Save an untrained test_resnet state_dict (and its sidecar) and return its path."""

    def make(
        num_classes: int = 2, classes: tuple[str, ...] = ("female", "male"), size: int = 48
    ) -> Path:
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", num_classes=num_classes).eval()
        path = tmp_path / "tiny.pt"
        torch.save(model.state_dict(), path)
        meta = {
            "arch": "test_resnet",
            "classes": list(classes),
            "input_size": size,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        }
        path.with_suffix(".json").write_text(json.dumps(meta))
        return path

    return make


@pytest.fixture
def small_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Write ``n`` synthetic portraits with a labels.csv (gender label, race group, face_box)."""

    def make(n: int = 24, size: int = 64) -> Path:
        root = tmp_path / "data"
        (root / "img").mkdir(parents=True)
        rng = np.random.default_rng(1)
        rows = []
        for i in range(n):
            gender, race = ("female", "male")[i % 2], "ABC"[i % 3]
            portrait = draw_portrait(rng, gender, race, tie=bool(i % 4 == 0), size=size)
            file = f"img/{i:03d}.png"
            Image.fromarray(portrait.pixels).save(root / file)
            rows.append(
                {
                    "file": file,
                    "gender": gender,
                    "race": race,
                    "face_box": ",".join(map(str, portrait.face_box)),
                }
            )
        pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
        return root

    return make


@pytest.fixture
def small_run(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> Path:
    """A finished audit of the untrained tiny model on 12 portraits, every subgroup tested."""
    out = tmp_path / "run"
    code, output = audit(tiny_model(), small_dataset(n=12), out, "--min-group-size", "1")
    assert code == 0, output
    return out
