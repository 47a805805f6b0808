"""Region sources: where on an image an edit goes, as one small set of typed objects.

The audit's probes and the hypothesis specs place their edits through the same sources: an
attribution map's top region, the hair around a face, a named face region, a box from a
labels.csv column, a fixed box, or the whole image. A source looks at one :class:`ImageView`
and returns a :data:`Placement`: the region (None for the whole image) and the pixels an
inpainting edit must leave alone, or the reason the image has no such region (which the run
records as a skip instead of guessing).

:func:`random_twin` is the random-region control of both: the same shape moved where it does
not overlap, placed as uniformly as a random region would be (:func:`placebo_region`), seeded by
the image id so no image's control depends on the others. The audit's :func:`random_control`
falls back, where the shape fits nowhere else (the hair round a face), to a random blob of the
same area and compactness (:func:`area_matched_region`).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from auditor.data import BOX_SUFFIX, Sample
from auditor.faces import grabcut_hair, image_geometry
from auditor.localisation import Geometry, box_mask, named_regions
from auditor.preprocess import ReadImage
from auditor.records import AREA_MATCHED, SAME_SHAPE
from auditor.regions import (
    NoPlacebo,
    Region,
    area_matched_region,
    face_masks,
    placebo_region,
    propose_region,
    scale_box,
)

# (edit region or None for the whole image, pixels an inpainting edit must not touch) or why not
Placement = tuple[Region | None, np.ndarray | None] | str
FACE_PARTS = ("eyes", "nose", "mouth", "rest_of_face")  # the face a face-part edit keeps
FEATURES = ("eyes", "nose", "mouth")  # what a hair edit keeps: never removed, never drawn from


class ImageView:
    """One read image as the sources see it: its sample, pixels, attribution maps by method,
    and its face geometry (computed on first use: detecting a face costs more than the rest)."""

    def __init__(
        self,
        sample: Sample,
        image: ReadImage,
        maps: dict[str, np.ndarray],
        geometry: Geometry | None = None,
    ) -> None:
        self.sample = sample
        self.image = image
        self.maps = maps
        self._geometry = geometry

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.image.pixels.shape[0]), int(self.image.pixels.shape[1]))

    @property
    def geometry(self) -> Geometry:
        if self._geometry is None:
            self._geometry = image_geometry(self.sample, self.image)
        return self._geometry


class RegionSource(Protocol):
    """Places one kind of region on an image."""

    def place(self, view: ImageView) -> Placement: ...


@dataclass(frozen=True)
class WholeImage:
    def place(self, view: ImageView) -> Placement:
        return (None, None)


@dataclass(frozen=True)
class AttributionRegion:
    """The connected region holding most of ``method``'s map within the top ``area``."""

    method: str
    area: float

    def place(self, view: ImageView) -> Placement:
        found = propose_region(view.maps[self.method], self.area)
        return (found, None) if found else "attribution map is flat: no region stands out"


@dataclass(frozen=True)
class HairRegion:
    """The hair as GrabCut finds it in the head around the face (:func:`grabcut_hair`), or
    that head less the face where it finds none; the eyes, nose and mouth are kept out of an
    inpainting edit (the hair crop's). The rest of the face is not kept: a fringe removed from
    the forehead is filled from the forehead's skin."""

    def place(self, view: ImageView) -> Placement:
        face_box = view.geometry.face_box
        if face_box is None:
            return "not applicable: no face geometry in labels.csv and no face detected"
        masks = face_masks(face_box, view.shape)
        if masks is None:
            return "not applicable: the face box leaves no head area inside the image"
        ring = masks[0].mask
        found = grabcut_hair(view.image.pixels, face_box, ring)
        hair = ring if found is None else found
        regions = named_regions(dataclasses.replace(view.geometry, boxes={}), view.shape)
        keep = np.logical_or.reduce([regions[p] for p in FEATURES]) & ~hair
        return (Region(hair), keep if keep.any() else None)


@dataclass(frozen=True)
class FacePart:
    """A named anatomical region (``localisation.ANATOMICAL_REGIONS``); the rest of the face
    is kept out of inpainting edits."""

    name: str

    def place(self, view: ImageView) -> Placement:
        # Only the face: labels.csv boxes are BoxColumn's and must not stand in for face parts.
        regions = named_regions(dataclasses.replace(view.geometry, boxes={}), view.shape)
        if self.name not in regions:
            return "no face geometry in labels.csv and no face detected"
        mask = regions[self.name]
        if not mask.any():
            return f"the {self.name} region lies outside the image"
        face = np.logical_or.reduce([regions[p] for p in FACE_PARTS]) & ~mask
        return (Region(mask), face if face.any() else None)


@dataclass(frozen=True)
class BoxColumn:
    """The box a labels.csv column (``<name>_box``) gives for the image."""

    column: str

    def place(self, view: ImageView) -> Placement:
        box = view.sample.boxes.get(self.column.removesuffix(BOX_SUFFIX))
        if box is None:
            return f"no usable {self.column} in labels.csv for this image"
        mask = box_mask(scale_box(box, view.image.original_size, view.shape), view.shape)
        return (Region(mask), None) if mask.any() else f"the {self.column} box is empty"


@dataclass(frozen=True)
class FixedBox:
    """The same box on every image: (x0, y0, x1, y1) as fractions of width and height."""

    box: tuple[float, float, float, float]

    def place(self, view: ImageView) -> Placement:
        x0, y0, x1, y1 = self.box
        height, width = view.shape
        mask = box_mask((x0 * width, y0 * height, x1 * width, y1 * height), view.shape)
        return (Region(mask), None) if mask.any() else "the box covers no pixel at this input size"


def random_twin(
    placed: Placement, *, seed: int, image_id: str, salt: str | None = None
) -> Placement:
    """``placed``'s region moved at random to where it does not overlap itself.

    Seeded by (seed, image id, salt) alone, so adding images or changing the batch size moves
    no other image's twin; the audit salts with the method so each method's placebo is its own.
    The twin keeps no pixels back: it is the same edit, somewhere else.
    """
    if isinstance(placed, str):
        return placed
    region = placed[0]
    assert region is not None, "a whole-image edit has no twin"
    moved = placebo_region(region, _rng(seed, image_id, salt))
    return moved.value if isinstance(moved, NoPlacebo) else (moved, None)


def random_control(
    placed: Placement, *, seed: int, image_id: str, salt: str | None = None
) -> tuple[str, Placement]:
    """The control of ``placed`` and its kind (``records.CONTROL_KINDS``): its random twin
    (:func:`random_twin`, same seed) where the shape fits elsewhere; where it fits nowhere, a
    random blob of the same area and compactness (:func:`area_matched_region`) that also avoids
    the pixels the edit keeps, which it keeps too, so the same edit draws on the same pixels.
    A declined twin stays declined: filling it in would place those controls by another rule.
    """
    twin = random_twin(placed, seed=seed, image_id=image_id, salt=salt)
    if isinstance(placed, str) or twin != NoPlacebo.NO_ROOM.value:
        return SAME_SHAPE, twin
    region, keep = placed
    assert region is not None, "random_twin refuses whole-image edits"
    avoid = keep if keep is not None else np.zeros_like(region.mask)
    blob = area_matched_region(region, avoid, _rng(seed, image_id, salt, AREA_MATCHED))
    return AREA_MATCHED, blob.value if isinstance(blob, NoPlacebo) else (blob, keep)


def _rng(seed: int, image_id: str, *salts: str | None) -> np.random.Generator:
    """The stream of one image's control: (seed, image id, salts) alone fix it."""
    parts = [seed, zlib.crc32(image_id.encode())]
    parts += [zlib.crc32(salt.encode()) for salt in salts if salt is not None]
    return np.random.default_rng(parts)
