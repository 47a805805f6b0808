"""Model outputs at the input boundary: a model that returns NaN or infinity, raises, or answers
in the wrong shape on some inputs costs those images (recorded skips), not the run; one that
gives nothing usable for a whole first batch stops the run with exit 2 and says what to check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from tests.conftest import audit, load_summary, save_torchscript

SIZE = 16
MARKED = ("img/03.png", "img/07.png", "img/11.png")  # a red corner: the inputs the models mind


class Fails(nn.Module):
    """A small classifier that misbehaves on images with a red top-left corner (``how``): NaN
    or inf logits there, an exception, an output of the wrong shape, or NaN for every input
    (``everywhere``)."""

    def __init__(self, how: str, everywhere: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)
        self.how = how
        self.everywhere = everywhere

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features(x).relu().mean(dim=(2, 3)))
        marked = (x[:, 0, 0, 0] - x[:, 1, 0, 0]) > 1.0
        if self.everywhere:
            marked = torch.ones_like(marked)
        if self.how == "raise" and bool(marked.any()):
            raise RuntimeError("cannot handle a red corner")
        if self.how == "shape" and bool(marked.any()):
            return torch.cat([logits, logits[:, :1]], dim=1)  # a third class from nowhere
        bad = float("nan") if self.how == "nan" else float("inf")
        return torch.where(marked[:, None], torch.full_like(logits, bad), logits)


def save(module: nn.Module, folder: Path) -> Path:
    path = save_torchscript(module.eval(), folder / "model.ts")
    meta = {"classes": ["female", "male"], "input_size": SIZE, "mean": [0.5] * 3, "std": [0.25] * 3}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


@pytest.fixture
def marked_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        pixels = rng.integers(60, 200, (SIZE, SIZE, 3), dtype=np.uint8)
        file = f"img/{i:02d}.png"
        pixels[:4, :4] = (255, 0, 0) if file in MARKED else (128, 128, 128)
        Image.fromarray(pixels).save(root / file)
        rows.append({"file": file, "gender": ("female", "male")[i % 2], "race": "AB"[i % 2]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def whole_image_skips(out: Path) -> dict[str, str]:
    results = pd.read_parquet(out / "results.parquet")
    skipped = results[results["probe"].isna() & results["skip_reason"].notna()]
    return dict(zip(skipped["image_id"], skipped["skip_reason"], strict=True))


@pytest.mark.parametrize("how", ["nan", "inf"])
def test_non_finite_outputs_are_per_image_skips(
    marked_dataset: Path, tmp_path: Path, how: str
) -> None:
    model = save(Fails(how), tmp_path)
    out = tmp_path / "run"
    code, output = audit(model, marked_dataset, out, "--method", "saliency", "--batch-size", "4")
    assert code == 0, output
    assert whole_image_skips(out) == dict.fromkeys(MARKED, "model output is NaN or infinite")
    summary = load_summary(out)
    assert summary["dataset"]["images_audited"] == 9
    assert summary["statistics"]["overall_error"]["n"] == 9


def test_a_batch_that_raises_is_retried_image_by_image(
    marked_dataset: Path, tmp_path: Path
) -> None:
    """Batches of 4 hold one red-cornered image each: the other 3 of every batch are audited."""
    model = save(Fails("raise"), tmp_path)
    out = tmp_path / "run"
    code, output = audit(model, marked_dataset, out, "--method", "saliency", "--batch-size", "4")
    assert code == 0, output
    reason = "the model failed on this image: RuntimeError: "
    skips = whole_image_skips(out)
    assert set(skips) == set(MARKED)
    assert all(r.startswith(reason) and "cannot handle a red corner" in r for r in skips.values())
    assert load_summary(out)["dataset"]["images_audited"] == 9


def test_an_output_of_the_wrong_shape_on_some_inputs_skips_those(
    marked_dataset: Path, tmp_path: Path
) -> None:
    model = save(Fails("shape"), tmp_path)
    out = tmp_path / "run"
    code, output = audit(model, marked_dataset, out, "--method", "saliency", "--batch-size", "4")
    assert code == 0, output
    skips = whole_image_skips(out)
    assert set(skips) == set(MARKED)
    assert all("the model's output has shape [1, 3], expected [1, 2]" in r for r in skips.values())


class ReturnsTuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = x.mean(dim=(2, 3))
        return self.head(features), features


def test_a_model_that_returns_a_tuple_is_refused_with_exit_2(
    marked_dataset: Path, tmp_path: Path
) -> None:
    model = save(ReturnsTuple(), tmp_path)
    code, output = audit(model, marked_dataset, tmp_path / "run", "--method", "saliency")
    assert code == 2, output
    assert "must return logits [N, classes], got tuple" in " ".join(output.split())


def test_a_model_that_returns_nan_for_everything_stops_with_exit_2(
    marked_dataset: Path, tmp_path: Path
) -> None:
    model = save(Fails("nan", everywhere=True), tmp_path)
    out = tmp_path / "run"
    code, output = audit(model, marked_dataset, out, "--method", "saliency")
    assert code == 2, output
    assert "the model returns NaN or infinite outputs for every image of the first batch" in output
    assert "mean/std" in output and not (out / "summary.json").exists()


def test_an_edit_the_model_cannot_score_is_that_edit_s_skip(
    marked_dataset: Path, tmp_path: Path
) -> None:
    """A model that returns NaN for mostly black images: every blackout edit (guided and
    placebo) is a skip of its own, naming the edited image; the originals and flips (and the
    flips' noise floors) are not."""

    class FailsOnBlack(Fails):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.head(self.features(x).relu().mean(dim=(2, 3)))
            black = (x.amax(dim=1) < -1.9).float().mean(dim=(1, 2)) > 0.05  # black: -2 here
            return torch.where(black[:, None], torch.full_like(logits, float("nan")), logits)

    model = save(FailsOnBlack("nan"), tmp_path)
    out = tmp_path / "run"
    code, output = audit(
        model, marked_dataset, out, "--method", "saliency", "--probes", "blackout,flip",
        "--region-area", "0.4",
    )  # fmt: skip
    assert code == 0, output
    results = pd.read_parquet(out / "results.parquet")
    assert results.loc[results["probe"].isna(), "skip_reason"].isna().all()
    blackout, flip = (results[results["probe"] == name] for name in ("blackout", "flip"))
    assert len(blackout) == 24 and len(flip) == 24  # flip: its edits and their noise floors
    assert (blackout["region_source"] != "placebo").sum() == 12
    assert (blackout["skip_reason"] == "edited image: model output is NaN or infinite").all()
    assert flip["skip_reason"].isna().all()
    assert flip["probed_probs"].map(lambda p: np.isfinite(p).all()).all()
    # The skips say which arm went: a placebo the model could not score is its own skip.
    summary = load_summary(out)
    skips = {(s["probe"], s["arm"], s["reason"]) for s in summary["dataset"]["skips_by_reason"]}
    assert ("blackout", "edit", "edited image") in skips
    assert ("blackout", "placebo", "edited image") in skips
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "only its placebo (the edit itself ran)" in html[html.index('id="skips"') :]
