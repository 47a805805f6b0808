"""Disaggregated rates with intervals, tests across subgroups, guided-vs-placebo tests, Holm.

Input is the records table; output is plain dataclasses that serialise to summary.json. Choices:

- Intervals: Wilson score 95 % (well-behaved near 0 and 1, unlike the normal approximation).
- Across subgroups: Pearson's chi-square on the groups × {event, no event} table when every
  expected count is at least 5; otherwise Fisher's exact test: scipy's for 2×2, the
  Fisher–Freeman–Halton p-value by full enumeration for larger tables whose margins admit at
  most ``ENUMERATION_LIMIT`` tables, and by seeded Monte Carlo beyond (``(b + 1) / (m + 1)``,
  its standard error reported); both with R's tolerance for equally probable tables. Groups
  smaller than ``min_group_size`` are reported but left out of tests.
- Gap effect: highest minus lowest subgroup rate, with Newcombe's hybrid score interval made
  simultaneous over every pair of groups (Bonferroni), as the pair is picked after looking.
- Reliance: per probe and subgroup, the excess flip rate of the guided edit over its placebo
  on the same images, and whether it differs across subgroups (:mod:`auditor.excess`).
- Guided vs placebo: exact McNemar test on the images where both edits were made (or its
  mid-p version, ``--mcnemar mid-p``).
- The placebo is every control arm (region source ``placebo``), whatever its kind on each image
  (``control_kind``: the same shape elsewhere, an area-matched blob, or a whole-image probe's
  one-pixel noise floor); each paired test counts its pairs by kind, so a reader can say which.
- Multiplicity: Holm over every p-value of the run.

scipy and statsmodels are imported where a test runs, not with this module: the report and
the readers use its names and labels, and should not wait a second for libraries they never
call.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from auditor.adjusted import AdjustedGap, adjusted_gap, covariate_columns_of
from auditor.edit_harm import EditHarmTest, edit_harm_test, erased_twin
from auditor.excess import ExcessTest, excess_test, paired_arms
from auditor.power import detection_bounds
from auditor.records import CONTROL_KINDS, GROUP_PREFIX, MISSING_GROUP, PLACEBO, SAME_SHAPE

INTERSECTION = "×"
# Resamples of a Monte Carlo Fisher test: its standard error near α = 0.05 is
# sqrt(0.05 · 0.95 / 20,000) ≈ 0.0015, a third of the 0.005 that would blur a verdict.
MONTE_CARLO_RESAMPLES = 20_000
# The most tables a Fisher test enumerates (beyond, Monte Carlo): the worst case, many groups
# with margins just under the limit, took under half a second.
ENUMERATION_LIMIT = 2_000_000
# R's relative tolerance on a table's probability: tables as probable as the observed one
# count as at most as probable, whatever rounding their log-probabilities took.
PROBABILITY_TOLERANCE = 1e-7
MIN_EXPECTED = 5.0
# The results.parquet columns compute_statistics reads, beside the group columns: a writer reads
# only these back, so memory does not hold every probability of a large run.
STATISTICS_COLUMNS = (
    "image_id", "label", "orig_pred", "skip_reason", "probe", "method", "region_source", "flipped",
    "orig_p_pred", "probed_p_orig_pred", "control_kind",
)  # fmt: skip

TestName = Literal[
    "chi-square",
    "fisher-exact",
    "fisher-exact (enumeration)",
    "fisher-exact (monte carlo)",
    "not testable",
]


@dataclass(frozen=True)
class Rate:
    """``k`` events in ``n`` trials, with a Wilson interval."""

    n: int
    k: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None


def wilson(k: int, n: int, alpha: float) -> Rate:
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return Rate(0, 0, None, None, None)
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return Rate(n, k, k / n, float(low), float(high))


class Contingency(NamedTuple):
    """What :func:`contingency_test` found; a tuple, so callers unpack it into a GapTest."""

    test: TestName
    statistic: float | None
    p_value: float | None
    monte_carlo_se: float | None = None  # of p_value; None for exact tests


@dataclass(frozen=True)
class GroupRate:
    group: str
    rate: Rate
    tested: bool  # False when smaller than the minimum group size


@dataclass
class GapTest:
    """Does a rate (error or flip) differ across the subgroups of one grouping?"""

    id: str
    kind: Literal["error_rate", "flip_rate"]
    grouping: str
    probe: str | None
    region_source: str | None
    method: str | None
    groups: list[GroupRate]
    test: TestName = "not testable"
    statistic: float | None = None
    p_value: float | None = None
    effect: float | None = None  # highest minus lowest tested rate
    # Newcombe's interval of that difference, simultaneous over every pair of tested groups
    # (Bonferroni: at α / (k(k − 1)/2)), since which pair is highest and lowest is chosen after
    # looking; for two groups it is the plain interval at α.
    effect_ci: tuple[float, float] | None = None
    highest: str | None = None
    lowest: str | None = None
    p_adjusted: float | None = None
    significant: bool = False
    # The Monte Carlo standard error of ``p_value``, sqrt(p(1 − p) / m); None for exact tests.
    monte_carlo_se: float | None = None
    # The smallest gap between the two smallest tested groups that this test would find with
    # power 0.8 at the run's α (statsmodels' power module): what "no gap found" can rule out.
    min_detectable_gap: float | None = None
    # The largest |difference| any pair of tested groups can have at the two-one-sided-tests
    # level (every pair's Newcombe interval at 1 − 2α/pairs): an equivalence gate passes when
    # it lies below the gate's margin.
    equivalence_bound: float | None = None


@dataclass
class PairedTest:
    """Attribution-guided edit vs the same edit on a random region, on the same images."""

    id: str
    probe: str
    region_source: str
    method: str | None
    n_pairs: int
    guided: Rate
    placebo: Rate
    both: int
    guided_only: int
    placebo_only: int
    neither: int
    test: str
    p_value: float | None
    effect: float | None  # guided minus placebo flip rate
    p_adjusted: float | None = None
    significant: bool = False
    # The pairs by the kind of their placebo (records.CONTROL_KINDS), in that order.
    control_kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class Statistics:
    alpha: float
    min_group_size: int
    groupings: list[str]
    overall_error: Rate
    error_gaps: list[GapTest]
    flip_gaps: list[GapTest]
    paired: list[PairedTest]
    flip_overall: dict[str, Rate] = field(default_factory=dict)
    placebo_by_group: dict[str, list[GroupRate]] = field(default_factory=dict)
    excess: list[ExcessTest] = field(default_factory=list)
    # Each error gap adjusted for the --adjust-for covariates (auditor.adjusted); not in Holm.
    adjusted: list[AdjustedGap] = field(default_factory=list)
    # Each painted arm's excess gap against its erased twin's (auditor.edit_harm).
    edit_harm: list[EditHarmTest] = field(default_factory=list)


def group_columns_of(records: pd.DataFrame) -> list[str]:
    return [c.removeprefix(GROUP_PREFIX) for c in records.columns if c.startswith(GROUP_PREFIX)]


def groupings(group_columns: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Each group column on its own, then their intersection when there are several."""
    out = [(c, [c]) for c in group_columns]
    if len(group_columns) > 1:
        out.append((INTERSECTION.join(group_columns), list(group_columns)))
    return out


def group_labels(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    labels = frame[GROUP_PREFIX + columns[0]].fillna(MISSING_GROUP).astype(str)
    for column in columns[1:]:
        labels = (
            labels + INTERSECTION + frame[GROUP_PREFIX + column].fillna(MISSING_GROUP).astype(str)
        )
    return labels


def arm(probe: str, method: str | None) -> str:
    """A probe's name, with the attribution method that placed its regions when there is one."""
    return probe if method is None else f"{probe}@{method}"


def arm_labels(frame: pd.DataFrame) -> pd.Series:
    """Each record's probe arm (:func:`arm`), from its ``probe`` and ``method`` columns."""
    methods = frame["method"].astype(object).where(frame["method"].notna(), None)
    return pd.Series(
        [arm(p, m) for p, m in zip(frame["probe"], methods, strict=True)],
        index=frame.index,
        dtype=object,
    )


def _by_arm(frame: pd.DataFrame, more: list[str]) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
    """Rows grouped by probe, method (None for probes that no map places) and ``more``."""
    keyed = frame.assign(method=frame["method"].astype(object).where(frame["method"].notna(), ""))
    for key, group in keyed.groupby(["probe", "method", *more], sort=True):
        probe, method, *rest = key
        yield (probe, method or None, *rest), group


def compute_statistics(
    records: pd.DataFrame,
    *,
    alpha: float = 0.05,
    min_group_size: int = 10,
    seed: int = 0,
    mcnemar: str = "exact",
    covers: Mapping[str, str | None] | None = None,
) -> Statistics:
    """All rates and tests of a run, Holm-adjusted together; ``mcnemar`` is the p-value of
    the guided-vs-placebo tests (:func:`mcnemar_p`); ``covers`` says how each probe covers its
    region (``probes.base.Cover``, by probe name), for the edit-harm tests of painted arms.

    Where the records carry covariate columns (``--adjust-for``), each error gap is also
    adjusted for them (:mod:`auditor.adjusted`); those p-values are shown beside the raw gaps
    and are not added to the Holm family."""
    valid = records[records["skip_reason"].isna() & records["probe"].notna()]
    images = valid.drop_duplicates("image_id")
    images = images.assign(error=images["orig_pred"] != images["label"])
    cols = group_columns_of(records)
    grouping_list = groupings(cols)

    def gap(frame: pd.DataFrame, event: str, columns: list[str], **header: Any) -> GapTest:
        rates = rates_by_group(frame, event, columns, alpha, min_group_size)
        result = GapTest(groups=rates, **header)
        run_gap_test(result, monte_carlo_rng(seed, result.id), alpha)
        return result

    error_gaps = [
        gap(
            images,
            "error",
            columns,
            id=f"error_rate/{name}",
            kind="error_rate",
            grouping=name,
            probe=None,
            region_source=None,
            method=None,
        )
        for name, columns in grouping_list
    ]
    flip_gaps: list[GapTest] = []
    placebo_by_group: dict[str, list[GroupRate]] = {}
    flip_overall: dict[str, Rate] = {}
    paired: list[PairedTest] = []
    excess: list[ExcessTest] = []
    pairs_of_arm: dict[tuple[str, str | None], pd.DataFrame] = {}
    for (probe, method, source), frame in _by_arm(valid, ["region_source"]):
        frame = frame.assign(flip=frame["flipped"].astype(bool))
        name_of_arm = arm(probe, method)
        flip_overall[f"{name_of_arm}/{source}"] = wilson(
            int(frame["flip"].sum()), len(frame), alpha
        )
        for name, columns in grouping_list:
            if source == PLACEBO:  # the control's subgroup rates are shown, not tested
                placebo_by_group[f"{name_of_arm}/{name}"] = rates_by_group(
                    frame, "flip", columns, alpha, min_group_size
                )
                continue
            flip_gaps.append(
                gap(
                    frame,
                    "flip",
                    columns,
                    id=f"flip_rate/{name_of_arm}/{source}/{name}",
                    kind="flip_rate",
                    grouping=name,
                    probe=probe,
                    region_source=source,
                    method=method,
                )
            )
    for (probe, method), frame in _by_arm(valid, []):
        sources = set(frame["region_source"])
        if PLACEBO in sources:
            guided_source = next(s for s in sorted(sources) if s != PLACEBO)
            paired.append(paired_test(frame, probe, method, guided_source, alpha, mcnemar))
            pairs = pairs_of_arm[(probe, method)] = paired_arms(frame, guided_source)
            excess.extend(
                excess_test(
                    pairs,
                    group_labels(pairs, columns),
                    test_id=f"excess_flip/{arm(probe, method)}/{name}",
                    probe=probe,
                    method=method,
                    region_source=guided_source,
                    grouping=name,
                    alpha=alpha,
                    min_group_size=min_group_size,
                )
                for name, columns in grouping_list
                if len(pairs)
            )
    result = Statistics(
        alpha=alpha,
        min_group_size=min_group_size,
        groupings=[name for name, _ in grouping_list],
        overall_error=wilson(int(images["error"].sum()), len(images), alpha),
        error_gaps=error_gaps,
        flip_gaps=flip_gaps,
        paired=paired,
        flip_overall=flip_overall,
        placebo_by_group=placebo_by_group,
        excess=excess,
        adjusted=[
            adjusted_gap(images, group_labels(images, columns), covariates, test, alpha)
            for test, (_, columns) in zip(error_gaps, grouping_list, strict=True)
        ]
        if (covariates := covariate_columns_of(records))
        else [],
    )
    adjust(result)
    result.edit_harm = _edit_harm(excess, pairs_of_arm, dict(grouping_list), covers or {}, alpha)
    return result


def _edit_harm(
    excess: list[ExcessTest],
    pairs_of_arm: Mapping[tuple[str, str | None], pd.DataFrame],
    columns_of: Mapping[str, list[str]],
    covers: Mapping[str, str | None],
    alpha: float,
) -> list[EditHarmTest]:
    """The edit-harm test of every significant painted excess gap whose erased twin was tested
    and found none: the findings it decides between reliance and the paint's own effect. They
    are Holm-corrected in a family of their own, apart from the run's: they add no finding."""
    tests = []
    for painted in excess:
        twin = erased_twin(painted, excess, covers)
        if twin is None or not painted.significant or twin.p_value is None or twin.significant:
            continue
        pairs = pairs_of_arm[(painted.probe, painted.method)]
        labels = group_labels(pairs, columns_of[painted.grouping])
        erased_pairs = pairs_of_arm[(twin.probe, twin.method)]
        tests.append(edit_harm_test(painted, twin, pairs, erased_pairs, labels, alpha))
    for harm, outcome in zip(tests, holm([t.p_value for t in tests], alpha), strict=True):
        if outcome is not None:
            harm.p_adjusted, harm.significant = outcome
    return tests


def monte_carlo_rng(seed: int, test_id: str) -> np.random.Generator:
    """The random stream of one Monte Carlo test: fixed by the run seed and the test's id."""
    return np.random.default_rng([seed, zlib.crc32(test_id.encode())])


def rates_by_group(
    frame: pd.DataFrame, event: str, columns: Sequence[str], alpha: float, min_group_size: int
) -> list[GroupRate]:
    """The rate of boolean column ``event`` in each subgroup, sorted by group label."""
    counts = frame.groupby(group_labels(frame, columns))[event].agg(["size", "sum"]).sort_index()
    return [
        GroupRate(str(g), wilson(int(k), int(n), alpha), int(n) >= min_group_size)
        for g, n, k in zip(counts.index, counts["size"], counts["sum"], strict=True)
    ]


def run_gap_test(result: GapTest, rng: np.random.Generator, alpha: float) -> None:
    """Fill in whether the rate differs across the tested groups, and by how much."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    tested = [g for g in result.groups if g.tested]
    table = np.array([[g.rate.k, g.rate.n - g.rate.k] for g in tested], dtype=np.int64)
    result.test, result.statistic, result.p_value, result.monte_carlo_se = contingency_test(
        table, rng
    )
    if len(tested) >= 2:
        hi = max(tested, key=lambda g: g.rate.rate or 0.0)
        lo = min(tested, key=lambda g: g.rate.rate or 0.0)
        result.highest, result.lowest = hi.group, lo.group
        result.effect = (hi.rate.rate or 0.0) - (lo.rate.rate or 0.0)
        pairs = len(tested) * (len(tested) - 1) // 2
        low, high = confint_proportions_2indep(
            hi.rate.k,
            hi.rate.n,
            lo.rate.k,
            lo.rate.n,
            method="newcomb",
            compare="diff",
            alpha=alpha / pairs,
        )
        result.effect_ci = (float(low), float(high))
    result.min_detectable_gap, result.equivalence_bound = detection_bounds(result.groups, alpha)


def contingency_test(table: np.ndarray, rng: np.random.Generator) -> Contingency:
    """Independence of rows and columns of a groups × {event, no event} table.

    "not testable" (no statistic, no p) with fewer than two groups or when every trial had the
    same outcome: no test can see a difference then. ``rng`` is drawn from only when the table
    is too large to enumerate.
    """
    from scipy import stats as sps

    if table.shape[0] < 2 or (table.sum(axis=0) == 0).any():
        return Contingency("not testable", None, None)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    if expected.min() >= MIN_EXPECTED:
        # Pearson's own statistic: no 0.5 added to zero cells (statsmodels' Table does), no
        # Yates correction, and the upper tail by chi2.sf, so a tiny p is not rounded to 0.
        result = sps.chi2_contingency(table, correction=False)
        return Contingency("chi-square", float(result.statistic), float(result.pvalue))
    if table.shape == (2, 2):
        result = sps.fisher_exact(table)
        return Contingency("fisher-exact", float(result.statistic), float(result.pvalue))
    exact = freeman_halton_exact(table, ENUMERATION_LIMIT)
    if exact is not None:
        return Contingency("fisher-exact (enumeration)", *exact)
    statistic, p_value = freeman_halton_monte_carlo(table, rng, MONTE_CARLO_RESAMPLES)
    se = math.sqrt(p_value * (1 - p_value) / MONTE_CARLO_RESAMPLES)
    return Contingency("fisher-exact (monte carlo)", statistic, p_value, se)


def freeman_halton_exact(table: np.ndarray, limit: int) -> tuple[float, float] | None:
    """The Fisher–Freeman–Halton test of a groups × 2 table by full enumeration: (the observed
    table's probability given its margins, p-value), or None when the margins admit more than
    ``limit`` tables (counted first, so a large table costs no enumeration).

    A table with ``k_i`` events in groups of ``n_i`` has probability ``prod C(n_i, k_i) /
    C(N, K)``; p is the sum over the tables at most as probable as the observed one (relative
    tolerance ``PROBABILITY_TOLERANCE``, as in :func:`freeman_halton_monte_carlo`).
    """
    from scipy.special import gammaln

    sizes = table.sum(axis=1)
    events, total = int(table[:, 0].sum()), int(sizes.sum())
    # ways[j]: the partial tables of the rows so far with j events, capped above ``limit`` so
    # the counts stay small; a prefix sum adds each row's 0..n_i events.
    ways = np.zeros(events + 1, dtype=np.int64)
    ways[0] = 1
    for n in sizes:
        cumulative = np.concatenate([[0], np.cumsum(ways)])
        j = np.arange(events + 1)
        ways = np.minimum(cumulative[j + 1] - cumulative[np.maximum(j - n, 0)], limit + 1)
    if ways[events] > limit:
        return None

    def log_comb(n: Any, k: Any) -> Any:
        return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)

    # Grow every partial table row by row, keeping only those the later rows can complete (so
    # no step holds more than the final count); the last row takes the events left.
    room_after = total - np.cumsum(sizes)
    sums, log_p = np.zeros(1, dtype=np.int64), np.zeros(1)
    for n, room in zip(sizes[:-1], room_after[:-1], strict=True):
        low = np.maximum(events - sums - room, 0)
        choices = np.minimum(events - sums, n) - low + 1
        parent = np.repeat(np.arange(len(sums)), choices)
        k = np.arange(choices.sum()) - np.repeat(np.cumsum(choices) - choices - low, choices)
        sums, log_p = sums[parent] + k, log_p[parent] + log_comb(n, np.arange(n + 1))[k]
    log_p += log_comb(sizes[-1], events - sums) - log_comb(total, events)
    observed = float(log_comb(sizes, table[:, 0]).sum() - log_comb(total, events))
    as_likely = log_p <= observed + math.log1p(PROBABILITY_TOLERANCE)
    return math.exp(observed), min(1.0, float(np.exp(log_p[as_likely]).sum()))


def freeman_halton_monte_carlo(
    table: np.ndarray, rng: np.random.Generator, resamples: int
) -> tuple[float, float]:
    """The Fisher–Freeman–Halton test of an r×c table by Monte Carlo: (the observed table's
    probability under independence given its margins, p-value).

    The p-value is ``(b + 1) / (m + 1)``, where ``b`` of ``m`` tables drawn with the same
    margins are at most as probable as the observed one. "At most" allows a relative error of
    ``PROBABILITY_TOLERANCE`` on the probability, as R's ``fisher.test`` does, so tables that
    are equally probable (groups of the same size swapped) count, whatever rounding their
    log-probabilities took.
    """
    from scipy.special import gammaln
    from scipy.stats import random_table

    rows, columns = table.sum(axis=1), table.sum(axis=0)

    def log_probability(tables: np.ndarray) -> np.ndarray:
        constant = gammaln(rows + 1).sum() + gammaln(columns + 1).sum() - gammaln(table.sum() + 1)
        return constant - gammaln(tables + 1).sum(axis=(-2, -1))

    observed = float(log_probability(table))
    drawn = random_table(rows, columns, seed=rng).rvs(resamples)
    tolerance = math.log1p(PROBABILITY_TOLERANCE)
    as_likely = int(np.count_nonzero(log_probability(drawn) <= observed + tolerance))
    return math.exp(observed), (as_likely + 1) / (resamples + 1)


def paired_test(
    frame: pd.DataFrame,
    probe: str,
    method: str | None,
    guided_source: str,
    alpha: float,
    mcnemar: str = "exact",
) -> PairedTest:
    """McNemar's test (exact or mid-p) of guided vs placebo flips over images with both edits."""

    flips = frame.pivot_table(
        index="image_id", columns="region_source", values="flipped", aggfunc="first"
    ).dropna()
    guided = flips[guided_source].astype(bool).to_numpy()
    placebo = flips[PLACEBO].astype(bool).to_numpy()
    both = int((guided & placebo).sum())
    guided_only = int((guided & ~placebo).sum())
    placebo_only = int((~guided & placebo).sum())
    neither = int((~guided & ~placebo).sum())
    n = len(guided)
    kinds = _control_kinds(frame, flips.index)
    p_value = None
    if guided_only + placebo_only > 0:
        p_value = mcnemar_p(guided_only, placebo_only, mid_p=mcnemar == "mid-p")
    return PairedTest(
        id=f"guided_vs_placebo/{arm(probe, method)}",
        probe=probe,
        region_source=guided_source,
        method=method,
        n_pairs=n,
        guided=wilson(int(guided.sum()), n, alpha),
        placebo=wilson(int(placebo.sum()), n, alpha),
        both=both,
        guided_only=guided_only,
        placebo_only=placebo_only,
        neither=neither,
        test=("mid-p McNemar" if mcnemar == "mid-p" else "exact McNemar")
        if p_value is not None
        else "not testable",
        p_value=p_value,
        effect=(guided.mean() - placebo.mean()) if n else None,
        control_kinds=kinds,
    )


def _control_kinds(frame: pd.DataFrame, paired: pd.Index) -> dict[str, int]:
    """How many of the ``paired`` images' placebos were of each kind; records written before
    control kinds were recorded had same-shape placebos only."""
    controls = frame[(frame["region_source"] == PLACEBO) & frame["image_id"].isin(paired)]
    kinds = controls.get("control_kind", pd.Series(SAME_SHAPE, index=controls.index))
    counts = kinds.fillna(SAME_SHAPE).value_counts()
    return {kind: int(counts[kind]) for kind in CONTROL_KINDS if kind in counts}


def mcnemar_p(first_only: int, second_only: int, *, mid_p: bool = False) -> float:
    """Two-sided McNemar p from the discordant counts: the exact binomial test of
    ``first_only`` of ``first_only + second_only`` at 1/2 (doubled smaller tail), or its mid-p
    version, which counts the observed count's own probability half (Fagerland, Lydersen and
    Laake 2013: closer to nominal size, no longer guaranteed at most α)."""
    from scipy.stats import binom

    n, smaller = first_only + second_only, min(first_only, second_only)
    tail = float(binom.cdf(smaller, n, 0.5))
    if mid_p:
        tail -= 0.5 * float(binom.pmf(smaller, n, 0.5))
    return min(1.0, 2 * tail)


def holm(p_values: Sequence[float | None], alpha: float) -> list[tuple[float, bool] | None]:
    """Holm over one family of tests: each test's adjusted p-value and whether it rejects at
    ``alpha``, in order; None for a test without a p-value (it could not run, so it is not in
    the family)."""
    from statsmodels.stats.multitest import multipletests

    tested = [p for p in p_values if p is not None]
    if not tested:
        return [None] * len(p_values)
    reject, adjusted, _, _ = multipletests(tested, alpha=alpha, method="holm")
    outcomes = iter((float(a), bool(r)) for a, r in zip(adjusted, reject, strict=True))
    return [None if p is None else next(outcomes) for p in p_values]


def paired_difference_ci(
    both: int, first_only: int, second_only: int, neither: int, alpha: float
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 from a paired 2×2 table.

    ``p1 = (both + first_only) / n`` and ``p2 = (both + second_only) / n``. The correlation term
    is Newcombe's: ``(ad - bc - n/2) / sqrt(...)`` when ``ad - bc > n/2``, 0 when ``0 <= ad - bc
    <= n/2``, ``(ad - bc) / sqrt(...)`` when negative, and 0 when a margin is empty.

    Raises:
        ValueError: the table is empty.
    """
    n = both + first_only + second_only + neither
    if n == 0:
        raise ValueError("an empty table has no difference to bound")
    first, second = both + first_only, both + second_only
    p1, p2 = first / n, second / n
    r1, r2 = wilson(first, n, alpha), wilson(second, n, alpha)
    assert r1.ci_low is not None and r1.ci_high is not None, "n > 0"
    assert r2.ci_low is not None and r2.ci_high is not None, "n > 0"
    margins = first * (n - first) * second * (n - second)
    cross = both * neither - first_only * second_only
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > 0 else cross) / math.sqrt(margins)
    down1, up1 = p1 - r1.ci_low, r1.ci_high - p1
    down2, up2 = p2 - r2.ci_low, r2.ci_high - p2
    low = (p1 - p2) - math.sqrt(max(down1**2 - 2 * phi * down1 * up2 + up2**2, 0.0))
    high = (p1 - p2) + math.sqrt(max(up1**2 - 2 * phi * up1 * down2 + down2**2, 0.0))
    return (max(low, -1.0), min(high, 1.0))


def adjust(result: Statistics) -> None:
    """Holm-adjust every p-value of the run together and mark what is significant."""
    tests: list[GapTest | PairedTest | ExcessTest] = [
        *result.error_gaps,
        *result.flip_gaps,
        *result.paired,
        *result.excess,
    ]
    for test, outcome in zip(tests, holm([t.p_value for t in tests], result.alpha), strict=True):
        if outcome is not None:
            test.p_adjusted, test.significant = outcome
    # The excess at equal confidence is a second look at the same gaps, so it is corrected in a
    # family of its own: a run shows a dozen of them, and one raw p below α proves little.
    at_equal_confidence = holm([t.adjusted_p_value for t in result.excess], result.alpha)
    for excess, outcome in zip(result.excess, at_equal_confidence, strict=True):
        if outcome is not None:
            excess.adjusted_p_adjusted = outcome[0]
