"""Broken and hostile model metadata, devices, run directories and console strings: each is the
user's or the machine's fault, so exit 2 with one line that names it, never an internal error.

Exit 3 is left for genuine bugs, and its message says how to see the traceback.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from auditor.cli import cli
from auditor.store import RunStore
from tests.conftest import audit, load_summary

# The quickest complete run: one probe, no faithfulness curves.
FAST = ("--probes", "blackout", "--faithfulness-images", "0")


def _with_meta(model: Path, **changes: Any) -> Path:
    """Rewrite the sidecar JSON beside ``model`` with ``changes`` (raw JSON values)."""
    sidecar = model.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta.update(changes)
    sidecar.write_text(json.dumps(meta))
    return model


def _one_error_line(output: str) -> str:
    """The one line that says what is wrong: the last of the output (a run may have stated
    its plan before it failed)."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], output
    assert "Traceback" not in output and "bug in auditor" not in output
    return lines[-1]


BAD_METADATA = [
    ("input_size", "abc", '"abc"'),
    ("input_size", [0, 0], "[0, 0]"),
    ("input_size", [-5, 10], "[-5, 10]"),
    ("input_size", [1e9, 1e9], "[1000000000.0, 1000000000.0]"),
    ("input_size", 10**12, "1000000000000"),
    ("input_size", True, "true"),
    ("input_size", [224.5, 3], "[224.5, 3]"),
    ("input_size", [[64, 64], [64, 64]], "[[64, 64], [64, 64]]"),
    ("input_size", None, "null"),
    ("input_size", "9_6", '"9_6"'),
    ("arch", 5, "5"),
    ("arch", "", '""'),
    ("arch", ["test_resnet"], '["test_resnet"]'),
    ("target_layer", "", '""'),
    ("target_layer", 4, "4"),
    ("classes", ["female", ""], '""'),
    ("classes", ["female", 1], "1"),
    ("classes", [None, "male"], "null"),
    ("classes", ["female", "female"], '["female", "female"]'),
    ("classes", ["female"], '["female"]'),
    ("classes", {"female": 0, "male": 1}, '{"female": 0, "male": 1}'),
    ("classes", ["female", "ma\nle"], '"ma\\nle"'),
    ("mean", [float("nan"), 0.5, 0.5], "[NaN, 0.5, 0.5]"),
    ("mean", [float("inf"), 0.5, 0.5], "[Infinity, 0.5, 0.5]"),
    ("mean", ["0.5", "0.5", "0.5"], '["0.5", "0.5", "0.5"]'),
    ("mean", [0.5, 0.5], "[0.5, 0.5]"),
    ("mean", [True, 0.5, 0.5], "[true, 0.5, 0.5]"),
    ("std", [0, 0.25, 0.25], "[0, 0.25, 0.25]"),
    ("std", [-0.25, 0.25, 0.25], "[-0.25, 0.25, 0.25]"),
    ("std", [1e-300, 0.25, 0.25], "[1e-300, 0.25, 0.25]"),
    ("std", [0.25, 0.25, 0.25, 0.25], "[0.25, 0.25, 0.25, 0.25]"),
    ("attributes", ["Smiling", 3], "3"),
    ("target_index", [], "[]"),
    ("target_index", 1.5, "1.5"),
    ("arch_kwargs", [1], "[1]"),
]


@pytest.mark.parametrize(
    ("key", "value", "shown"), BAD_METADATA, ids=[f"{k}={v!r}" for k, v, _ in BAD_METADATA]
)
def test_bad_metadata_value_exits_2_naming_key_file_and_value(
    key: str,
    value: Any,
    shown: str,
    tiny_model: Callable[..., Path],
    small_dataset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """E.g. ``"input_size": "abc"`` in tiny.json → exit 2: 'input_size' in .../tiny.json must be
    N or [height, width] ..., got "abc"."""
    model = _with_meta(tiny_model(), **{key: value})
    code, output = audit(model, small_dataset(n=4), tmp_path / "run", *FAST)
    assert code == 2, output
    line = _one_error_line(output)
    assert f"'{key}' in {model.with_suffix('.json')}" in line
    assert f"got {shown}" in line


BAD_FLAGS = [
    ("--input-size", "abc", "--input-size must be N or [height, width]"),
    ("--input-size", "0", "--input-size must be N or [height, width]"),
    ("--input-size", "64,-1", '"64,-1"'),
    ("--classes", "female,,male", '--classes must hold names as non-blank strings, got ""'),
    ("--classes", "female,female", '--classes names "female" more than once'),
    ("--classes", "female", "--classes must list at least two class names"),
    ("--mean", "nan,0.5,0.5", "--mean must be three finite numbers, one per RGB channel (e.g. [0"),
    ("--mean", "0.5,0.5", 'got "0.5,0.5"'),
    ("--std", "0,1,1", "--std must be three positive finite numbers"),
    ("--std", "inf,1,1", '"inf,1,1"'),
    ("--arch", " ", "--arch must name the architecture"),
    ("--target-layer", "", "--target-layer must be the dotted name of a module of the model (e.g."),
]


@pytest.mark.parametrize(("flag", "value", "expected"), BAD_FLAGS)
def test_bad_metadata_flag_exits_2_naming_the_flag(
    flag: str,
    value: str,
    expected: str,
    tiny_model: Callable[..., Path],
    small_dataset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    code, output = audit(tiny_model(), small_dataset(n=4), tmp_path / "run", flag, value, *FAST)
    assert code == 2, output
    assert expected in _one_error_line(output)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json", "cannot read model config"),
        ('{"classes": ', "cannot read model config"),
        ("", "cannot read model config"),
        ("[" * 100_000, "nested too deeply"),
        ('["female", "male"]', "must hold a JSON object such as"),
        ("null", "not null"),
        ('"female,male"', "not a string"),
    ],
    ids=["words", "cut-short", "empty", "deep", "list", "null", "string"],
)
def test_metadata_file_that_is_no_json_object_exits_2(
    text: str,
    expected: str,
    tiny_model: Callable[..., Path],
    small_dataset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    model = tiny_model()
    model.with_suffix(".json").write_text(text)
    code, output = audit(model, small_dataset(n=4), tmp_path / "run", *FAST)
    assert code == 2, output
    line = _one_error_line(output)
    assert expected in line and str(model.with_suffix(".json")) in line


def test_metadata_file_that_is_not_utf8_exits_2(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_model()
    model.with_suffix(".json").write_bytes(b"\xff\xfe{\x00}")
    code, output = audit(model, small_dataset(n=4), tmp_path / "run", *FAST)
    assert code == 2, output
    assert "as UTF-8 JSON" in _one_error_line(output)


def test_model_config_that_is_a_directory_exits_2(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_model()
    code, output = audit(
        model, small_dataset(n=4), tmp_path / "run", "--model-config", str(tmp_path), *FAST
    )
    assert code == 2, output
    assert f"model config {tmp_path} is not a file" in _one_error_line(output)


@pytest.mark.parametrize("size", ["64", "64,48", "64x48"])
def test_input_size_flag_takes_n_or_height_width(
    size: str,
    tiny_model: Callable[..., Path],
    small_dataset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """The documented ``--input-size 224`` and ``--input-size 224,224`` forms both run."""
    code, output = audit(
        tiny_model(), small_dataset(n=4), tmp_path / "run", "--input-size", size, *FAST
    )
    assert code == 0, output
    height, _, width = size.replace("x", ",").partition(",")
    expected = [int(height), int(width or height)]
    assert load_summary(tmp_path / "run")["model"]["input_size"] == expected


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cuda:99", "--device 'cuda:99' is not available here (available: cpu"),
        ("nonsense", "--device 'nonsense' is not a torch device (available: cpu"),
        ("meta", "--device 'meta' is not available here (available: cpu"),
    ],
)
def test_unavailable_device_exits_2_listing_the_available_ones(
    device: str,
    expected: str,
    tiny_model: Callable[..., Path],
    small_dataset: Callable[..., Path],
    tmp_path: Path,
) -> None:
    code, output = audit(
        tiny_model(), small_dataset(n=4), tmp_path / "run", "--device", device, *FAST
    )
    assert code == 2, output
    assert expected in _one_error_line(output)


# Skipped only where CUDA exists: there `--device cuda` is valid, and the refusal of a device
# that is missing is still shown by `cuda:99` in the test above, which runs everywhere.
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_exits_2(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    code, output = audit(
        tiny_model(), small_dataset(n=4), tmp_path / "run", "--device", "cuda", *FAST
    )
    assert code == 2, output
    assert "--device 'cuda' is not available here (available: cpu" in _one_error_line(output)


# Skipped only on Apple GPUs, where `--device mps` is valid (CI and Linux machines have none).
@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_where_unavailable_exits_2(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    code, output = audit(
        tiny_model(), small_dataset(n=4), tmp_path / "run", "--device", "mps", *FAST
    )
    assert code == 2, output
    assert "--device 'mps' is not available here" in _one_error_line(output)


def test_out_naming_an_existing_file_exits_2(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    taken = tmp_path / "results.txt"
    taken.write_text("someone's notes")
    code, output = audit(tiny_model(), small_dataset(n=4), taken, *FAST)
    assert code == 2, output
    assert f"output directory {taken} is a file, not a directory: pass --out a" in _one_error_line(
        output
    )
    assert taken.read_text() == "someone's notes"


def test_out_under_an_existing_file_exits_2(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    taken = tmp_path / "results.txt"
    taken.write_text("someone's notes")
    code, output = audit(tiny_model(), small_dataset(n=4), taken / "run", *FAST)
    assert code == 2, output
    assert f"is under {taken}, which is a file" in _one_error_line(output)


def test_disk_full_while_writing_results_exits_2(
    tiny_model: Callable[..., Path],
    small_dataset: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC raised by a write with no file name (as a full disk does): the run directory is
    named instead."""

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(RunStore, "write_part", full)
    out = tmp_path / "run"
    code, output = audit(tiny_model(), small_dataset(n=4), out, *FAST)
    assert code == 2, output
    assert f"cannot write {out}: No space left on device; free some space" in _one_error_line(
        output
    )


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (errno.EROFS, "cannot write {path}: Read-only file system; choose an output"),
        (errno.EACCES, "cannot access {path}: Permission denied; check its permissions"),
        (errno.EDQUOT, "cannot write {path}: Disk quota exceeded; free some of your disk"),
    ],
    ids=["EROFS", "EACCES", "EDQUOT"],
)
def test_unwritable_run_directory_exits_2_naming_the_file(
    number: int,
    expected: str,
    tiny_model: Callable[..., Path],
    small_dataset: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(path: Path, *_: object) -> None:
        raise OSError(number, os.strerror(number), str(path))

    monkeypatch.setattr("auditor.store.write_atomically", refuse)
    out = tmp_path / "run"
    code, output = audit(tiny_model(), small_dataset(n=4), out, *FAST)
    assert code == 2, output
    line = _one_error_line(output)
    assert expected.format(path=out / "plan.json") in line


def test_out_of_memory_exits_2_saying_what_to_lower(
    tiny_model: Callable[..., Path],
    small_dataset: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def exhausted(*_: object, **__: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("auditor.pipeline.run_audit", exhausted)
    code, output = audit(tiny_model(), small_dataset(n=4), tmp_path / "run", *FAST)
    assert code == 2, output
    assert "out of memory" in _one_error_line(output) and "--batch-size" in output


def test_a_genuine_bug_exits_3_and_says_how_to_see_the_traceback(
    tiny_model: Callable[..., Path],
    small_dataset: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its message is printed literally (no markup) and names --debug; with --debug the
    exception itself propagates."""

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("index [/] out of [red]range")

    monkeypatch.setattr("auditor.pipeline.run_audit", broken)
    model, data = tiny_model(), small_dataset(n=4)
    code, output = audit(model, data, tmp_path / "run", *FAST)
    assert code == 3, output
    assert "internal error: RuntimeError: index [/] out of [red]range" in output
    assert "This is a bug in auditor" in output
    assert "Rerun with `audit --debug run ...` to see the traceback" in output

    args = ["--debug", "run", str(model), str(data), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, [*args, "--label-column", "gender", *FAST])
    assert isinstance(result.exception, RuntimeError)


def test_user_strings_in_console_output_are_not_markup(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    """Class names "[/]" and "[red]x", group values "[bold]A[/]", a run directory "[/]run[red]":
    rich would read them as markup (and "[/]" alone crashes it); they print as written."""
    classes = ("[/]", "[red]x")
    model = tiny_model(classes=classes)
    data = small_dataset(n=12)
    table = pd.read_csv(data / "labels.csv")
    table["gender"] = table["gender"].map({"female": classes[0], "male": classes[1]})
    table["race"] = "[bold]" + table["race"] + "[/]"
    table.to_csv(data / "labels.csv", index=False)
    out = tmp_path / "[/]run[red]"
    code, output = audit(model, data, out, "--min-group-size", "2", *FAST)
    assert code == 0, output
    assert f"Results: {out / 'results.parquet'}" in output
    assert load_summary(out)["model"]["classes"] == list(classes)
