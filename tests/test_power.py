"""What a gap test could have seen: the minimum detectable gap against the textbook formula and
a simulation of the test, the equivalence bound against each pair's interval recomputed by hand,
and run_gap_test storing both."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from auditor.power import equivalence_bound, min_detectable_gap
from auditor.stats import GroupRate, compute_statistics, wilson

ALPHA = 0.05


def groups_of(*counts: tuple[int, int], untested: tuple[int, int] | None = None) -> list[GroupRate]:
    """Tested subgroups of (n, events) each, and optionally one left out as too small."""
    groups = [GroupRate(f"g{i}", wilson(k, n, ALPHA), True) for i, (n, k) in enumerate(counts)]
    if untested is not None:
        n, k = untested
        groups.append(GroupRate("small", wilson(k, n, ALPHA), False))
    return groups


def pairs(groups: int) -> int:
    return groups * (groups - 1) // 2


# --- the minimum detectable gap -----------------------------------------------------------------


@pytest.mark.parametrize(
    "counts",
    [
        [(50, 5), (50, 5)],  # 2 × 50 at 10 %
        [(400, 60), (600, 90)],  # unequal sizes: the ratio counts
        [(10_000, 3_000), (200, 60), (100, 30)],  # the two smallest of three, at α / 3
        [(2_000, 1_000), (2_000, 1_000)],  # at 50 % a gap is hardest to see
    ],
)
def test_the_minimum_detectable_gap_is_the_textbook_sample_size_formula_inverted(
    counts: list[tuple[int, int]],
) -> None:
    """d = (z_{1−a/2} + z_{0.8}) · sqrt(p(1 − p)(1/n1 + 1/n2)) for the two smallest groups at
    a = α / pairs around the pooled rate p: the normal approximation, which Cohen's h agrees
    with to first order."""
    n1, n2 = sorted(n for n, _ in counts)[:2]
    pooled = sum(k for _, k in counts) / sum(n for n, _ in counts)
    z = norm.ppf(1 - ALPHA / pairs(len(counts)) / 2) + norm.ppf(0.8)
    expected = z * math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert min_detectable_gap(groups_of(*counts), ALPHA) == pytest.approx(expected, rel=0.02)


def test_a_test_at_the_minimum_detectable_gap_finds_it_four_times_in_five() -> None:
    """Simulated: two groups (400 and 600 images) at the pooled rate ± half the gap, tested by
    Pearson's chi-square (the pooled two-proportion z test) at α, reject in 80 % of worlds."""
    n1, n2, pooled = 400, 600, 0.15
    gap = min_detectable_gap(groups_of((n1, 60), (n2, 90)), ALPHA)
    assert gap is not None
    rng = np.random.default_rng(0)
    worlds = 20_000
    k1 = rng.binomial(n1, pooled + gap / 2, worlds)
    k2 = rng.binomial(n2, pooled - gap / 2, worlds)
    p = (k1 + k2) / (n1 + n2)
    z = (k1 / n1 - k2 / n2) / np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    power = np.mean(np.abs(z) > norm.ppf(1 - ALPHA / 2))
    assert power == pytest.approx(0.8, abs=0.02)  # the simulation's own error is 0.003


def test_small_groups_leave_larger_gaps_unseen_and_untested_groups_do_not_count() -> None:
    small = min_detectable_gap(groups_of((50, 5), (50, 5)), ALPHA)
    large = min_detectable_gap(groups_of((20_000, 2_000), (20_000, 2_000)), ALPHA)
    assert small is not None and large is not None and large < 0.01 < 0.1 < small
    # A subgroup below the minimum size is not in the test, so not among "the two smallest".
    with_small = min_detectable_gap(groups_of((50, 5), (50, 5), untested=(3, 0)), ALPHA)
    assert with_small == small


def test_fewer_than_two_tested_groups_have_no_bounds() -> None:
    one = groups_of((500, 50), untested=(5, 1))
    assert min_detectable_gap(one, ALPHA) is None
    assert equivalence_bound(one, ALPHA) is None


# --- the equivalence bound -----------------------------------------------------------------------


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p1 − p2 (his method 10), from Wilson's formula."""

    def wilson_ends(k: int, n: int) -> tuple[float, float]:
        centre = (k + z * z / 2) / (n + z * z)
        half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
        return centre - half, centre + half

    (l1, u1), (l2, u2) = wilson_ends(k1, n1), wilson_ends(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


@pytest.mark.parametrize(
    "counts",
    [
        [(50, 5), (50, 9)],
        [(300, 30), (120, 30), (80, 4), (500, 110)],  # 6 pairs, each at 1 − 2α/6
        [(40, 0), (60, 0)],  # no events at all: still bounded
    ],
)
def test_the_equivalence_bound_is_the_largest_end_of_every_pairs_tost_interval(
    counts: list[tuple[int, int]],
) -> None:
    z = norm.ppf(1 - ALPHA / pairs(len(counts)))  # two one-sided tests at α / pairs
    ends = [
        abs(end)
        for (n1, k1), (n2, k2) in itertools.combinations(counts, 2)
        for end in newcombe(k1, n1, k2, n2, z)
    ]
    bound = equivalence_bound(groups_of(*counts, untested=(4, 4)), ALPHA)
    assert bound == pytest.approx(max(ends), abs=1e-9)


def test_the_bound_shrinks_with_the_sample_and_always_covers_the_observed_gap() -> None:
    small = equivalence_bound(groups_of((50, 5), (50, 5)), ALPHA)
    large = equivalence_bound(groups_of((20_000, 2_000), (20_000, 2_000)), ALPHA)
    gapped = equivalence_bound(groups_of((2_000, 400), (2_000, 200)), ALPHA)
    assert small is not None and large is not None and gapped is not None
    assert large < 0.01 < 0.05 < small
    assert gapped > 0.1  # 20 % vs 10 %: a gap of 10 points cannot be ruled out


# --- stored by every gap test --------------------------------------------------------------------


def test_every_gap_test_of_a_run_stores_both() -> None:
    rows = [
        {
            "image_id": f"{g}/{i}",
            "label": g,
            "group_gender": g,
            "probe": "flip",
            "region_source": "whole_image",
            "method": None,
            "skip_reason": None,
            "orig_pred": "other" if i < errors else g,
            "probed_pred": g,
            "flipped": i < 3,
        }
        for g, n, errors in (("female", 120, 30), ("male", 80, 8))
        for i in range(n)
    ]
    statistics = compute_statistics(pd.DataFrame(rows), alpha=ALPHA, min_group_size=10)
    for test in [*statistics.error_gaps, *statistics.flip_gaps]:
        assert test.min_detectable_gap == min_detectable_gap(test.groups, ALPHA)
        assert test.equivalence_bound == equivalence_bound(test.groups, ALPHA)
        assert test.min_detectable_gap is not None and test.equivalence_bound is not None
