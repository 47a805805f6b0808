"""summary.json's statistics must match an independent recomputation from results.parquet."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from auditor.policy import Policy, judge_run
from auditor.records import PLACEBO
from auditor.stats import (
    ENUMERATION_LIMIT,
    MONTE_CARLO_RESAMPLES,
    GapTest,
    GroupRate,
    compute_statistics,
    contingency_test,
    freeman_halton_monte_carlo,
    mcnemar_p,
    paired_difference_ci,
    run_gap_test,
)
from auditor.stats import wilson as stats_wilson
from auditor.store import RunStore
from tests.conftest import audit, load_summary, save_torchscript

TOL = 1e-9
Z = sps.norm.ppf(0.975)


def wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def holm(p_values: list[float]) -> list[float]:
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return list(adjusted)


def expected_p(table: np.ndarray) -> tuple[str, float | None]:
    if table.shape[0] < 2 or (table.sum(axis=0) == 0).any():
        return "not testable", None
    _, p, _, expected = sps.chi2_contingency(table, correction=False)
    if expected.min() >= 5:
        return "chi-square", p
    if table.shape == (2, 2):
        return "fisher-exact", sps.fisher_exact(table).pvalue
    if table_count(table) <= ENUMERATION_LIMIT:
        return "fisher-exact (enumeration)", exact_freeman_halton(table)
    return "fisher-exact (monte carlo)", exact_freeman_halton(table)


def table_count(table: np.ndarray) -> int:
    """How many groups × 2 tables share ``table``'s margins: the coefficient of x^K in
    prod (1 + x + ... + x^n_i), by Python integers."""
    events = int(table[:, 0].sum())
    ways = [1] + [0] * events
    for n in table.sum(axis=1):
        ways = [sum(ways[max(0, j - int(n)) : j + 1]) for j in range(events + 1)]
    return ways[events]


def exact_freeman_halton(table: np.ndarray) -> float:
    """The Fisher–Freeman–Halton p of a groups × 2 table by full enumeration in exact
    arithmetic: each table with the same margins weighs prod C(n_i, k_i) (its probability
    times C(N, K)); p is the total weight of the tables at most as probable as the observed one
    (1e-7 relative tolerance, compared exactly), over C(N, K)."""
    sizes, events = [int(n) for n in table.sum(axis=1)], int(table[:, 0].sum())

    def tables(row: int, left: int) -> Iterator[tuple[int, ...]]:
        if row == len(sizes) - 1:
            if left <= sizes[row]:
                yield (left,)
            return
        for k in range(min(left, sizes[row]) + 1):
            for rest in tables(row + 1, left - k):
                yield (k, *rest)

    def weight(ks: tuple[int, ...]) -> int:
        return math.prod(math.comb(n, k) for n, k in zip(sizes, ks, strict=True))

    observed, tolerance = weight(tuple(int(k) for k in table[:, 0])), Fraction(1, 10**7)
    at_most = sum(w for ks in tables(0, events) if (w := weight(ks)) <= observed * (1 + tolerance))
    return float(Fraction(at_most, math.comb(sum(sizes), events)))


def product_enumeration(table: np.ndarray) -> tuple[Fraction, Fraction]:
    """(The observed table's probability, the Fisher–Freeman–Halton p) of a small groups × 2
    table as exact fractions, from every cell vector of itertools.product that keeps the
    margins: a second enumeration, sharing no code with the first or with auditor.stats."""
    sizes, counts = [int(n) for n in table.sum(axis=1)], [int(k) for k in table[:, 0]]
    total = Fraction(1, math.comb(sum(sizes), sum(counts)))

    def probability(ks: tuple[int, ...]) -> Fraction:
        return math.prod(math.comb(n, k) for n, k in zip(sizes, ks, strict=True)) * total

    observed = probability(tuple(counts))
    same_margins = (
        ks for ks in itertools.product(*(range(n + 1) for n in sizes)) if sum(ks) == sum(counts)
    )
    p = sum(
        (
            q
            for ks in same_margins
            if (q := probability(ks)) <= observed * Fraction(10**7 + 1, 10**7)
        ),
        Fraction(0),
    )
    return observed, p


def monte_carlo_tolerance(p: float, resamples: int = 20_000) -> float:
    """Four Monte Carlo standard errors (and the +1 of (b + 1) / (m + 1))."""
    return 4 * math.sqrt(p * (1 - p) / resamples) + 1 / (resamples + 1)


def labels_of(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    return frame[[f"group_{c}" for c in columns]].astype(str).agg("×".join, axis=1)


def check_against_recomputation(stats: dict, records: pd.DataFrame, min_group: int) -> None:
    valid = records[records["skip_reason"].isna() & records["probe"].notna()]
    images = valid.drop_duplicates("image_id")
    group_cols = [c.removeprefix("group_") for c in records.columns if c.startswith("group_")]
    groupings = {c: [c] for c in group_cols}
    if len(group_cols) > 1:
        groupings["×".join(group_cols)] = group_cols
    all_tests = []

    def check_gap(test: dict, frame: pd.DataFrame, events: pd.Series) -> None:
        labels = labels_of(frame, groupings[test["grouping"]])
        rows = []
        for group in test["groups"]:
            member = (labels == group["group"]).to_numpy()
            n, k = int(member.sum()), int(events[member].sum())
            assert (group["rate"]["n"], group["rate"]["k"]) == (n, k)
            low, high = wilson(k, n)
            assert (
                abs(group["rate"]["ci_low"] - low) < TOL
                and abs(group["rate"]["ci_high"] - high) < TOL
            )
            if n >= min_group:
                rows.append([k, n - k])
        name, p = expected_p(np.array(rows))
        assert test["test"] == name
        if p is None:
            assert test["p_value"] is None
        else:
            tolerance = monte_carlo_tolerance(p) if "monte carlo" in name else TOL
            assert abs(test["p_value"] - p) < tolerance, (test["id"], test["p_value"], p)
            all_tests.append(test)
        if "monte carlo" in name:
            se = math.sqrt(test["p_value"] * (1 - test["p_value"]) / MONTE_CARLO_RESAMPLES)
            assert test["monte_carlo_se"] == pytest.approx(se, rel=1e-12)
        else:
            assert test["monte_carlo_se"] is None

    for test in stats["error_gaps"]:
        check_gap(test, images, (images["orig_pred"] != images["label"]).to_numpy())

    def same_arm(test: dict) -> pd.Series:
        method = (
            valid["method"].isna() if test["method"] is None else valid["method"] == test["method"]
        )
        return (valid["probe"] == test["probe"]) & method

    for test in stats["flip_gaps"]:
        frame = valid[same_arm(test) & (valid["region_source"] == test["region_source"])]
        check_gap(test, frame, frame["flipped"].astype(bool).to_numpy())
    for test in stats["paired"]:
        frame = valid[same_arm(test)]
        wide = frame.pivot_table(
            index="image_id", columns="region_source", values="flipped", aggfunc="first"
        ).dropna()
        guided = wide[test["region_source"]].astype(bool)
        placebo = wide[PLACEBO].astype(bool)
        b, c = int((guided & ~placebo).sum()), int((~guided & placebo).sum())
        assert (test["guided_only"], test["placebo_only"], test["n_pairs"]) == (b, c, len(wide))
        p = sps.binomtest(min(b, c), b + c, 0.5).pvalue
        assert abs(test["p_value"] - p) < TOL
        all_tests.append(test)
    # The excess tests' own p-values are recomputed in tests/test_excess.py; here they join
    # the one Holm family of the run.
    all_tests += [t for t in stats["excess"] if t["p_value"] is not None]
    adjusted = holm([t["p_value"] for t in all_tests])
    for test, p_adj in zip(all_tests, adjusted, strict=True):
        assert abs(test["p_adjusted"] - p_adj) < TOL, test["id"]
        assert test["significant"] == (p_adj <= stats["alpha"])  # Holm rejects at ≤


@pytest.mark.slow
def test_summary_statistics_match_independent_recomputation(biased_run: Path) -> None:
    summary = load_summary(biased_run)
    records = pd.read_parquet(biased_run / "results.parquet")
    check_against_recomputation(
        summary["statistics"], records, min_group=summary["config"]["min_group_size"]
    )


def _synthetic_records(rng: np.random.Generator, n: int, flip_p: dict[str, float]) -> pd.DataFrame:
    rows = []
    for i in range(n):
        gender, race = ("female", "male")[i % 2], ("ABC"[i % 3] if i < n - 3 else "D")
        label = ("female", "male")[int(rng.random() < 0.5)]
        pred = label if rng.random() < 0.8 else ("male" if label == "female" else "female")
        for source in ("attribution", PLACEBO):
            flipped = bool(rng.random() < (flip_p[gender] if source == "attribution" else 0.05))
            rows.append(
                {
                    "image_id": f"{i}.png",
                    "label": label,
                    "group_gender": gender,
                    "group_race": race,
                    "probe": "blackout",
                    "region_source": source,
                    "method": "gradcam",
                    "skip_reason": None,
                    "orig_pred": pred,
                    "flipped": flipped,
                    "direction": None,
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [40, 400])
def test_small_and_large_counts_use_the_right_test(n: int) -> None:
    """Small tables go to Fisher (2×2 or enumerated), large ones to chi-square; all match."""
    records = _synthetic_records(np.random.default_rng(n), n, {"female": 0.3, "male": 0.1})
    result = dataclasses.asdict(compute_statistics(records, alpha=0.05, min_group_size=5, seed=3))
    check_against_recomputation(result, records, min_group=5)
    used = {t["test"] for t in result["flip_gaps"] + result["error_gaps"]}
    assert used & ({"fisher-exact", "fisher-exact (enumeration)"} if n == 40 else {"chi-square"})


# Every event vector of these group sizes: equal sizes (tables that tie in probability), a
# group of one, and all-zero or all-event columns (not testable).
ENUMERATED_SIZES = [(4, 4, 4), (2, 3, 5), (3, 3, 3, 3), (1, 6, 6), (10, 10, 10), (2, 2, 2, 2, 2)]


@pytest.mark.parametrize("sizes", ENUMERATED_SIZES)
def test_small_tables_get_the_exact_enumerated_fisher_p(sizes: tuple[int, ...]) -> None:
    """Every testable table here below the chi-square rule is enumerated, and its p and
    observed probability match an itertools.product enumeration in fractions to 1e-12."""
    enumerated = 0
    for events in itertools.product(*(range(n + 1) for n in sizes)):
        table = np.array([[k, n - k] for k, n in zip(events, sizes, strict=True)])
        name, statistic, p, se = contingency_test(table, np.random.default_rng(0))
        assert name == expected_p(table)[0], table
        assert se is None
        if name == "fisher-exact (enumeration)":
            observed, exact = product_enumeration(table)
            assert p is not None and statistic is not None
            assert abs(p - exact) < 1e-12 and abs(statistic - observed) < 1e-12, table
            enumerated += 1
    assert enumerated > 0


@pytest.mark.parametrize(
    ("table", "exact"),
    [
        ([[2, 48], [3, 47], [1, 49]], 0.8714229886),  # groups of one size: ties
        ([[0, 20], [1, 19], [3, 17], [0, 20]], 0.1852451346),  # zero cells
        ([[5, 5], [1, 9], [0, 10]], 0.0265251989),
    ],
)
def test_larger_enumerated_tables_match_both_references(
    table: list[list[int]], exact: float
) -> None:
    """Groups of 10 to 50, beyond the grid above, are enumerated too: the pruned reference
    and the product one agree with the p used, to 1e-12."""
    array = np.array(table)
    name, _, p, se = contingency_test(array, np.random.default_rng(0))
    assert (name, se) == ("fisher-exact (enumeration)", None)
    assert p is not None and abs(p - float(product_enumeration(array)[1])) < 1e-12
    assert abs(p - exact_freeman_halton(array)) < 1e-12 and p == pytest.approx(exact, abs=1e-10)


def monte_carlo_grid() -> list[list[list[int]]]:
    """3×2 tables with groups of 5 to 50, events at several rates: the Monte Carlo path is
    forced on them, and they can still be enumerated."""
    sizes = [(10, 10, 10), (20, 30, 50), (50, 50, 50), (5, 25, 50), (40, 40, 12)]
    rates = [(0.0, 0.05, 0.1), (0.1, 0.1, 0.1), (0.2, 0.0, 0.05), (0.02, 0.1, 0.3)]
    return [
        [[round(n * r), n - round(n * r)] for n, r in zip(ns, rs, strict=True)]
        for ns in sizes
        for rs in rates
        if any(round(n * r) for n, r in zip(ns, rs, strict=True))
    ]


@pytest.mark.parametrize(
    "table",
    [[[2, 48], [3, 47], [1, 49]], [[0, 20], [1, 19], [3, 17], [0, 20]], *monte_carlo_grid()],
)
def test_monte_carlo_freeman_halton_is_never_below_the_exact_p(table: list[list[int]]) -> None:
    """The Monte Carlo p is never below the exact one by more than 3 standard errors, nor
    above it by more than 4 (and the +1 of (b + 1) / (m + 1)), and it is reproducible by
    seed. Equally probable tables (groups of one size, swapped) count as at most as probable:
    on [[2,48],[3,47],[1,49]] scipy's Monte Carlo gave 0.536 against the exact 0.871."""
    exact = exact_freeman_halton(np.array(table))
    m = MONTE_CARLO_RESAMPLES
    _, p = freeman_halton_monte_carlo(np.array(table), np.random.default_rng(0), m)
    se = math.sqrt(exact * (1 - exact) / m)
    assert exact - 3 * se <= p < exact + monte_carlo_tolerance(exact, m)
    again = freeman_halton_monte_carlo(np.array(table), np.random.default_rng(0), m)
    assert again[1] == p  # reproducible by seed


def test_only_monte_carlo_tests_carry_a_standard_error() -> None:
    """A table whose margins admit more than ENUMERATION_LIMIT tables (12 groups of 10, 25
    events: expected counts 2.1) goes to Monte Carlo, with SE sqrt(p(1 − p)/m), the same for
    the same seed; chi-square, 2×2 Fisher and enumerated tests carry none."""
    large = np.array([[2, 8]] * 11 + [[3, 7]])
    assert table_count(large) > ENUMERATION_LIMIT
    name, statistic, p, se = contingency_test(large, np.random.default_rng(5))
    assert name == "fisher-exact (monte carlo)" and p is not None
    assert se == pytest.approx(math.sqrt(p * (1 - p) / MONTE_CARLO_RESAMPLES), rel=1e-12)
    assert contingency_test(large, np.random.default_rng(5)) == (name, statistic, p, se)
    for table, test in [
        ([[30, 70], [50, 50]], "chi-square"),
        ([[1, 9], [4, 6]], "fisher-exact"),
        ([[1, 9], [4, 6], [0, 10]], "fisher-exact (enumeration)"),
    ]:
        result = contingency_test(np.array(table), np.random.default_rng(5))
        assert (result.test, result.monte_carlo_se) == (test, None)


def test_pearson_chi_square_adds_nothing_to_zero_cells_and_keeps_tiny_p() -> None:
    """statsmodels' Table adds 0.5 to zero cells (22.55 here, Pearson's is 24.0), and 1 - cdf
    rounds a p below 1e-16 to exactly 0."""
    name, statistic, p, _ = contingency_test(np.array([[0, 60], [20, 40]]), np.random.default_rng())
    assert name == "chi-square" and statistic == pytest.approx(24.0)
    assert p == pytest.approx(sps.chi2.sf(24.0, 1))
    _, statistic, p, _ = contingency_test(
        np.array([[300, 700], [700, 300]]), np.random.default_rng()
    )
    assert p is not None and 0 < p == pytest.approx(sps.chi2.sf(statistic, 1), rel=1e-9)
    assert p < 1e-40


def test_no_events_is_not_testable_and_small_groups_are_left_out() -> None:
    records = _synthetic_records(np.random.default_rng(0), 60, {"female": 0.0, "male": 0.0})
    records.loc[records["region_source"] == PLACEBO, "flipped"] = False
    result = compute_statistics(records, min_group_size=5)
    gender_flips = next(t for t in result.flip_gaps if t.grouping == "gender")
    assert gender_flips.test == "not testable" and gender_flips.p_value is None
    race = next(t for t in result.error_gaps if t.grouping == "race")
    assert [g.tested for g in race.groups] == [True, True, True, False]  # group D has 3 images


def test_the_effect_interval_matches_a_published_example() -> None:
    """Newcombe's hybrid score interval for paired proportions on Cavo et al.'s table (59, 6,
    16, 80), as printed in Fagerland, Lydersen & Laake (2017), ch. 8: -0.0621 (-0.1186 to
    -0.0046)."""
    low, high = paired_difference_ci(59, 6, 16, 80, alpha=0.05)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def _null_gap(rng: np.random.Generator, groups: int, size: int, rate: float) -> GapTest:
    """A gap test of ``groups`` groups of ``size`` with one true ``rate``: no real gap."""
    rates = [
        GroupRate(f"g{i}", stats_wilson(int(k), size, 0.05), True)
        for i, k in enumerate(rng.binomial(size, rate, groups))
    ]
    test = GapTest("t", "error_rate", "g", None, None, None, rates)
    run_gap_test(test, rng, 0.05)
    return test


def test_the_gap_interval_is_simultaneous_over_the_pairs() -> None:
    """The highest-minus-lowest gap is picked after looking: with 6 groups of 200 and no real
    gap a plain 95 % interval excluded 0 in 722 of 2,000 replicates. Bonferroni over the 15
    pairs keeps it at most α (within the binomial band); it is Newcombe's square-and-add of
    Wilson intervals at α / 15, recomputed here by hand."""
    rng = np.random.default_rng(0)
    excluded = 0
    for _ in range(2_000):
        test = _null_gap(rng, groups=6, size=200, rate=0.3)
        assert test.effect_ci is not None
        excluded += test.effect_ci[0] > 0
    assert excluded / 2_000 <= 0.05 + 2.58 * math.sqrt(0.05 * 0.95 / 2_000)

    test = _null_gap(np.random.default_rng(1), groups=4, size=50, rate=0.4)
    hi = next(g.rate for g in test.groups if g.group == test.highest)
    lo = next(g.rate for g in test.groups if g.group == test.lowest)
    (h_low, h_high), (l_low, l_high) = (
        wilson(r.k, r.n, z=sps.norm.isf(0.05 / 6 / 2)) for r in (hi, lo)
    )
    p1, p2 = hi.k / hi.n, lo.k / lo.n
    low = p1 - p2 - math.hypot(p1 - h_low, l_high - p2)
    high = p1 - p2 + math.hypot(h_high - p1, p2 - l_low)
    assert test.effect_ci == pytest.approx((low, high), abs=1e-9)


@pytest.mark.parametrize(("first", "second"), [(7, 2), (0, 5), (3, 3), (40, 25)])
def test_mcnemar_exact_and_mid_p_match_their_definitions(first: int, second: int) -> None:
    """Exact: the two-sided binomial test at 1/2. Mid-p: the smaller tail with the observed
    count's own probability halved, doubled (Fagerland et al. 2013)."""
    n, m = first + second, min(first, second)
    assert mcnemar_p(first, second) == pytest.approx(sps.binomtest(first, n).pvalue, abs=1e-12)
    smaller_tail = sum(math.comb(n, k) for k in range(m)) + math.comb(n, m) / 2
    assert mcnemar_p(first, second, mid_p=True) == pytest.approx(
        min(1.0, 2 * smaller_tail / 2**n), abs=1e-12
    )
    assert mcnemar_p(first, second, mid_p=True) <= mcnemar_p(first, second)


class CentreBrightness(torch.nn.Module):
    """Calls an image "male" when its centre is brighter than the rest: blacking out the
    centre (where its gradient is) flips it, the same square elsewhere mostly does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        centre = x[:, :, h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].mean(dim=(1, 2, 3))
        score = 8 * (centre - x.mean(dim=(1, 2, 3)))
        return torch.stack([-score, score], dim=1)


def test_mid_p_is_chosen_per_run_and_used_by_the_gate(
    small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    model = save_torchscript(CentreBrightness(), tmp_path / "centre.ts")
    meta = {"classes": ["female", "male"], "input_size": 48, "mean": [0.5] * 3, "std": [0.25] * 3}
    model.with_suffix(".json").write_text(json.dumps(meta))
    data = small_dataset(n=40)
    exact, mid = tmp_path / "exact", tmp_path / "mid"
    flags = ["--probes", "blackout", "--method", "saliency", "--region-area", "0.05"]
    assert audit(model, data, exact, *flags)[0] == 0
    code, output = audit(model, data, mid, *flags, "--mcnemar", "mid-p")
    assert code == 0, output
    summaries = {run: load_summary(run) for run in (exact, mid)}
    assert summaries[mid]["config"]["mcnemar"] == "mid-p"
    (a,), (b,) = (s["statistics"]["paired"] for s in summaries.values())
    assert (a["test"], b["test"]) == ("exact McNemar", "mid-p McNemar")
    assert b["p_value"] == pytest.approx(mcnemar_p(b["guided_only"], b["placebo_only"], mid_p=True))
    assert b["p_value"] <= a["p_value"]
    policy = Policy(max_flip_rate={"default": 0.99})
    assert judge_run(mid, policy).results  # recomputed with the run's own test
    stored = RunStore.open(mid).summary().statistics.paired[0]
    assert stored.test == "mid-p McNemar"
    code, output = audit(model, data, tmp_path / "bad", "--mcnemar", "fisher")
    assert code == 2 and "--mcnemar" in output
