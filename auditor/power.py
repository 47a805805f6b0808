"""What a gap test could have seen: its minimum detectable gap and its equivalence bound.

"No significant gap" is not "no gap": with 50 images per subgroup and an error rate near 10 %,
a gap of 16 points is missed one time in five. Two figures per gap test say what the run's
sample sizes can claim:

- the minimum detectable gap: the smallest rate difference between the two smallest tested
  subgroups that a two-sided test at the run's α (α / pairs with more than two subgroups, as
  the simultaneous gap interval) finds with power 0.8, around the pooled rate. A smaller gap
  could not reliably have been seen. The run's tests are Holm-corrected over every test, so
  they see somewhat less than this: it is the most a "no gap" can be taken to rule out.
- the equivalence bound: the largest |difference| any pair of tested subgroups can still have,
  by two one-sided tests (TOST) on every pair at α / pairs each, i.e. every pair's Newcombe
  interval at level 1 − 2α / pairs. A gap gate with ``require = "equivalence"`` passes only
  when this bound lies below its maximum: the data then rule out any larger gap.

scipy and statsmodels are imported inside the functions, as in :mod:`auditor.stats`: the
readers that print these figures should not load them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # auditor.stats calls this module: only its type is needed here
    from auditor.stats import GroupRate

POWER = 0.8


def detection_bounds(
    groups: Sequence[GroupRate], alpha: float
) -> tuple[float | None, float | None]:
    """(minimum detectable gap, equivalence bound) of a gap test's subgroups, for
    :func:`auditor.stats.run_gap_test` to store in one step."""
    return min_detectable_gap(groups, alpha), equivalence_bound(groups, alpha)


def min_detectable_gap(
    groups: Sequence[GroupRate], alpha: float, power: float = POWER
) -> float | None:
    """The smallest difference in rate between the two smallest tested subgroups that a
    two-sided test at ``alpha`` / pairs detects with ``power``; None with fewer than two.

    The effect size is Cohen's h (the difference of the arcsine-transformed rates), solved by
    statsmodels' ``NormalIndPower`` for the two groups' sizes, then turned back into a
    difference of rates centred, on the arcsine scale, on the pooled rate of the tested
    subgroups: a gap is harder to see near 50 % than near 0.
    """
    tested = [g for g in groups if g.tested]
    if len(tested) < 2:
        return None
    h = detectable_effect([g.rate.n for g in tested], alpha, power)
    pooled = sum(g.rate.k for g in tested) / sum(g.rate.n for g in tested)
    return rate_gap(h, pooled)


def min_detectable_difference(
    sizes: Sequence[int], standard_deviation: float, alpha: float, power: float = POWER
) -> float | None:
    """The smallest difference in mean between the two smallest of ``sizes`` groups that a
    two-sided test at ``alpha`` / pairs detects with ``power``, for values of the given pooled
    standard deviation (the excess flip rate's per-image differences); None with fewer than two
    groups or no spread."""
    if len(sizes) < 2 or not standard_deviation > 0:
        return None
    return detectable_effect(sizes, alpha, power) * standard_deviation


def detectable_effect(sizes: Sequence[int], alpha: float, power: float) -> float:
    """The standardised effect (Cohen's h or d) between the two smallest of ``sizes`` groups
    that a two-sided test at ``alpha`` / pairs detects with ``power`` (statsmodels'
    ``NormalIndPower``): what both minimum detectable gaps scale back to their units."""
    from statsmodels.stats.power import NormalIndPower

    first, second = sorted(sizes)[:2]
    effect = NormalIndPower().solve_power(
        effect_size=None,
        nobs1=first,
        alpha=alpha / pairs(len(sizes)),
        power=power,
        ratio=second / first,
        alternative="two-sided",
    )
    return float(effect)


def rate_gap(h: float, rate: float) -> float:
    """The difference of two rates whose Cohen's h is ``h``, centred on ``rate`` on the arcsine
    scale and moved inside [0, 1] where it would cross an end; 1 when even 0 % vs 100 % (h = π)
    falls short of ``h``."""
    if h >= math.pi:
        return 1.0
    low = min(max(2 * math.asin(math.sqrt(rate)) - h / 2, 0.0), math.pi - h)
    return math.sin((low + h) / 2) ** 2 - math.sin(low / 2) ** 2


def equivalence_bound(groups: Sequence[GroupRate], alpha: float) -> float | None:
    """The largest |end| of every pair of tested subgroups' Newcombe interval of their
    difference at level 1 − 2·``alpha`` / pairs; None with fewer than two tested subgroups.

    Each pair is two one-sided tests at ``alpha`` / pairs (Bonferroni over the pairs), so all
    pairs lie within ± the bound together, with probability at least 1 − ``alpha``.
    """
    from statsmodels.stats.proportion import confint_proportions_2indep

    tested = [g for g in groups if g.tested]
    if len(tested) < 2:
        return None
    counts = np.array(
        [(a.rate.k, a.rate.n, b.rate.k, b.rate.n) for a, b in itertools.combinations(tested, 2)],
        dtype=float,
    )
    low, high = confint_proportions_2indep(
        *counts.T,
        method="newcomb",
        compare="diff",
        alpha=2 * alpha / pairs(len(tested)),
    )
    return float(np.abs([low, high]).max())


def pairs(groups: int) -> int:
    """How many pairs ``groups`` subgroups make: the Bonferroni divisor of the gap intervals."""
    return groups * (groups - 1) // 2


def unseen_text(min_detectable_gap: float) -> str:
    """What "no significant gap" can claim, in the words every output uses: a smaller gap is
    missed more often than one time in five (power 0.8)."""
    points = f"{100 * min_detectable_gap:.1f}"
    return f"a gap smaller than {points} points could not reliably have been seen here"
