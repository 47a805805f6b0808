"""Null calibration: in worlds with no real gap, the run's tests reject as rarely as α says.

Each world is a records table whose one group column is drawn independently of the labels,
predictions and flips: 2–6 levels, balanced or geometrically shrinking group sizes, 30–120 or
300–1,500 images, and guided and placebo flips at one rate, so McNemar's null holds as well as
the gap tests'. Over the worlds, each test kind's rate of p ≤ α, Holm's family-wise error rate
over each run's tests and how often the simultaneous max−min gap interval covers 0 are held to
binomial 95 % bands. Each world's tests are computed once (the module fixture) for all three.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from auditor.excess import ExcessTest
from auditor.records import PLACEBO
from auditor.stats import GapTest, PairedTest, Statistics, compute_statistics, mcnemar_p

ALPHA = 0.05
WORLDS = 300  # 150 small, 150 large
SEED = 12
CLASSES = np.array(["female", "male"])
LEVELS = np.array(list("ABCDEF"))
ARMS = ("attribution", PLACEBO)


def null_records(world: int) -> pd.DataFrame:
    """The records of world ``world`` (seeded by it): a blackout@gradcam audit whose guided
    and placebo arms flip at one rate, with a group column ``g`` that is pure noise.

    Even worlds are small (30–120 images), odd ones large (300–1,500); worlds 0 and 1 mod 4
    have groups of equal size, the others group probabilities shrinking by a factor 0.3–0.7 a
    level, so small expected counts (Fisher: 2×2, enumerated, Monte Carlo) and groups too small
    to test occur.
    """
    rng = np.random.default_rng([SEED, world])
    levels = int(rng.integers(2, 7))
    n = int(rng.integers(30, 121)) if world % 2 == 0 else int(rng.integers(300, 1501))
    if world % 4 < 2:
        group = rng.permutation(np.arange(n) % levels)
    else:
        weights = rng.uniform(0.3, 0.7) ** np.arange(levels)
        group = rng.choice(levels, n, p=weights / weights.sum())
    error_rate = rng.choice([0.03, 0.1, 0.25])
    flip_rate = rng.choice([0.02, 0.05, 0.15, 0.4])
    label = rng.integers(0, 2, n)
    prediction = np.where(rng.random(n) < error_rate, 1 - label, label)
    confidence = rng.uniform(0.5, 1.0, n)
    images = pd.DataFrame(
        {
            "image_id": [f"{i}.png" for i in range(n)],
            "label": CLASSES[label],
            "orig_pred": CLASSES[prediction],
            "orig_p_pred": confidence,
            "skip_reason": None,
            "probe": "blackout",
            "method": "gradcam",
            "group_g": LEVELS[group],
        }
    )
    arms = [edited(images, source, rng.random(n) < flip_rate, rng) for source in ARMS]
    return pd.concat(arms, ignore_index=True)


def edited(
    images: pd.DataFrame, source: str, flipped: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """One arm's records: a flipped image's predicted class falls below 1/2, an unflipped
    one's stays between 1/2 and where it was (two classes), whatever the image's group."""
    confidence = images["orig_p_pred"].to_numpy()
    kept = 0.5 + rng.random(len(images)) * (confidence - 0.5)
    after = np.where(flipped, rng.uniform(0.0, 0.5, len(images)), kept)
    return images.assign(region_source=source, flipped=flipped, probed_p_orig_pred=after)


@pytest.fixture(scope="module")
def null_runs() -> Iterator[list[Statistics]]:
    """Every world's statistics. statsmodels' Holm (multipletests) runs a full gc.collect()
    per call, which in a test process holding torch and pytest costs about 0.3 s a run; the
    objects alive before the worlds are frozen out of those collections."""
    gc.freeze()
    try:
        yield [
            compute_statistics(null_records(world), alpha=ALPHA, min_group_size=10, seed=world)
            for world in range(WORLDS)
        ]
    finally:
        gc.unfreeze()


def family(run: Statistics) -> list[GapTest | PairedTest | ExcessTest]:
    """Every test of a run that Holm adjusts together."""
    return [*run.error_gaps, *run.flip_gaps, *run.paired, *run.excess]


def band(trials: int, rate: float) -> tuple[float, float]:
    """The central 95 % band of a Binomial(trials, rate) count."""
    low, high = binom.interval(0.95, trials, rate)
    return float(low), float(high)


def test_each_test_rejects_a_true_null_at_most_at_alpha(null_runs: list[Statistics]) -> None:
    """Per test kind, the count of p ≤ α is at most the upper end of the Binomial(tests, α)
    band. Only chi-square is held to the lower end too: the exact tests are conservative on
    discrete data by construction (exact McNemar rejected 7 of 294 here, below the band's 8),
    so a rate below α is their design, not a fault. The mid-p McNemar (from the same discordant
    counts) is not guaranteed at most α, so its upper end is a real check."""
    tests, rejections = Counter[str](), Counter[str]()
    for run in null_runs:
        for test in family(run):
            if test.p_value is not None:
                tests[test.test] += 1
                rejections[test.test] += test.p_value <= ALPHA
        for paired in run.paired:
            if paired.p_value is not None:
                mid_p = mcnemar_p(paired.guided_only, paired.placebo_only, mid_p=True)
                tests["mid-p McNemar"] += 1
                rejections["mid-p McNemar"] += mid_p <= ALPHA
    kinds = {"chi-square", "fisher-exact", "fisher-exact (enumeration)",
             "fisher-exact (monte carlo)", "exact McNemar", "mid-p McNemar"}  # fmt: skip
    assert kinds <= set(tests) and min(tests.values()) >= 10, tests  # every kind is exercised
    for kind in tests:
        assert rejections[kind] <= band(tests[kind], ALPHA)[1], (kind, rejections[kind], tests)
    low, _ = band(tests["chi-square"], ALPHA)
    assert rejections["chi-square"] >= low, (rejections["chi-square"], tests["chi-square"])


def test_holm_keeps_the_family_wise_error_rate_at_alpha(null_runs: list[Statistics]) -> None:
    """A world with any significant test (Holm over its error gap, flip gap, McNemar and
    excess-flip tests, 3.7 with a p a world) is a family-wise error: at most the upper end of
    the Binomial(worlds, α) band, 23 of 300. Unadjusted, p ≤ α anywhere happened in 35."""
    errors = sum(any(t.significant for t in family(run)) for run in null_runs)
    assert errors <= band(len(null_runs), ALPHA)[1], errors


def test_the_simultaneous_gap_interval_covers_zero(null_runs: list[Statistics]) -> None:
    """The highest-minus-lowest gap's interval (Bonferroni over pairs) holds 0 in at least the
    lower end of the Binomial(intervals, 0.95) band: the pair is picked after looking, which a
    plain 95 % interval does not survive (it held 0 in 493 of these 560, the bound is 521)."""
    intervals = [
        gap.effect_ci
        for run in null_runs
        for gap in [*run.error_gaps, *run.flip_gaps]
        if gap.effect_ci is not None
    ]
    covered = sum(low <= 0 <= high for low, high in intervals)
    assert covered >= band(len(intervals), 1 - ALPHA)[0], (covered, len(intervals))
