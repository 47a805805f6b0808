"""Edit regions: from attribution maps, from face geometry, and their random placebo twins.

Numpy and scipy only. Masks are boolean ``[H, W]`` at the model's input resolution; boxes are
``(x0, y0, x1, y1)`` with exclusive ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# Pixel-level maps (gradients) are speckled; a light blur, relative to image size, lets the top
# pixels form regions instead of dust. Grad-CAM maps are already smooth and barely change.
_SMOOTHING = 0.015

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Region:
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def box(self) -> Box:
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def propose_region(attribution: np.ndarray, area_fraction: float) -> Region | None:
    """The connected component holding the most attribution within the top ``area_fraction``.

    Returns None when the map is flat (no pixel stands out), as happens when a model's output
    does not depend on its input.
    """
    smoothed = ndimage.gaussian_filter(
        attribution.astype(np.float64), sigma=_SMOOTHING * max(attribution.shape)
    )
    if not np.isfinite(smoothed).all() or np.ptp(smoothed) <= 1e-12 * max(
        np.abs(smoothed).max(), 1
    ):
        return None
    k = max(1, round(area_fraction * smoothed.size))
    top = np.zeros(smoothed.size, dtype=bool)
    top[np.argpartition(smoothed.ravel(), -k)[-k:]] = True
    top = top.reshape(smoothed.shape)
    labels, count = ndimage.label(top, structure=_EIGHT_CONNECTED)
    mass = ndimage.sum_labels(smoothed, labels, index=np.arange(1, count + 1))
    return Region(labels == int(np.argmax(mass)) + 1)


def placebo_region(region: Region, rng: np.random.Generator) -> Region | None:
    """The same shape moved to a random place where it does not overlap ``region``.

    Every placement is scored at once (a correlation of the mask with its own shape gives the
    overlap at each offset), so "no room" is exact, not the result of unlucky tries.
    Returns None when no placement avoids the region.
    """
    x0, y0, x1, y1 = region.box
    shape = region.mask[y0:y1, x0:x1]
    overlap = signal.correlate(
        region.mask.astype(np.float32), shape.astype(np.float32), mode="valid"
    )
    free = np.argwhere(overlap < 0.5)
    if len(free) == 0:
        return None
    top, left = free[rng.integers(len(free))]
    moved = np.zeros_like(region.mask)
    moved[top : top + shape.shape[0], left : left + shape.shape[1]] = shape
    return Region(moved)


def scale_box(
    box: tuple[float, float, float, float], from_size: tuple[int, int], to_size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Rescale a box from a (width, height) ``from_size`` image to a (height, width) ``to_size``."""
    sx = to_size[1] / from_size[0]
    sy = to_size[0] / from_size[1]
    x0, y0, x1, y1 = box
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def face_masks(
    face_box: tuple[float, float, float, float], shape: tuple[int, int]
) -> tuple[Region, Region] | None:
    """(hair, face) regions from a face box: the head around the face, and the face ellipse.

    The head is an ellipse 1.7x the face width and 1.6x its height, centred slightly above the
    face's centre; the hair region is that head less the face and less the neck below the chin.
    Returns None when the hair region falls outside the image.
    """
    x0, y0, x1, y1 = face_box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    fw, fh = max(x1 - x0, 1.0) / 2, max(y1 - y0, 1.0) / 2
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    face = ((xx - cx) / fw) ** 2 + ((yy - cy) / fh) ** 2 <= 1.0
    head = ((xx - cx) / (1.7 * fw)) ** 2 + ((yy - (cy - 0.1 * fh)) / (1.6 * fh)) ** 2 <= 1.0
    neck = (yy > cy + 0.6 * fh) & (np.abs(xx - cx) < 0.7 * fw)
    hair = head & ~face & ~neck
    if not hair.any() or not face.any():
        return None
    return Region(hair), Region(face)
