"""Pixel edits as pure numpy functions over uint8 ``[H, W, 3]`` images and boolean masks."""

from __future__ import annotations

import cv2
import numpy as np

# Telea inpainting radius in pixels: how far around each hole pixel the fill looks for colour.
_INPAINT_RADIUS = 3


def fill(image: np.ndarray, mask: np.ndarray, value: int) -> np.ndarray:
    """``image`` with the ``mask`` pixels set to ``value`` in every channel."""
    out = image.copy()
    out[mask] = value
    return out


def hflip(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def inpaint(image: np.ndarray, mask: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Fill ``mask`` from its surroundings (Telea's method), never from the ``keep`` pixels.

    ``keep`` (e.g. the face when removing hair) is masked out during inpainting so that its
    colours do not bleed into the fill, then pasted back unchanged.
    """
    hole = mask if keep is None else (mask | keep)
    out = cv2.inpaint(image, hole.astype(np.uint8) * 255, _INPAINT_RADIUS, cv2.INPAINT_TELEA)
    if keep is not None:
        out[keep] = image[keep]
    return out
