"""Batched inference on uint8 images: the same path for original and probed images.

Model outputs cross the input boundary here. :func:`score` checks them per image: an image
whose probabilities are not finite, or on which the model raises, gets a reason instead, so a
model that fails on some inputs costs those images (recorded as skips), not the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from auditor.errors import ModelOutputError
from auditor.models import LoadedModel
from auditor.preprocess import to_tensor

NON_FINITE = "model output is NaN or infinite"


@dataclass(frozen=True)
class Scores:
    """Class probabilities ``[N, classes]`` (float64; NaN rows where ``failures`` has a reason)
    and, per image, why the model gave it none (None where it did)."""

    probs: np.ndarray
    failures: list[str | None]

    @property
    def scored(self) -> int:
        return sum(f is None for f in self.failures)

    @property
    def first_failure(self) -> str | None:
        return next((f for f in self.failures if f is not None), None)


def predict(model: LoadedModel, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities ``[N, len(classes)]`` (float64) for uint8 images ``[N, H, W, 3]``;
    NaN rows for images the model gives no finite output (see :func:`score`)."""
    return score(model, images, batch_size).probs


def score(model: LoadedModel, images: np.ndarray, batch_size: int) -> Scores:
    """Probabilities for uint8 images ``[N, H, W, 3]``, checked image by image.

    A batch whose forward raises is retried one image at a time, so one bad image does not take
    the others with it; the images that still fail carry the exception's message.
    """
    probs = np.full((len(images), len(model.meta.classes)), np.nan)
    failures: list[str | None] = [None] * len(images)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        try:
            probs[start : start + len(chunk)] = _forward(model, chunk)
        except Exception as exc:  # the model's own code: retried image by image, then recorded
            if len(chunk) == 1:
                failures[start] = _failure(exc)
                continue
            for offset in range(len(chunk)):
                try:
                    probs[start + offset] = _forward(model, chunk[offset : offset + 1])[0]
                except Exception as single:
                    failures[start + offset] = _failure(single)
    for index in np.flatnonzero(~np.isfinite(probs).all(axis=1)):
        failures[index] = failures[index] or NON_FINITE
    return Scores(probs, failures)


def check_first_scores(scored: int, first_failure: str | None) -> None:
    """Stop a run whose first batch got no usable output from the model at all.

    Raises:
        ModelOutputError: not one image was scored, and the model is why (not unreadable files).
    """
    if scored or first_failure is None:
        return
    if first_failure == NON_FINITE:
        raise ModelOutputError(
            "the model returns NaN or infinite outputs for every image of the first batch: "
            "check the metadata's mean/std and the weights"
        )
    raise ModelOutputError(f"the model fails on every image of the first batch: {first_failure}")


def _forward(model: LoadedModel, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        inputs = to_tensor(images, model.meta, model.device)
        probs = model.probabilities(model.head(inputs)).double().cpu().numpy()
    if probs.shape != (len(images), len(model.meta.classes)):
        raise ModelOutputError(
            f"the model's output has shape {list(probs.shape)}, expected "
            f"[{len(images)}, {len(model.meta.classes)}]"
        )
    return probs


def _failure(exc: Exception) -> str:
    """The exception in one line: TorchScript's interpreter puts the model's own error last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    if isinstance(exc, torch.jit.Error):
        return f"the model failed on this image: {lines[-1].removeprefix('builtins.')}"[:300]
    return f"the model failed on this image: {type(exc).__name__}: {lines[0]}"[:300]
