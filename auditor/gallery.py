"""The most-affected images per probe arm and subgroup, kept as small PNG thumbnails in bounded
memory (``size`` per arm and subgroup, so the report can show every subgroup its own images)."""

from __future__ import annotations

import base64
import heapq
import io
from collections.abc import Callable
from dataclasses import dataclass, fields

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
    # The edit region at thumbnail size, bool [h, w]; None where the probe edits the whole image.
    # Kept apart from the heatmap so the report outlines it after blurring the face.
    region: np.ndarray | None


_IMAGE_FIELDS = ("original", "heatmap", "probed", "region")  # stored as <name>_png


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` scaled down to at most THUMBNAIL_SIDE on its longer side."""
    image = Image.fromarray(pixels)
    scale = THUMBNAIL_SIDE / max(image.size)
    if scale < 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image)


def png_base64(pixels: np.ndarray) -> str:
    """Lossless, at zlib level 1: every batch encodes its own gallery candidates, most of which
    the combined gallery drops, and level 1 is 3x faster than the default for 15 % more bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
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


def heatmap_overlay(pixels: np.ndarray, attribution: np.ndarray | None) -> np.ndarray:
    """The image blended with its attribution map; the image itself where there is none.

    The edit region is not drawn in: the report outlines it (``reports.images.outlined``) after
    it has blurred the face, which would otherwise blur the outline away.
    """
    if attribution is None:
        return pixels.copy()
    return (0.45 * pixels + 0.55 * colour(attribution)).astype(np.uint8)


def region_thumbnail(mask: np.ndarray) -> np.ndarray:
    """A region mask scaled as :func:`thumbnail` scales its image: a thumbnail pixel is in the
    region when at least half of it was."""
    return thumbnail(mask.astype(np.uint8) * 255) >= 128


class Gallery:
    """Keeps the ``size`` items with the largest effect for each key (a probe arm and subgroup).

    Ties in effect are broken by image id, so the kept items do not depend on the order in
    which they are offered: one batch's gallery and the merge of many batches' galleries keep
    the same items. Items are JSON-ready (thumbnails as base64 PNG), so a batch's candidates
    can be stored with its results and merged when the run is combined.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._heaps: dict[tuple[str, ...], list[tuple[float, str, dict[str, object]]]] = {}

    def offer(
        self,
        key: tuple[str, ...],
        effect: float,
        image_id: str,
        make: Callable[[], dict[str, object]],
    ) -> None:
        """Keep the item ``make()`` builds if it ranks among the key's ``size`` largest;
        ``make`` is called only then (thumbnails cost time)."""
        heap = self._heaps.setdefault(key, [])
        rank = (effect, image_id)
        if self._size <= 0 or (len(heap) >= self._size and rank <= heap[0][:2]):
            return
        entry = (effect, image_id, make())
        if len(heap) < self._size:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)

    def add(self, candidate: GalleryCandidate) -> None:
        """Offer a candidate another gallery kept (merging batches' galleries)."""
        self.offer(candidate.key, candidate.effect, candidate.image_id, lambda: candidate.item)

    def candidates(self) -> list[GalleryCandidate]:
        """What is kept, key by key, ready to be offered to another gallery."""
        return [
            GalleryCandidate(key, effect, image_id, item)
            for key in sorted(self._heaps)
            for effect, image_id, item in sorted(self._heaps[key], key=_best_first)
        ]

    def items(self) -> list[dict[str, object]]:
        """The kept items, key by key and largest effect first: the contents of gallery.json."""
        return [c.item for c in self.candidates()]


@dataclass(frozen=True)
class GalleryCandidate:
    """One kept item under its key, with the effect and image id that rank it."""

    key: tuple[str, ...]
    effect: float
    image_id: str
    item: dict[str, object]


def _best_first(entry: tuple[float, str, dict[str, object]]) -> tuple[float, str]:
    return (-entry[0], entry[1])


def encode(item: GalleryItem) -> dict[str, object]:
    """The item as stored in gallery.json: thumbnails and region as base64 PNG under
    ``<name>_png`` (null where there is no region)."""
    data: dict[str, object] = {}
    for spec in fields(item):
        value = getattr(item, spec.name)
        if spec.name in _IMAGE_FIELDS:
            data[f"{spec.name}_png"] = None if value is None else png_base64(value)
        else:
            data[spec.name] = value
    return data
