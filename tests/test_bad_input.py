"""Bad rows are recorded and counted, never fatal; bad runs exit 2 with one clear line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image

from auditor.cli import cli
from tests.conftest import audit, load_summary


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture
def damaged_dataset(small_dataset: Callable[..., Path]) -> Path:
    root = small_dataset(n=24)
    table = pd.read_csv(root / "labels.csv")
    truncated = root / table.loc[1, "file"]
    truncated.write_bytes(truncated.read_bytes()[:200])
    (root / table.loc[2, "file"]).write_text("this is not an image")
    table.loc[3, "gender"] = "unknown-value"
    extra = pd.DataFrame(
        [
            {"file": "img/missing.png", "gender": "female", "race": "A", "face_box": ""},
            {"file": "../outside.png", "gender": "male", "race": "B", "face_box": ""},
        ]
    )
    pd.concat([table, extra]).to_csv(root / "labels.csv", index=False)
    return root


def test_bad_rows_are_recorded_with_reasons_and_counted(
    damaged_dataset: Path, tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, output = audit(tiny_model(), damaged_dataset, out, "--min-group-size", "2")
    assert code == 0, output
    summary = load_summary(out)
    assert summary["dataset"]["rows"] == 26
    assert summary["dataset"]["images_skipped"] == 5
    assert summary["dataset"]["images_audited"] == 21
    reasons = {
        s["image_id"]: s["reason"] for s in summary["dataset"]["skipped"] if s["probe"] is None
    }
    table = pd.read_csv(damaged_dataset / "labels.csv")
    assert reasons[table.loc[1, "file"]].startswith("unreadable image")
    assert reasons[table.loc[2, "file"]].startswith("unreadable image")
    assert reasons[table.loc[3, "file"]].startswith("unknown label value 'unknown-value'")
    assert reasons["img/missing.png"] == "file not found"
    assert reasons["../outside.png"] == "path escapes the dataset root"
    results = pd.read_parquet(out / "results.parquet")
    assert set(results.loc[results["probe"].isna(), "image_id"]) == set(reasons)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert (
        "What could not be audited" in html
        and "file not found" in html
        and "unreadable image" in html
    )


def test_missing_model_file_exits_2(small_dataset: Callable[..., Path], tmp_path: Path) -> None:
    code, output = _run("run", str(tmp_path / "nope.pt"), str(small_dataset()))
    assert code == 2
    assert "model file" in output and "does not exist" in output
    assert "Traceback" not in output


def test_missing_label_column_exits_2(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    code, output = _run(
        "run",
        str(tiny_model()),
        str(small_dataset()),
        "--label-column",
        "sex",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2
    assert "no column 'sex'" in output and "--label-column" in output


def test_pickled_module_needs_trust_model(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    sidecar = tiny_model().with_suffix(".json")
    pickled = tmp_path / "pickled.pt"
    torch.save(timm.create_model("test_resnet", num_classes=2).eval(), pickled)
    pickled.with_suffix(".json").write_text(sidecar.read_text())
    data = small_dataset(n=6)
    code, output = audit(pickled, data, tmp_path / "a")
    assert code == 2
    assert "--trust-model" in output and "arbitrary code" in output
    code, output = audit(pickled, data, tmp_path / "b", "--trust-model", "--probes", "flip")
    assert code == 0, output
    assert load_summary(tmp_path / "b")["model"]["kind"] == "pickle"


def test_weights_without_architecture_exit_2(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_model()
    config = tmp_path / "meta.json"
    config.write_text(
        '{"classes": ["female", "male"], "input_size": 48, "mean": [0,0,0], "std": [1,1,1]}'
    )
    code, output = _run(
        "run",
        str(model),
        str(small_dataset(n=4)),
        "--model-config",
        str(config),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2 and "--arch" in output


def test_unknown_architecture_suggests_a_name(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    code, output = _run(
        "run",
        str(tiny_model()),
        str(small_dataset(n=4)),
        "--arch",
        "test_resnt",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2 and "did you mean 'test_resnet'" in output


def test_hair_crop_without_a_face_is_not_applicable(
    tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """No face geometry and no detectable face: the probe says so instead of inventing a result."""
    root = tmp_path / "plain"
    root.mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (48, 48), (40 * i, 90, 120)).save(root / f"{i}.png")
        rows.append({"file": f"{i}.png", "gender": ("female", "male")[i % 2]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    out = tmp_path / "run"
    code, output = audit(tiny_model(), root, out, "--probes", "hair_crop,flip")
    assert code == 0, output
    results = pd.read_parquet(out / "results.parquet")
    hair = results[results["probe"] == "hair_crop"]
    assert len(hair) == 8 and hair["skip_reason"].str.startswith("not applicable").all()
    assert hair["flipped"].isna().all()
    assert results.loc[results["probe"] == "flip", "skip_reason"].isna().all()


@pytest.mark.parametrize("target", ["true", "male"])
def test_attribution_target_can_be_the_true_or_a_named_class(
    target: str, small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, output = audit(
        tiny_model(),
        small_dataset(n=6),
        out,
        "--target",
        target,
        "--probes",
        "blackout",
    )
    assert code == 0, output
    assert load_summary(out)["attribution"]["target"] == target


def test_unknown_target_class_exits_2(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    code, output = audit(tiny_model(), small_dataset(n=4), tmp_path / "r", "--target", "cat")
    assert code == 2 and "--target" in output


def test_a_dataset_with_nothing_usable_says_so(
    tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    root = tmp_path / "gone"
    root.mkdir()
    (root / "labels.csv").write_text("file,gender\na.png,female\nb.png,male\n")
    out = tmp_path / "run"
    code, output = audit(tiny_model(), root, out)
    assert code == 0, output
    assert "Nothing was audited: all 2 rows were skipped" in output
    assert "Nothing was audited" in (out / "report.html").read_text(encoding="utf-8")
