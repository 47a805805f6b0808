"""The run store: a run survives a kill, resumes without losing or repeating a row, gives the
same figures whatever order its batches ran in, admits one writer, and is read only once whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest

from auditor.executors.local import LocalExecutor
from auditor.plan import PlannedBatch, RunPlan
from auditor.step import BatchResult
from auditor.store import MANIFEST_FILE, PARTS_DIR, PLAN_FILE, RunStore
from tests.conftest import FEW_FAITHFULNESS, audit

ROOT = Path(__file__).resolve().parents[1]
# Everything in summary.json but when it was written and how long it took.
UNTIMED = ("created", "seconds")


def figures(run_dir: Path) -> str:
    """summary.json without its timing and its own directory, as text: equal means identical."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    for key in UNTIMED:
        summary.pop(key)
    summary["config"].pop("out_dir")
    return json.dumps(summary, indent=1, sort_keys=True)


def rows(run_dir: Path) -> pd.DataFrame:
    """results.parquet, sorted by every key column, with a clean index."""
    table = pd.read_parquet(run_dir / "results.parquet")
    keys = ["image_id", "probe", "method", "region_source"]
    return table.sort_values(keys, na_position="first").reset_index(drop=True)


def assert_same_results(a: Path, b: Path) -> None:
    assert figures(a) == figures(b)
    pd.testing.assert_frame_equal(rows(a), rows(b))
    assert (a / "gallery.json").read_bytes() == (b / "gallery.json").read_bytes()


@pytest.fixture
def inputs(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path]
) -> tuple[Path, Path]:
    return tiny_model(), small_dataset(n=40)


def test_shuffled_batches_give_identical_figures(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = inputs
    assert audit(model, data, tmp_path / "in-order", "--batch-size", "4")[0] == 0

    original = LocalExecutor.run

    def backwards(
        self: LocalExecutor, plan: RunPlan, batches: Sequence[PlannedBatch]
    ) -> Iterator[BatchResult]:
        order = [*batches[1::2], *reversed(batches[::2])]
        assert [b.batch_id for b in order] != [b.batch_id for b in batches]
        return original(self, plan, order)

    monkeypatch.setattr(LocalExecutor, "run", backwards)
    assert audit(model, data, tmp_path / "shuffled", "--batch-size", "4")[0] == 0
    assert_same_results(tmp_path / "in-order", tmp_path / "shuffled")


def _parts(run_dir: Path) -> list[Path]:
    folder = run_dir / PARTS_DIR
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if (p / "part.json").is_file()]


def _cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "auditor.cli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_a_killed_run_resumes_to_the_uninterrupted_result(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """kill -9 once some batches are stored; damage one stored part as a kill mid-write could;
    --resume redoes that batch and the missing ones, and nothing else."""
    model, data = tiny_model(), small_dataset(n=120)
    extra = ["--batch-size", "4", *FEW_FAITHFULNESS]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    command = ["run", str(model), str(data), "--label-column", "gender", *extra, "--out"]
    # Every batch is computed in a CLI process like the killed one (same thread settings),
    # so "equal" can mean bit for bit.
    assert _cli(*command, str(whole)).wait() == 0

    process = _cli(*command, str(killed))
    deadline = time.monotonic() + 300
    while len(_parts(killed)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stored = sorted(_parts(killed))
    assert 3 <= len(stored) < 30, "the kill should land while batches remain"
    assert not (killed / MANIFEST_FILE).exists()

    # What a reader sees of a killed run: a refusal, not a partial result.
    code, output = _audit_command("gate", str(killed), "--fail-on", "flip_rate > 0.5")
    assert code == 2 and "unfinished run" in output and "--resume" in output

    # Without --resume the directory is refused, never wiped.
    code, output = audit(model, data, killed, *extra)
    assert code == 2 and "--resume" in output and "--overwrite" in output
    assert len(_parts(killed)) == len(stored)

    damaged = stored[0] / "records.parquet"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    (killed / PARTS_DIR / ".tmp-000099-half-written-1").mkdir()

    assert _cli(*command, str(killed), "--resume").wait() == 0
    assert_same_results(whole, killed)
    table = pd.read_parquet(killed / "results.parquet")
    assert table.duplicated(["image_id", "probe", "method", "region_source"]).sum() == 0
    assert table["image_id"].nunique() == 120
    assert not (killed / PARTS_DIR).exists()


def _audit_command(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from auditor.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_resume_refuses_a_changed_configuration(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = inputs
    out = tmp_path / "run"
    assert audit(model, data, out, "--batch-size", "8")[0] == 0
    code, output = audit(model, data, out, "--batch-size", "8", "--seed", "1", "--resume")
    assert code == 2 and "config.seed (0 stored, 1 now)" in output


def test_resume_of_a_finished_run_reruns_nothing(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = inputs
    out = tmp_path / "run"
    assert audit(model, data, out)[0] == 0
    before = figures(out)
    sealed = (out / MANIFEST_FILE).read_text(encoding="utf-8")
    assert audit(model, data, out, "--resume")[0] == 0
    assert figures(out) == before
    assert (out / MANIFEST_FILE).read_text(encoding="utf-8") == sealed


def test_overwrite_replaces_the_run_and_keeps_other_files(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = inputs
    out = tmp_path / "run"
    assert audit(model, data, out)[0] == 0
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert audit(model, data, out, "--overwrite", "--seed", "3")[0] == 0
    assert json.loads((out / "summary.json").read_text())["config"]["seed"] == 3
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_second_writer_is_refused_and_named(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = inputs
    out = tmp_path / "run"
    with RunStore(out, ["gender"]).lock():
        code, output = audit(model, data, out)
    assert code == 2 and f"process {os.getpid()}" in output
    assert not (out / PLAN_FILE).exists()
    assert audit(model, data, out)[0] == 0  # released with the block


def test_a_run_without_its_manifest_is_not_read(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """As after a kill between writing the final files: report, gate and compare refuse."""
    model, data = inputs
    out = tmp_path / "run"
    assert audit(model, data, out)[0] == 0
    (out / MANIFEST_FILE).unlink()
    for command in (
        ["report", str(out)],
        ["gate", str(out), "--fail-on", "flip_rate > 0.5"],
        ["compare", str(out), str(out)],
    ):
        code, output = _audit_command(*command)
        assert code == 2 and "unfinished run" in output, command


def test_engine_ray_without_ray_says_how_to_install(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    model, data = inputs
    code, output = audit(model, data, tmp_path / "run", "--engine", "ray")
    assert code == 2 and "pip install 'auditor[ray]'" in output


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_ray_with_two_workers_gives_the_local_figures(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    import ray  # the README's test command and .ci/run install the [ray] extra

    model, data = inputs
    assert audit(model, data, tmp_path / "local", "--batch-size", "4")[0] == 0
    code, output = audit(
        model, data, tmp_path / "ray", "--batch-size", "4", "--engine", "ray", "--workers", "2"
    )
    assert code == 0, output
    assert_same_results(tmp_path / "local", tmp_path / "ray")
    ray.shutdown()
