"""The random-region control is fair: a guided region that means nothing beats it no more than α.

The world: edits flip more near the centre of the image than at its border (as they do on
faces), and the "guided" region is placed uniformly at random, so it carries no information. A
placebo that avoided the guided region by drawing uniformly among the places left would sit
nearer the border on average, and the guided-vs-placebo McNemar test would find a "guided"
effect that is only position. :func:`placebo_region` must not.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import signal
from scipy.stats import binom

from auditor.regions import NoPlacebo, Region, placebo_region
from auditor.stats import mcnemar_p

SIZE = 48
ALPHA = 0.05
REPLICATES = 200
IMAGES = 250


def _with_a_corner_cut(height: int, width: int) -> np.ndarray:
    shape = np.ones((height, width), bool)
    shape[: height // 3, : width // 3] = False
    return shape


# Region shapes of several sizes and aspect ratios, not boxes.
SHAPES = [_with_a_corner_cut(h, w) for h, w in [(8, 8), (12, 10), (16, 16), (10, 20), (20, 14)]]

Placer = Callable[[Region, np.random.Generator], Region | NoPlacebo]


def _uniformly_placed(rng: np.random.Generator) -> Region:
    shape = SHAPES[rng.integers(len(SHAPES))]
    top = rng.integers(SIZE - shape.shape[0] + 1)
    left = rng.integers(SIZE - shape.shape[1] + 1)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[top : top + shape.shape[0], left : left + shape.shape[1]] = shape
    return Region(mask)


def _flip_probability(region: Region) -> float:
    """Edits near the centre flip far more often than at the border."""
    x0, y0, x1, y1 = region.box
    squared = ((x0 + x1) / 2 - SIZE / 2) ** 2 + ((y0 + y1) / 2 - SIZE / 2) ** 2
    return 0.05 + 0.6 * float(np.exp(-squared / (2 * 8.0**2)))


def _uniform_among_free_places(region: Region, rng: np.random.Generator) -> Region | NoPlacebo:
    """The naive control: any place that avoids the region, all equally likely."""
    x0, y0, x1, y1 = region.box
    shape = region.mask[y0:y1, x0:x1]
    overlap = signal.correlate(region.mask.astype(float), shape.astype(float), mode="valid")
    free = np.argwhere(overlap < 0.5)
    top, left = free[rng.integers(len(free))]
    moved = np.zeros_like(region.mask)
    moved[top : top + shape.shape[0], left : left + shape.shape[1]] = shape
    return Region(moved)


def _rejections(place: Placer, seed: int) -> tuple[int, float]:
    """How many of the null replicates McNemar rejects at α, and the share of images left
    without a placebo."""
    rng = np.random.default_rng(seed)
    rejected, missing = 0, 0
    for _ in range(REPLICATES):
        guided_only = placebo_only = 0
        for _ in range(IMAGES):
            guided = _uniformly_placed(rng)
            placebo = place(guided, rng)
            if isinstance(placebo, NoPlacebo):
                missing += 1
                continue
            assert not (placebo.mask & guided.mask).any() and placebo.area == guided.area
            guided_flips = rng.random() < _flip_probability(guided)
            placebo_flips = rng.random() < _flip_probability(placebo)
            guided_only += guided_flips and not placebo_flips
            placebo_only += placebo_flips and not guided_flips
        if guided_only + placebo_only and mcnemar_p(guided_only, placebo_only) <= ALPHA:
            rejected += 1
    return rejected, missing / (REPLICATES * IMAGES)


def _band() -> tuple[float, float]:
    """The binomial 95 % band of the number of rejections at α."""
    low, high = binom.interval(0.95, REPLICATES, ALPHA)
    return float(low), float(high)


def test_a_meaningless_guided_region_beats_its_placebo_no_more_than_alpha() -> None:
    rejected, missing = _rejections(placebo_region, seed=7)
    # The exact McNemar test is conservative: fewer rejections than α are expected, more are not
    # allowed beyond chance.
    assert rejected <= _band()[1], f"{rejected} of {REPLICATES} null replicates rejected"
    assert missing < 0.02, f"{missing:.1%} of images had no placebo"


def test_the_null_world_catches_a_placebo_pushed_to_the_border() -> None:
    """The same world rejects far more than α for the naive control: the test above can fail."""
    rejected, _ = _rejections(_uniform_among_free_places, seed=7)
    assert rejected > _band()[1], f"only {rejected} of {REPLICATES} rejected"


@pytest.mark.parametrize("seed", range(3))
def test_placebos_sit_as_far_from_the_centre_as_guided_regions(seed: int) -> None:
    """The mechanism behind the null rate: the placebo's position has the guided one's law."""
    rng = np.random.default_rng(seed)
    distances: list[tuple[float, float]] = []
    for _ in range(3000):
        guided = _uniformly_placed(rng)
        placebo = placebo_region(guided, rng)
        if isinstance(placebo, Region):
            distances.append((_centre_distance(guided), _centre_distance(placebo)))
    difference = np.subtract(*np.array(distances).T)
    standard_error = difference.std() / np.sqrt(len(difference))
    assert abs(difference.mean()) < 3 * standard_error


def _centre_distance(region: Region) -> float:
    x0, y0, x1, y1 = region.box
    return float(np.hypot((x0 + x1) / 2 - SIZE / 2, (y0 + y1) / 2 - SIZE / 2))
