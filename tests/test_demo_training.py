"""Training the demo's models reports its progress in steps, and reporting changes no weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from auditor.demo.train import TrainingProgress, train_model
from auditor.demo.world import CLASSES

IMAGES, SIDE, BATCH, EPOCHS = 10, 32, 4, 2
STEPS = EPOCHS * 3  # ceil(10 / 4) batches per epoch


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten noise images with alternating labels: enough for a few optimiser steps."""
    split_dir = tmp_path_factory.mktemp("tiny_split")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(IMAGES):
        name = f"{i}.png"
        pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(split_dir / name)
        rows.append({"file": name, "gender": CLASSES[i % 2]})
    pd.DataFrame(rows).to_csv(split_dir / "labels.csv", index=False)
    return split_dir


def _train(split_dir: Path, model_path: Path, states: list[TrainingProgress] | None) -> None:
    train_model(
        split_dir,
        model_path,
        seed=0,
        epochs=EPOCHS,
        batch_size=BATCH,
        progress=None if states is None else states.append,
    )


def test_progress_counts_every_step_of_every_epoch_up_to_the_total(
    tiny_split: Path, tmp_path: Path
) -> None:
    states: list[TrainingProgress] = []
    _train(tiny_split, tmp_path / "model.pt", states)
    assert {state.steps for state in states} == {STEPS}
    assert [state.steps_done for state in states] == list(range(1, STEPS + 1))


def test_reporting_progress_trains_the_same_weights(tiny_split: Path, tmp_path: Path) -> None:
    _train(tiny_split, tmp_path / "quiet.pt", None)
    _train(tiny_split, tmp_path / "reported.pt", [])
    quiet = torch.load(tmp_path / "quiet.pt", weights_only=True)
    reported = torch.load(tmp_path / "reported.pt", weights_only=True)
    assert quiet.keys() == reported.keys()
    assert all(torch.equal(quiet[name], reported[name]) for name in quiet)
