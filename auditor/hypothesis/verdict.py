"""The verdict: hypothesis edit vs control edit on the same images, an exact paired comparison.

Each trial is one image that took both edits, and gives a pair of outcomes (hypothesis succeeded?
control succeeded?). The choices:

- Rates: successes / trials with Wilson 95 % intervals (:func:`auditor.stats.wilson`).
- Test: exact McNemar, i.e. a binomial test on the discordant pairs. Under the null hypothesis
  that the edit works no better than the control, an image where exactly one of the two worked is
  equally likely to be either, so the count of "hypothesis only" among the discordant pairs is
  Binomial(discordant, 1/2). One-sided, alternative "the hypothesis edit succeeds more often than
  the control": the claim under test is directional, and a control that beats the edit is no
  support for it, so it must not count towards significance as a two-sided test would let it.
  With no discordant pair the p-value is 1 (the data say nothing either way).
- Effect: hypothesis rate minus control rate, with Newcombe's (1998) hybrid score interval for
  paired proportions (his method 10: the Wilson intervals of the two rates combined with the
  observed correlation of the pairs), as given by Fagerland, Lydersen & Laake, *Statistical
  Analysis of Contingency Tables* (2017), ch. 8 ("Newcombe square-and-add"),
  https://doi.org/10.1002/sim.4780172114 for the original.
- Verdict: "supported" when p < alpha and the effect is positive; "insufficient data" when there
  are too few trials for any outcome to reach p < alpha (even all trials discordant in the
  hypothesis's favour give p = 0.5 ** trials, so at alpha = 0.05 at least 5 trials are needed);
  "not supported" otherwise. A "not supported" is not evidence that the edit does nothing: read
  the effect's interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from auditor.stats import Rate, paired_difference_ci, wilson

VerdictText = Literal["supported", "not supported", "insufficient data"]
TEST = "exact McNemar (binomial test on the discordant pairs), one-sided"


@dataclass(frozen=True)
class Verdict:
    """Everything the verdict rests on; ``effect`` is hypothesis minus control success rate."""

    trials: int
    hypothesis: Rate
    control: Rate
    both: int
    hypothesis_only: int
    control_only: int
    neither: int
    test: str
    p_value: float | None
    effect: float | None
    effect_ci: tuple[float, float] | None
    alpha: float
    min_trials: int
    verdict: VerdictText


def min_trials(alpha: float) -> int:
    """The fewest trials for which a one-sided exact McNemar test can reach p < alpha."""
    return math.floor(math.log2(1 / alpha)) + 1


def decide(hypothesis: Sequence[bool], control: Sequence[bool], alpha: float) -> Verdict:
    """The verdict on paired outcomes: ``hypothesis[i]`` and ``control[i]`` for trial ``i``.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(hypothesis) != len(control):
        raise ValueError(f"{len(hypothesis)} hypothesis outcomes but {len(control)} control ones")
    h = np.asarray(hypothesis, dtype=bool)
    c = np.asarray(control, dtype=bool)
    both, h_only = int((h & c).sum()), int((h & ~c).sum())
    c_only, neither = int((~h & c).sum()), int((~h & ~c).sum())
    n = len(h)
    needed = min_trials(alpha)
    p_value = effect = ci = None
    if n:
        p_value = mcnemar_greater(h_only, c_only)
        effect = (h_only - c_only) / n
        ci = paired_difference_ci(both, h_only, c_only, neither, alpha)
    verdict: VerdictText
    if n < needed:
        verdict = "insufficient data"
    elif p_value is not None and p_value < alpha and effect is not None and effect > 0:
        verdict = "supported"
    else:
        verdict = "not supported"
    return Verdict(
        trials=n,
        hypothesis=wilson(int(h.sum()), n, alpha),
        control=wilson(int(c.sum()), n, alpha),
        both=both,
        hypothesis_only=h_only,
        control_only=c_only,
        neither=neither,
        test=TEST,
        p_value=p_value,
        effect=effect,
        effect_ci=ci,
        alpha=alpha,
        min_trials=needed,
        verdict=verdict,
    )


def mcnemar_greater(hypothesis_only: int, control_only: int) -> float:
    """One-sided exact McNemar p-value: P(X >= hypothesis_only), X ~ Bin(discordant, 1/2)."""
    discordant = hypothesis_only + control_only
    if discordant == 0:
        return 1.0
    return float(sps.binomtest(hypothesis_only, discordant, 0.5, alternative="greater").pvalue)
