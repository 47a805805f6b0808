"""Reliance, not edit harm: how much more the guided edit flips than its placebo, per subgroup.

A raw flip-rate gap between subgroups mixes three things: the model relies on the attributed
region for one group more than another; the edit itself disturbs one group's images more
wherever it lands (a black square on dark or light skin); or one group's predictions sit closer
to the decision boundary, so any edit flips them more. The placebo (the same edit, same shape,
elsewhere, on the same image) carries the second and, with the model's confidence, the third.
So per image the guided arm's flip minus the placebo's, ``e ∈ {−1, 0, 1}``, is the edit's
reliance on that region, and per subgroup its mean is the **excess flip rate**, with Newcombe's
paired interval. Where the shape fits nowhere else on an image the placebo is a random blob of
the same area and compactness; a whole-image probe's placebo is its noise floor, the image
shifted by one pixel, so its excess is what the edit flips beyond what nothing at all does
(``control_kind`` says which, :mod:`auditor.stats` counts them).

Whether the excess differs across subgroups is a linear model of ``e`` on the subgroup, with HC3
sandwich errors; the Wald test of the subgroup terms is the finding, and the gap between the
highest and lowest subgroup gets an interval simultaneous over every pair (Bonferroni). With one
row per image the image is its own cluster: this is the identity-link GEE of flip ~ arm × group,
fitted on the paired difference. It stays defined where the logit model is not (a planted
shortcut gives subgroups whose placebo never flips, where the logit interaction is infinite),
and it measures reliance on the scale the excess is reported in: on the demo's biased model the
logit interaction ranks the labels the other way round.

Beside it, the same comparison **at equal confidence**: the model adds the original
prediction's confidence (``orig_p_pred``, in quintile strata), and each subgroup's adjusted
excess is its prediction over the whole run's strata. It answers "is the gap only that one
group's predictions sit nearer the boundary?", but read it with care: a shortcut itself makes
the predictions it misleads less confident (the tie does so for women on the demo), so
adjusting for confidence can take away the very effect. It is shown, not tested in the run's
Holm family; its p-values are Holm-corrected among themselves (``stats.adjust``).

Beside the flips, the continuous **probability drop** of the originally predicted class (before
minus after the edit) is reported per arm and as the guided-minus-placebo excess.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd

from auditor.power import min_detectable_difference
from auditor.records import PLACEBO

MARGIN_STRATA = 5
PROBABILITIES = ["orig_p_pred", "probed_p_orig_pred"]
ExcessTestName = Literal["paired-difference linear model (HC3)", "not testable"]


@dataclass(frozen=True)
class ExcessGroup:
    """One subgroup's guided and placebo arms on its images that received both edits."""

    group: str
    n_pairs: int
    tested: bool  # False when smaller than the minimum group size
    guided_rate: float | None
    placebo_rate: float | None
    excess: float | None  # guided minus placebo flip rate
    excess_ci: tuple[float, float] | None  # Newcombe's paired interval at 1 − α
    adjusted_excess: float | None  # at the run's confidence strata (tested groups only)
    guided_drop: float | None  # mean drop of the originally predicted class's probability
    placebo_drop: float | None
    excess_drop: float | None  # guided minus placebo mean drop
    excess_drop_ci: tuple[float, float] | None  # t interval of the paired mean difference
    mean_confidence: float | None  # mean orig_p_pred: how far from the boundary it started


@dataclass
class ExcessTest:
    """Does the excess flip rate of one probe arm differ across one grouping's subgroups?"""

    id: str
    probe: str
    method: str | None
    region_source: str
    grouping: str
    groups: list[ExcessGroup]
    test: ExcessTestName = "not testable"
    statistic: float | None = None  # Wald chi-square of the subgroup terms
    df: int | None = None
    p_value: float | None = None
    effect: float | None = None  # highest minus lowest excess
    effect_ci: tuple[float, float] | None = None  # simultaneous over every pair of groups
    highest: str | None = None
    lowest: str | None = None
    # The same two groups compared at equal confidence (the run's mix of confidence strata),
    # with the Wald test of that model: shown beside the test, not part of the run's Holm
    # family but Holm-adjusted in a family of its own (every equal-confidence test of the run).
    adjusted_effect: float | None = None
    adjusted_effect_ci: tuple[float, float] | None = None
    adjusted_p_value: float | None = None
    adjusted_p_adjusted: float | None = None
    # The smallest excess gap between the two smallest tested groups this test would find with
    # power 0.8 (auditor.power), at the pooled spread of the per-image differences.
    min_detectable_gap: float | None = None
    reason: str | None = None  # why it is not testable
    p_adjusted: float | None = None
    significant: bool = False


def paired_arms(frame: pd.DataFrame, guided_source: str) -> pd.DataFrame:
    """One row per image with both edits: each arm's flip and probability drop, the original
    confidence, and the image's group columns."""
    # Records made without probabilities (a label-only black box) still have flips.
    frame = frame.reindex(
        columns=[*frame.columns.drop(PROBABILITIES, errors="ignore"), *PROBABILITIES]
    )
    frame = frame.assign(drop=frame["orig_p_pred"] - frame["probed_p_orig_pred"])
    arms = frame.pivot_table(
        index="image_id",
        columns="region_source",
        values=["flipped", "drop"],
        aggfunc="first",
        dropna=False,
    )
    if guided_source not in arms["flipped"] or PLACEBO not in arms["flipped"]:
        return pd.DataFrame()
    pairs = pd.DataFrame(
        {
            "guided": arms["flipped"][guided_source],
            "placebo": arms["flipped"][PLACEBO],
            "guided_drop": arms["drop"][guided_source],
            "placebo_drop": arms["drop"][PLACEBO],
        }
    ).dropna(subset=["guided", "placebo"])
    per_image = frame.drop_duplicates("image_id").set_index("image_id")
    keep = [c for c in per_image.columns if c.startswith("group_")] + ["orig_p_pred"]
    pairs = pairs.join(per_image[keep])
    return pairs.assign(
        guided=pairs["guided"].astype(bool),
        placebo=pairs["placebo"].astype(bool),
        excess=pairs["guided"].astype(float) - pairs["placebo"].astype(float),
    )


def excess_test(
    pairs: pd.DataFrame,
    labels: pd.Series,
    *,
    test_id: str,
    probe: str,
    method: str | None,
    region_source: str,
    grouping: str,
    alpha: float,
    min_group_size: int,
) -> ExcessTest:
    """The excess flip rate per subgroup of ``labels`` (indexed like ``pairs``) and the test
    that it differs across the subgroups of at least ``min_group_size`` pairs."""
    groups = [
        _group_rates(str(name), part, alpha, min_group_size)
        for name, part in pairs.groupby(labels, sort=True)
    ]
    result = ExcessTest(test_id, probe, method, region_source, grouping, groups)
    in_test = labels.isin([g.group for g in groups if g.tested])
    _fit(result, pairs[in_test], labels[in_test], alpha)
    return result


def _group_rates(group: str, part: pd.DataFrame, alpha: float, min_group_size: int) -> ExcessGroup:
    from auditor.stats import paired_difference_ci

    n = len(part)
    guided, placebo = part["guided"].to_numpy(), part["placebo"].to_numpy()
    drops = part[["guided_drop", "placebo_drop"]].dropna()
    difference = (drops["guided_drop"] - drops["placebo_drop"]).to_numpy()
    return ExcessGroup(
        group=group,
        n_pairs=n,
        tested=n >= min_group_size,
        guided_rate=float(guided.mean()) if n else None,
        placebo_rate=float(placebo.mean()) if n else None,
        excess=float(guided.mean() - placebo.mean()) if n else None,
        excess_ci=paired_difference_ci(
            int((guided & placebo).sum()),
            int((guided & ~placebo).sum()),
            int((~guided & placebo).sum()),
            int((~guided & ~placebo).sum()),
            alpha,
        )
        if n
        else None,
        adjusted_excess=None,
        guided_drop=_mean(drops["guided_drop"]),
        placebo_drop=_mean(drops["placebo_drop"]),
        excess_drop=_mean(pd.Series(difference)),
        excess_drop_ci=_t_interval(difference, alpha),
        mean_confidence=_mean(part["orig_p_pred"]),
    )


def _fit(result: ExcessTest, pairs: pd.DataFrame, labels: pd.Series, alpha: float) -> None:
    """Fill in the test that the excess differs across the tested groups, and the same
    comparison at equal confidence."""
    levels = sorted(set(labels))
    if len(levels) < 2:
        result.reason = "fewer than two subgroups large enough to test"
        return
    if not pairs["excess"].any():
        result.reason = "no image flipped under one edit and not the other"
        return
    raw = compare_groups(
        pairs["excess"], group_design(pairs, labels, levels, by_confidence=False), levels, alpha
    )
    if raw is None:
        result.reason = "the model's covariance could not be estimated"
        return
    sizes = [int((labels == level).sum()) for level in levels]
    spread = float(pairs["excess"].std(ddof=1))
    result.min_detectable_gap = min_detectable_difference(sizes, spread, alpha)
    result.test = "paired-difference linear model (HC3)"
    result.statistic, result.df, result.p_value = raw.statistic, raw.df, raw.p_value
    result.highest = max(raw.means, key=lambda k: raw.means[k])
    result.lowest = min(raw.means, key=lambda k: raw.means[k])
    result.effect, result.effect_ci = raw.gap(result.highest, result.lowest)
    # The same pair at equal confidence, on the images whose confidence is known: a negative
    # gap says the order reverses.
    known = pairs["orig_p_pred"].notna()
    if labels[known].nunique() < len(levels):
        return
    adjusted = compare_groups(
        pairs["excess"][known],
        group_design(pairs[known], labels[known], levels, by_confidence=True),
        levels,
        alpha,
    )
    if adjusted is None:
        return
    result.adjusted_effect, result.adjusted_effect_ci = adjusted.gap(result.highest, result.lowest)
    result.adjusted_p_value = adjusted.p_value
    result.groups = [replace(g, adjusted_excess=adjusted.means.get(g.group)) for g in result.groups]


@dataclass(frozen=True)
class GroupComparison:
    """One fitted model's test of the subgroup terms and each subgroup's standardised mean."""

    statistic: float
    df: int
    p_value: float
    means: dict[str, float]
    contrasts: dict[str, np.ndarray]
    covariance: np.ndarray
    half_width_z: float  # Bonferroni over every pair of groups, two-sided

    def gap(self, first: str, second: str) -> tuple[float, tuple[float, float]]:
        """``first``'s mean minus ``second``'s, with its simultaneous interval."""
        half = self.half_width_z * self._standard_error(first, second)
        value = self.means[first] - self.means[second]
        return value, (value - half, value + half)

    def gap_p_value(self, first: str, second: str) -> float:
        """The two-sided p-value of ``first``'s mean minus ``second``'s, Bonferroni over every
        pair of groups: below α exactly when :meth:`gap`'s interval excludes 0."""
        from scipy.stats import norm

        error = self._standard_error(first, second)
        value = self.means[first] - self.means[second]
        if error == 0.0:
            return 1.0 if value == 0.0 else 0.0
        pairs = len(self.means) * (len(self.means) - 1) // 2
        return min(1.0, pairs * 2 * float(norm.sf(abs(value) / error)))

    def _standard_error(self, first: str, second: str) -> float:
        contrast = self.contrasts[first] - self.contrasts[second]
        return math.sqrt(max(float(contrast @ self.covariance @ contrast), 0.0))


def compare_groups(
    excess: pd.Series, design: pd.DataFrame, levels: Sequence[str], alpha: float
) -> GroupComparison | None:
    """OLS of the per-image excess on ``design`` with HC3 errors; None when the design does not
    determine its parameters (on a small run a confidence stratum can hold exactly one group's
    images), the sandwich is not finite (a point of leverage one) or it gives the subgroup terms
    no variance at all."""
    import statsmodels.api as sm
    from scipy.stats import norm

    if np.linalg.matrix_rank(design.to_numpy(float)) < design.shape[1]:
        return None
    fitted = sm.OLS(excess.to_numpy(float), design.to_numpy(float)).fit(cov_type="HC3")
    covariance = np.asarray(fitted.cov_params())
    if not np.isfinite(covariance).all():
        return None
    # The subgroup terms are the columns after the intercept (and before any strata). A group
    # whose pairs all agree has no variance in the sandwich; the test is then on the terms that
    # do vary (the rank of their covariance), as statsmodels' pseudo-inverse computes it.
    terms = np.eye(design.shape[1])[1 : len(levels)]
    rank = int(np.linalg.matrix_rank(terms @ covariance @ terms.T))
    if rank == 0:
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "covariance of constraints does not have full rank")
        wald = fitted.wald_test(terms, use_f=False, scalar=True, df_constraints=rank)
    contrasts = {level: _standardised(design, levels, level) for level in levels}
    params = np.asarray(fitted.params)
    pairs = len(levels) * (len(levels) - 1) // 2
    return GroupComparison(
        statistic=float(wald.statistic),
        df=rank,
        p_value=float(wald.pvalue),
        means={level: float(c @ params) for level, c in contrasts.items()},
        contrasts=contrasts,
        covariance=covariance,
        half_width_z=float(norm.isf(alpha / (2 * pairs))),
    )


def group_design(
    pairs: pd.DataFrame, labels: pd.Series, levels: Sequence[str], *, by_confidence: bool
) -> pd.DataFrame:
    """Intercept and one indicator per subgroup but the first; ``by_confidence`` adds one per
    confidence stratum but the first (quintiles of orig_p_pred, ties broken by image order)."""
    columns = {"intercept": np.ones(len(pairs))}
    for level in levels[1:]:
        columns[f"group={level}"] = (labels == level).to_numpy(float)
    if by_confidence:
        count = min(MARGIN_STRATA, len(pairs))
        strata = pd.qcut(pairs["orig_p_pred"].rank(method="first"), count, labels=False)
        for stratum in sorted(set(strata))[1:]:
            columns[f"stratum={stratum}"] = (strata == stratum).to_numpy(float)
    return pd.DataFrame(columns, index=pairs.index)


def _standardised(design: pd.DataFrame, levels: Sequence[str], level: str) -> np.ndarray:
    """The contrast whose product with the parameters is ``level``'s mean prediction over every
    image's own stratum: the excess the group would show at the run's mix of confidence (its
    plain mean when the design has no strata)."""
    contrast = design.mean().to_numpy(float, copy=True)
    contrast[1 : len(levels)] = 0.0
    if level != levels[0]:
        contrast[1 + list(levels[1:]).index(level)] = 1.0
    return contrast


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.mean()) if len(values) else None


def _t_interval(values: np.ndarray, alpha: float) -> tuple[float, float] | None:
    """Student's t interval of a mean; None with fewer than two values."""
    from scipy.stats import t

    if len(values) < 2:
        return None
    half = (
        float(t.isf(alpha / 2, len(values) - 1))
        * float(values.std(ddof=1))
        / math.sqrt(len(values))
    )
    mean = float(values.mean())
    return (mean - half, mean + half)
