"""The most-affected images per probe arm and subgroup, kept as small PNG thumbnails in bounded
memory (``size`` per arm and subgroup, so the report can show every subgroup its own images)."""

from __future__ import annotations

import base64
import heapq
import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

GALLERY_FILE = "gallery.json"
THUMBNAIL_SIDE = 128
_HEAT = colormaps["viridis"]  # perceptually uniform and colour-blind safe


@dataclass(frozen=True)
class GalleryItem:
    probe: str
    region_source: str
    image_id: str
    label: str
    groups: dict[str, str]
    orig_pred: str
    probed_pred: str
    orig_p_pred: float
    probed_p_orig_pred: float
    direction: str
    original: np.ndarray  # thumbnails, uint8 [h, w, 3]; base64 PNG once written
    heatmap: np.ndarray
    probed: np.ndarray


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` scaled down to at most THUMBNAIL_SIDE on its longer side."""
    image = Image.fromarray(pixels)
    scale = THUMBNAIL_SIDE / max(image.size)
    if scale < 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image)


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def colour(values: np.ndarray) -> np.ndarray:
    """A map as a viridis RGB uint8 image, scaled to its own range."""
    span = float(np.ptp(values)) or 1.0
    return (_HEAT((values - values.min()) / span)[..., :3] * 255).astype(np.uint8)


def heat_image(values: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """:func:`colour`, enlarged to ``side`` pixels on its longer side."""
    image = Image.fromarray(colour(values))
    scale = side / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR))


def heatmap_overlay(
    pixels: np.ndarray, attribution: np.ndarray | None, region: np.ndarray | None
) -> np.ndarray:
    """The image blended with its attribution map (if any); the edit region outlined in white."""
    if attribution is None:
        blended = pixels.copy()
    else:
        blended = (0.45 * pixels + 0.55 * colour(attribution)).astype(np.uint8)
    if region is not None:
        edge = region & ~_eroded(region)
        blended[edge] = 255
    return blended


def _eroded(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


class Gallery:
    """Keeps the ``size`` items with the largest effect for each key (a probe arm and subgroup);
    encodes them at the end."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._heaps: dict[tuple[str, ...], list[tuple[float, int, GalleryItem]]] = {}
        self._tiebreak = itertools.count()

    def offer(self, key: tuple[str, ...], effect: float, make: Callable[[], GalleryItem]) -> None:
        heap = self._heaps.setdefault(key, [])
        if self._size <= 0 or (len(heap) >= self._size and effect <= heap[0][0]):
            return
        entry = (effect, next(self._tiebreak), make())
        if len(heap) < self._size:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)

    def write(self, run_dir: Path) -> None:
        items = [
            _as_json(item)
            for key in sorted(self._heaps)
            for _, _, item in sorted(self._heaps[key], key=lambda e: (-e[0], e[1]))
        ]
        (run_dir / GALLERY_FILE).write_text(json.dumps(items), encoding="utf-8")


def _as_json(item: GalleryItem) -> dict[str, object]:
    """The item with its thumbnails as base64 PNG under ``<name>_png``."""
    data: dict[str, object] = {}
    for spec in fields(item):
        value = getattr(item, spec.name)
        if isinstance(value, np.ndarray):
            data[f"{spec.name}_png"] = png_base64(value)
        else:
            data[spec.name] = value
    return data
