"""Edit regions: from attribution maps, from face geometry, and their random controls.

Numpy, scipy and (for the area-matched control) scikit-image. Masks are boolean ``[H, W]`` at
the model's input resolution; boxes are ``(x0, y0, x1, y1)`` with exclusive ends.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage, signal

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# Pixel-level maps (gradients) are speckled; a light blur, relative to image size, lets the top
# pixels form regions instead of dust. Grad-CAM maps are already smooth and barely change.
_SMOOTHING = 0.015
_BALANCING_ROUNDS = 40
_BALANCED = 0.97  # the placebo's acceptance is at least this wherever balancing converged
_NEGLIGIBLE = 1e-9  # of the largest reach: below it, rounding of the FFT convolutions
# The area-matched control: its compactness within this fraction of the region's; the seeds it
# tries; the bisection steps on the roughness of its random metric, up to _MAX_ROUGHNESS; and
# that metric's correlation length, as a fraction of the blob's radius.
COMPACTNESS_TOLERANCE = 0.1
_CONTROL_SEEDS = 8
_ROUGHNESS_STEPS = 7
_MAX_ROUGHNESS = 8.0
_ROUGHNESS_LENGTH = 0.1

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


class NoPlacebo(enum.Enum):
    """Why a region has no placebo twin, as the run records it."""

    NO_ROOM = "no room for a random region of the same shape that does not overlap"
    DECLINED = "placebo draw declined so that placebos stay placed as if at random"
    NO_AREA_MATCH = (
        "no room for a random region of the same shape, nor for one of the same area and "
        "compactness, that avoids the region and the pixels it keeps"
    )


def placebo_region(region: Region, rng: np.random.Generator) -> Region | NoPlacebo:
    """The same shape moved to a random place where it does not overlap ``region``.

    Drawing uniformly among the places that avoid the region would push placebos toward the
    border, where edits flip less: a central region has few such places, and each is chosen
    often. Instead the twin is one Metropolis–Hastings step whose target is the uniform
    placement of the shape: the pair (region, twin) is then exchangeable whenever the region
    itself was placed uniformly, so a region that means nothing flips no more than its twin,
    in expectation, at any sample size. The step is sometimes declined (the image then has no
    placebo); a proposal balanced over the non-overlapping places (:func:`_balanced_weights`)
    keeps that rare.
    """
    x0, y0, x1, y1 = region.box
    shape = region.mask[y0:y1, x0:x1]
    weights, reach = _balanced_weights(shape, region.mask.shape)
    # Every placement is scored at once: a correlation of the mask with its own shape gives
    # the overlap at each offset, so "no room" is exact, not the result of unlucky tries.
    overlap = signal.correlate(
        region.mask.astype(np.float64), shape.astype(np.float64), mode="valid", method="fft"
    )
    free = overlap < 0.5
    if not free.any():
        return NoPlacebo.NO_ROOM
    proposal = np.where(free, weights, 0.0).ravel()
    normaliser = float(proposal.sum())
    if normaliser <= 0:  # balancing gave every free place no weight: no proposal is possible
        return NoPlacebo.DECLINED
    top, left = np.unravel_index(rng.choice(proposal.size, p=proposal / normaliser), free.shape)
    # Accept with min(1, q(back) / q(forth)), which for this proposal is the ratio of a place's
    # weight times its normaliser ("reach") here and there.
    if rng.random() * reach[top, left] > weights[y0, x0] * normaliser:
        return NoPlacebo.DECLINED
    moved = np.zeros_like(region.mask)
    moved[top : top + shape.shape[0], left : left + shape.shape[1]] = shape
    return Region(moved)


def compactness(mask: np.ndarray) -> float:
    """The isoperimetric ratio 4πA/P² of a mask: 1 for a disk, less the longer or more ragged
    the shape (a ring round a face is about 0.2). The perimeter is scikit-image's, which
    weighs each boundary pixel by its neighbourhood, holes' boundaries included."""
    from skimage.measure import perimeter

    length = float(perimeter(mask))
    return 4 * math.pi * float(mask.sum()) / length**2 if length > 0 else 0.0


def area_matched_region(
    region: Region, avoid: np.ndarray, rng: np.random.Generator
) -> Region | NoPlacebo:
    """A random blob of ``region``'s area and compactness that overlaps neither the region nor
    ``avoid``: the control where the shape itself fits nowhere else (a ring round a face).

    Area and compactness are what an inpainting or fill edit's strength depends on: how much is
    removed, and how far its pixels lie from the ones it is filled from. The blob has exactly
    the region's area and its compactness within ``COMPACTNESS_TOLERANCE``. Its seed is drawn
    uniformly from the free pixels (of free patches large enough), and it grows from there by a
    random metric whose roughness is bisected until the compactness matches (a disk at
    roughness 0, more ragged above); a seed where even the disk is too ragged for the target
    (a narrow gap) is left for another. Nothing about the image's content places it. Unlike the
    same-shape placebo it is not exchangeable with the region, so it subtracts what an edit of
    that size does somewhere else, not what the same edit would do at a random place.
    """
    free = ~(region.mask | avoid)
    labels, _ = ndimage.label(free, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    seeds = np.flatnonzero(np.isin(labels.ravel(), np.flatnonzero(sizes >= region.area)))
    if seeds.size == 0:
        return NoPlacebo.NO_AREA_MATCH
    target = compactness(region.mask)
    length = _ROUGHNESS_LENGTH * math.sqrt(region.area / math.pi)
    for _ in range(_CONTROL_SEEDS):
        seed = np.unravel_index(seeds[rng.integers(seeds.size)], free.shape)
        field = ndimage.gaussian_filter(rng.standard_normal(free.shape), length)
        field /= max(float(field.std()), 1e-12)
        blob = _matching_blob(free, (int(seed[0]), int(seed[1])), field, region.area, target)
        if blob is not None:
            return Region(blob)
    return NoPlacebo.NO_AREA_MATCH


def _matching_blob(
    free: np.ndarray, seed: tuple[int, int], field: np.ndarray, area: int, target: float
) -> np.ndarray | None:
    """The blob grown from ``seed`` whose compactness is within tolerance of ``target``, by
    bisection on the roughness; None when none of the steps matches."""
    low, high, roughness = 0.0, _MAX_ROUGHNESS, 0.0
    for _ in range(_ROUGHNESS_STEPS + 1):
        blob = _grow(free, seed, np.exp(roughness * field), area)
        found = compactness(blob)
        if abs(found - target) <= COMPACTNESS_TOLERANCE * target:
            return blob
        if found < target and roughness == 0:
            return None  # even the smoothest blob from here is too ragged: walls close it in
        low, high = (roughness, high) if found > target else (low, roughness)
        roughness = (low + high) / 2
    return None


def _grow(free: np.ndarray, seed: tuple[int, int], cost: np.ndarray, area: int) -> np.ndarray:
    """The ``area`` free pixels nearest ``seed`` in the metric whose cost per step is ``cost``.

    Every pixel's predecessor on its shortest path is nearer, so every prefix of that order is
    one 8-connected piece: the blob has exactly ``area`` pixels (its free patch has at least
    that many) and never crosses a pixel that is not free.
    """
    from skimage.graph import MCP_Geometric

    steps = np.where(free, cost, np.inf)
    # Dijkstra stops once the blob's pixels are settled: they are the first ones it settles.
    distance, _ = MCP_Geometric(steps, fully_connected=True).find_costs(
        [seed], max_coverage=min(1.0, (area + 1) / free.size)
    )
    nearest = np.argsort(distance, axis=None, kind="stable")[:area]
    blob = np.zeros(free.size, dtype=bool)
    blob[nearest] = True
    return blob.reshape(free.shape)


def _overlap_kernel(shape: np.ndarray) -> np.ndarray:
    """Whether the shape overlaps itself shifted by (dy, dx), indexed [dy + h - 1, dx + w - 1]."""
    as_float = shape.astype(np.float64)
    return signal.correlate(as_float, as_float, mode="full", method="fft") > 0.5


@functools.lru_cache(maxsize=64)
def _balanced_weights_cached(
    shape_bytes: bytes, shape_size: tuple[int, int], image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    shape = np.frombuffer(shape_bytes, dtype=bool).reshape(shape_size)
    places = (image_size[0] - shape_size[0] + 1, image_size[1] - shape_size[1] + 1)
    overlaps = _overlap_kernel(shape).astype(np.float64)
    # The convolution with the overlap kernel runs every round: its transform is taken once.
    padded = tuple(
        sp_fft.next_fast_len(p + k - 1, real=True)
        for p, k in zip(places, overlaps.shape, strict=True)
    )
    kernel = sp_fft.rfft2(overlaps, padded)
    rows = slice(shape_size[0] - 1, shape_size[0] - 1 + places[0])
    columns = slice(shape_size[1] - 1, shape_size[1] - 1 + places[1])

    def free_mass(weights: np.ndarray) -> np.ndarray:
        """Σ of ``weights`` over the places that do not overlap each place."""
        overlapping = sp_fft.irfft2(sp_fft.rfft2(weights, padded) * kernel, padded)
        return np.clip(weights.sum() - overlapping[rows, columns], 0.0, None)

    # Symmetric Sinkhorn scaling: weights w with w · free_mass(w) equal everywhere make every
    # proposal acceptable; a few rounds get within a few per cent.
    weights = np.ones(places)
    for _ in range(_BALANCING_ROUNDS):
        mass = free_mass(weights)
        reach = weights * mass
        live = reach > _NEGLIGIBLE * reach.max(initial=0.0)
        if not live.any() or reach[live].min() >= _BALANCED * reach[live].max():
            break
        weights = np.sqrt(np.divide(weights, mass, out=np.zeros(places), where=live))
    reach = weights * free_mass(weights)
    weights.setflags(write=False)
    reach.setflags(write=False)
    return weights, reach


def _balanced_weights(
    shape: np.ndarray, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Proposal weights over the shape's places (top-left offsets) and each place's reach.

    Cached by shape: the probes of one image that edit the same region share the work.
    """
    return _balanced_weights_cached(
        np.ascontiguousarray(shape).tobytes(),
        (int(shape.shape[0]), int(shape.shape[1])),
        (int(image_size[0]), int(image_size[1])),
    )


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
