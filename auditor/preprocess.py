"""The one preprocessing path: RGB, bilinear resize of the whole image, [0, 1], mean/std.

Probes edit the resized uint8 image (what the model sees), so original and probed images pass
through exactly the same arithmetic and no drift creeps in between them. The resize is PIL's
bilinear filter, the same that ``torchvision.transforms.Resize`` applies to PIL images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from auditor.models import ModelMeta


class ImageReadError(Exception):
    """An image file cannot be decoded; the pipeline records it as a skip."""


@dataclass(frozen=True)
class ReadImage:
    """A resized RGB image (uint8 ``[H, W, 3]`` at the model's input size) and its file size."""

    pixels: np.ndarray
    original_size: tuple[int, int]  # (width, height) of the file


def read_image(path: Path, input_size: tuple[int, int]) -> ReadImage:
    """Decode ``path`` fully and resize it to ``input_size`` (height, width).

    Raises:
        ImageReadError: the file is unreadable, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"unreadable image: {exc}") from exc
    height, width = input_size
    resized = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return ReadImage(np.asarray(resized, dtype=np.uint8).copy(), rgb.size)


def to_tensor(images: np.ndarray, meta: ModelMeta, device: torch.device) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` → normalized float32 ``[N, 3, H, W]`` on ``device``."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(meta.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta.std, device=device).view(1, 3, 1, 1)
    return (batch - mean) / std
