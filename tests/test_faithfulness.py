"""Faithfulness metrics, specified with a hand-made model whose evidence is known exactly.

The scorer's P(class 1) is the mean brightness of a fixed square at the top of the image, so a
map that highlights the square is faithful by construction, one that highlights everything else
is anti-faithful, and a flat map carries no information. The top rows also catch raster-order
tie-breaking, which would remove the square first and make a flat map look faithful.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from auditor.faithfulness import (
    METRICS,
    RANDOM,
    FaithfulnessResult,
    blur_baseline,
    concatenate,
    evaluate,
    impute,
    mean_ci,
    per_image,
    relevance_rank,
    smooth_random_map,
    summarise,
)

SIZE = 48
SQUARE = (slice(0, 16), slice(16, 32))
N_IMAGES = 12
TARGET = 1


def square_scorer(images: np.ndarray) -> np.ndarray:
    """P(class 1) = mean brightness inside SQUARE."""
    p = images[:, SQUARE[0], SQUARE[1]].mean(axis=(1, 2, 3)) / 255.0
    return np.stack([1.0 - p, p], axis=1)


def constant_scorer(value: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: np.tile([1.0 - value, value], (len(images), 1))


def make_images(n: int) -> np.ndarray:
    """Dark noisy backgrounds with a bright noisy square where the scorer looks."""
    rng = np.random.default_rng(0)
    images = rng.normal(40, 15, (n, SIZE, SIZE, 3))
    images[:, SQUARE[0], SQUARE[1]] += rng.uniform(160, 180, (n, 1, 1, 1))
    return np.clip(images, 0, 255).astype(np.uint8)


def square_maps(n: int) -> np.ndarray:
    maps = np.zeros((n, SIZE, SIZE), dtype=np.float32)
    maps[:, SQUARE[0], SQUARE[1]] = 1.0
    return maps


def targets(n: int) -> np.ndarray:
    return np.full(n, TARGET)


def run(maps: np.ndarray) -> FaithfulnessResult:
    return evaluate(make_images(len(maps)), maps, targets(len(maps)), square_scorer, seed=0)


@pytest.fixture(scope="module")
def true_map() -> FaithfulnessResult:
    return run(square_maps(N_IMAGES))


@pytest.fixture(scope="module")
def complement_map() -> FaithfulnessResult:
    return run(1.0 - square_maps(N_IMAGES))


@pytest.fixture(scope="module")
def flat_map() -> FaithfulnessResult:
    return run(np.zeros((N_IMAGES, SIZE, SIZE), dtype=np.float32))


def test_a_map_of_the_evidence_beats_the_random_map_on_every_metric(
    true_map: FaithfulnessResult,
) -> None:
    summaries = {s.metric: s for s in true_map.summaries}
    assert set(summaries) == set(METRICS)
    for metric, summary in summaries.items():
        assert summary.beats_random, metric
        assert summary.n_images == N_IMAGES
        assert summary.method_ci is not None and summary.random_ci is not None
        if summary.better == "lower":
            assert summary.method_ci[1] < summary.random_ci[0], metric
        else:
            assert summary.method_ci[0] > summary.random_ci[1], metric


def test_a_map_of_everything_but_the_evidence_deletes_worse_than_random(
    complement_map: FaithfulnessResult,
) -> None:
    deletion = next(s for s in complement_map.summaries if s.metric == "deletion_auc")
    assert not deletion.beats_random
    assert deletion.difference_ci is not None and deletion.difference_ci[0] > 0


def test_a_flat_map_does_not_beat_random(
    flat_map: FaithfulnessResult, true_map: FaithfulnessResult
) -> None:
    for flat, true in zip(flat_map.summaries, true_map.summaries, strict=True):
        assert not flat.beats_random, flat.metric
        assert abs(flat.difference) < abs(true.difference) / 5, flat.metric
    values = flat_map.per_image
    for metric in ("deletion_auc", "road_morf"):  # the random map breaks the flat map's ties
        np.testing.assert_array_equal(values[metric], values[RANDOM + metric])


def test_road_keeps_more_of_the_score_when_the_least_relevant_pixels_go_first(
    true_map: FaithfulnessResult,
) -> None:
    values = true_map.per_image
    assert (values["road_morf"] < values["road_lerf"]).all()


def test_per_image_values_average_to_the_summaries(true_map: FaithfulnessResult) -> None:
    for summary in true_map.summaries:
        method = true_map.per_image[summary.metric]
        random = true_map.per_image[RANDOM + summary.metric]
        assert summary.method_mean == pytest.approx(method.mean())
        assert summary.random_mean == pytest.approx(random.mean())
        assert summary.difference == pytest.approx((method - random).mean())


def test_curves_start_at_the_original_score_and_end_at_the_baseline_score(
    true_map: FaithfulnessResult,
) -> None:
    images = make_images(N_IMAGES)
    original = square_scorer(images)[:, TARGET]
    baseline = square_scorer(np.stack([blur_baseline(image) for image in images]))[:, TARGET]
    values = true_map.per_image
    for name in ("deletion_curve", "random_deletion_curve"):
        np.testing.assert_allclose(values[name][:, 0], original)
        np.testing.assert_allclose(values[name][:, -1], baseline)
    for name in ("insertion_curve", "random_insertion_curve"):
        np.testing.assert_allclose(values[name][:, 0], baseline)
        np.testing.assert_allclose(values[name][:, -1], original)
    assert values["deletion_curve"].shape == (N_IMAGES, len(true_map.fractions))
    assert values["road_morf_curve"].shape == (N_IMAGES, len(true_map.road_percentiles))


def test_the_baseline_removes_texture_but_keeps_the_colour() -> None:
    rng = np.random.default_rng(0)
    colour = np.array([200.0, 100.0, 50.0])
    image = np.clip(rng.normal(colour, 30, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    baseline = blur_baseline(image)
    assert baseline.dtype == np.uint8 and baseline.shape == image.shape
    assert (baseline.std(axis=(0, 1)) < 5).all()
    np.testing.assert_allclose(baseline.mean(axis=(0, 1)), colour, atol=3)


def test_every_auc_of_a_constant_scorer_is_that_constant() -> None:
    images = make_images(3)
    result = evaluate(
        images, square_maps(3), targets(3), constant_scorer(0.7), seed=0, road_percentiles=(50,)
    )
    for summary in result.summaries:
        assert summary.method_mean == pytest.approx(0.7)
        assert summary.method_ci == pytest.approx((0.7, 0.7))
        assert summary.random_mean == pytest.approx(0.7)
        assert summary.difference_ci == pytest.approx((0.0, 0.0))
        assert not summary.beats_random


def test_the_same_seed_gives_the_same_values_and_another_seed_another_random_map() -> None:
    images, maps = make_images(3), np.zeros((3, SIZE, SIZE), dtype=np.float32)

    def values(seed: int) -> dict[str, np.ndarray]:
        return per_image(images, maps, targets(3), square_scorer, seed=seed, road_percentiles=(50,))

    first, again, other = values(0), values(0), values(1)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["random_deletion_curve"], other["random_deletion_curve"])


def test_values_do_not_depend_on_how_images_are_batched() -> None:
    images, maps = make_images(5), square_maps(5)
    calls: list[int] = []

    def counting_scorer(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return square_scorer(batch)

    def values(start: int, stop: int, images_per_call: int) -> dict[str, np.ndarray]:
        return per_image(
            images[start:stop],
            maps[start:stop],
            targets(stop - start),
            counting_scorer,
            seed=0,
            road_percentiles=(50,),
            images_per_call=images_per_call,
        )

    whole = values(0, 5, images_per_call=2)
    assert len(calls) == 3  # all perturbed versions of two images go to the scorer together
    streamed = concatenate([values(0, 2, 8), values(2, 5, 8)])
    for key in whole:
        np.testing.assert_array_equal(whole[key], streamed[key])


def test_no_images_give_empty_values_and_no_summaries() -> None:
    empty = per_image(make_images(0), square_maps(0), targets(0), square_scorer, seed=0, steps=4)
    assert empty["deletion_auc"].shape == (0,)
    assert empty["deletion_curve"].shape == (0, 5)
    assert summarise(empty, seed=0) == []


def test_higher_values_come_first_and_ties_follow_the_tie_break_not_raster_order() -> None:
    tie_break = np.random.default_rng(0).random((4, 4))
    flat = relevance_rank(np.zeros((4, 4)), tie_break)
    np.testing.assert_array_equal(flat.ravel(), np.argsort(np.argsort(-tie_break.ravel())))
    ramp = relevance_rank(np.arange(16.0).reshape(4, 4), tie_break)
    np.testing.assert_array_equal(ramp.ravel(), np.arange(16)[::-1])


def test_the_difference_is_paired_image_by_image() -> None:
    """Hard and easy images spread both means widely; the method is better on every one."""
    random = np.linspace(0.1, 0.9, 20)
    values = {metric: random.copy() for metric in METRICS}
    values |= {RANDOM + metric: random.copy() for metric in METRICS}
    values["deletion_auc"] = random - np.random.default_rng(0).uniform(0.01, 0.03, 20)
    deletion = summarise(values, seed=0)[0]
    assert deletion.metric == "deletion_auc"
    assert deletion.method_ci is not None and deletion.random_ci is not None
    assert deletion.method_ci[1] > deletion.random_ci[0]  # the two intervals overlap
    assert deletion.difference_ci is not None and deletion.difference_ci[1] < 0
    assert deletion.beats_random


def test_the_interval_of_the_mean_agrees_with_the_normal_approximation() -> None:
    values = np.random.default_rng(0).normal(0.5, 0.1, 400)
    interval = mean_ci(values, np.random.default_rng(1))
    assert interval is not None
    low, high = interval
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half_width, abs=0.002)
    assert high == pytest.approx(values.mean() + half_width, abs=0.002)
    assert mean_ci(values[:1], np.random.default_rng(1)) is None


def test_results_serialise_to_strict_json(true_map: FaithfulnessResult) -> None:
    document = json.loads(json.dumps(true_map.to_dict(), allow_nan=False))
    assert len(document["per_image"]["deletion_auc"]) == N_IMAGES
    assert {s["metric"] for s in document["summaries"]} == set(METRICS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"maps": np.zeros((2, SIZE, SIZE - 1))}, "maps must be"),
        ({"maps": np.full((2, SIZE, SIZE), np.nan)}, "NaN"),
        ({"images": make_images(2).astype(np.float32)}, "uint8"),
        ({"targets": np.array([0.0, 1.0])}, "targets must be integer"),
        ({"targets": np.array([0, 2])}, r"targets must lie in \[0, 2\)"),
        ({"road_percentiles": (0, 50)}, "strictly in"),
        ({"road_percentiles": ()}, "must be given"),
    ],
)
def test_inconsistent_inputs_are_refused(change: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "images": make_images(2),
        "maps": square_maps(2),
        "targets": targets(2),
        "road_percentiles": (50,),
    } | change
    with pytest.raises(ValueError, match=message):
        per_image(scorer=square_scorer, seed=0, **arguments)  # type: ignore[arg-type]


def test_the_random_map_removes_contiguous_blobs_without_ties() -> None:
    """The chance baseline perturbs as a CAM does: its top quarter is a few blobs, not a dither."""
    random_map = smooth_random_map((96, 96), np.random.default_rng(0))
    assert np.unique(random_map).size == random_map.size
    top = (random_map >= np.quantile(random_map, 0.75)).astype(np.uint8)
    blobs, _ = cv2.connectedComponents(top)
    assert blobs - 1 <= 4


def test_road_imputation_continues_a_linear_gradient_through_the_removed_pixels() -> None:
    """Each removed pixel is the weighted mean of its eight neighbours, and a plane is its own
    such mean: a blob removed from a ramp comes back as the ramp, up to ROAD's small noise."""
    ramp = np.linspace(40, 200, 96)
    image = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1).round().astype(np.uint8)
    keep = np.ones((96, 96), bool)
    keep[20:70, 30:80] = False
    keep[:, :5] = False  # the border too: its missing neighbours drop out of the mean
    filled = impute(image, keep, np.random.default_rng(0)).astype(float)
    error = np.abs(filled - image)[~keep]
    assert error.mean() < 3 and error.max() < 15
    assert (filled[keep] == image[keep]).all()
