"""Train the demo's small timm CNN on a split of the synthetic world (about a minute on a CPU)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from PIL import Image
from torch import nn

from auditor.demo.world import CLASSES

ARCH = "test_resnet"
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
# CPU kernels split their sums by thread, so the thread count changes the float results and,
# over a few hundred steps, the trained model; fixed, the demo trains the same model anywhere.
TRAINING_THREADS = 2


@dataclass(frozen=True)
class TrainingProgress:
    """Where a training run stands, in optimiser steps (epochs × batches per epoch), so a
    caller can show a bar with an ETA: training is most of a first ``audit demo``."""

    steps_done: int
    steps: int


TrainingProgressFn = Callable[[TrainingProgress], None]


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_model(
    split_dir: Path,
    model_path: Path,
    *,
    seed: int,
    epochs: int = 6,
    batch_size: int = 64,
    progress: TrainingProgressFn | None = None,
) -> float:
    """Train on ``split_dir`` (as written by ``generate_split``) and save a state_dict.

    Writes ``model_path`` (a state_dict) and ``model_path.with_suffix('.json')`` (its metadata)
    and returns the final training accuracy. The same seed trains the same weights on every
    machine (see ``TRAINING_THREADS``); ``progress``, called after every optimiser step, only
    reads the step count, so it changes nothing of that.
    """
    with _threads(TRAINING_THREADS):
        return _train(
            split_dir,
            model_path,
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            progress=progress,
        )


def _train(
    split_dir: Path,
    model_path: Path,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    progress: TrainingProgressFn | None,
) -> float:
    torch.manual_seed(seed)
    table = pd.read_csv(split_dir / "labels.csv")
    images = np.stack([np.asarray(Image.open(split_dir / f).convert("RGB")) for f in table["file"]])
    size = images.shape[1]
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    inputs = (inputs - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    targets = torch.tensor([CLASSES.index(g) for g in table["gender"]])

    model = timm.create_model(ARCH, pretrained=False, num_classes=len(CLASSES))
    steps = epochs * -(-len(inputs) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    correct = 0
    steps_done = 0
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        correct = 0
        for start in range(0, len(inputs), batch_size):
            idx = order[start : start + batch_size]
            logits = model(_cutout(inputs[idx], generator))
            loss = loss_fn(logits, targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((logits.argmax(1) == targets[idx]).sum())
            steps_done += 1
            if progress is not None:
                progress(TrainingProgress(steps_done=steps_done, steps=steps))
    model.eval()
    model_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_path)
    meta = {
        "arch": ARCH,
        "classes": list(CLASSES),
        "input_size": [size, size],
        "mean": list(MEAN),
        "std": list(STD),
    }
    model_path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return correct / len(inputs)


def _cutout(batch: torch.Tensor, generator: torch.Generator, side: float = 0.3) -> torch.Tensor:
    """Random erasing (Zhong et al., 2017): one square per image, filled with a random grey.

    Common practice in real training recipes; it keeps the model from reacting to any flat
    patch it happens to see, so the audit's edits measure reliance on content, not fragility.
    """
    out = batch.clone()
    n, _, height, width = out.shape
    h, w = int(height * side), int(width * side)
    tops = torch.randint(0, height - h + 1, (n,), generator=generator)
    lefts = torch.randint(0, width - w + 1, (n,), generator=generator)
    greys = torch.rand(n, generator=generator)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for i in range(n):
        fill = (greys[i] - mean) / std
        out[i, :, tops[i] : tops[i] + h, lefts[i] : lefts[i] + w] = fill
    return out
