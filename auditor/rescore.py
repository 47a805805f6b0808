"""Batched inference on uint8 images: the same path for original and probed images."""

from __future__ import annotations

import numpy as np
import torch

from auditor.models import LoadedModel
from auditor.preprocess import to_tensor


def predict(model: LoadedModel, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities ``[N, len(classes)]`` (float64) for uint8 images ``[N, H, W, 3]``."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            inputs = to_tensor(images[start : start + batch_size], model.meta, model.device)
            out.append(model.probabilities(model.head(inputs)).double().cpu().numpy())
    if not out:
        return np.zeros((0, len(model.meta.classes)))
    return np.concatenate(out)
