"""The excess flip rate separates reliance on a region from harm done by the edit itself.

Worlds made here: each image gets a guided and a placebo edit; a subgroup whose model relies on
the region flips more under the guided edit only, a subgroup that the edit itself disturbs flips
more under both, and a subgroup of less confident predictions flips more under both, and more so
under the guided one. Only the first is reliance.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, chi2, norm

from auditor.excess import MARGIN_STRATA, ExcessTest, excess_test, paired_arms
from auditor.policy import Policy, judge
from auditor.records import PLACEBO
from auditor.stats import Statistics, compute_statistics, paired_difference_ci

ALPHA = 0.05


def _records(
    rng: np.random.Generator,
    groups: dict[str, int],
    guided_p: dict[str, float],
    placebo_p: dict[str, float],
    confidence: dict[str, tuple[float, float]] | None = None,
    reliance_on_confidence: float = 0.0,
) -> pd.DataFrame:
    """Two rows per image (guided attribution region, placebo), with flips drawn per arm.

    ``confidence`` gives each group's range of orig_p_pred (uniform); with
    ``reliance_on_confidence`` the guided arm's flip probability grows by that much as the
    confidence falls from 1 to 0.5, the same in every group.
    """
    rows = []
    for group, n in groups.items():
        low, high = (confidence or {}).get(group, (0.6, 1.0))
        for i in range(n):
            p_pred = rng.uniform(low, high)
            boost = reliance_on_confidence * (1.0 - p_pred) / 0.5
            for source, p in (
                ("attribution", guided_p[group] + boost),
                (PLACEBO, placebo_p[group]),
            ):
                flipped = bool(rng.random() < p)
                rows.append(
                    {
                        "image_id": f"{group}-{i}",
                        "label": "a",
                        "orig_pred": "a",
                        "skip_reason": None,
                        "probe": "blackout",
                        "method": "gradcam",
                        "region_source": source,
                        "flipped": flipped,
                        "orig_p_pred": p_pred,
                        "probed_p_orig_pred": p_pred - (0.4 if flipped else 0.1) * rng.random(),
                        "group_gender": group,
                    }
                )
    return pd.DataFrame(rows)


def _excess(records: pd.DataFrame) -> tuple[ExcessTest, Statistics]:
    stats = compute_statistics(records, alpha=ALPHA, min_group_size=10)
    (test,) = [t for t in stats.excess if t.grouping == "gender"]
    return test, stats


def test_reliance_in_one_group_is_found() -> None:
    records = _records(
        np.random.default_rng(0),
        {"female": 300, "male": 300},
        guided_p={"female": 0.55, "male": 0.15},
        placebo_p={"female": 0.10, "male": 0.10},
    )
    test, stats = _excess(records)
    assert test.significant and test.highest == "female" and test.lowest == "male"
    assert test.effect_ci is not None and test.effect_ci[0] > 0.2
    assert test in stats.excess and test.p_adjusted is not None  # in the Holm family


def test_edit_harm_alone_is_not_reliance() -> None:
    """The edit disturbs one group's images wherever it lands: a large raw flip gap, no excess."""
    records = _records(
        np.random.default_rng(1),
        {"female": 300, "male": 300},
        guided_p={"female": 0.5, "male": 0.1},
        placebo_p={"female": 0.5, "male": 0.1},
    )
    test, stats = _excess(records)
    (raw,) = [g for g in stats.flip_gaps if g.grouping == "gender"]
    assert raw.significant, "the world must have a raw flip gap for this test to mean anything"
    assert not test.significant and test.p_value is not None and test.p_value > ALPHA


def test_per_group_excess_and_intervals_match_a_recomputation() -> None:
    records = _records(
        np.random.default_rng(2),
        {"a": 80, "b": 120, "c": 40},
        guided_p={"a": 0.4, "b": 0.2, "c": 0.3},
        placebo_p={"a": 0.1, "b": 0.1, "c": 0.2},
    )
    test, _ = _excess(records)
    wide = records.pivot_table(
        index="image_id", columns="region_source", values="flipped", aggfunc="first"
    )
    drop = records.assign(drop=records["orig_p_pred"] - records["probed_p_orig_pred"]).pivot_table(
        index="image_id", columns="region_source", values="drop", aggfunc="first"
    )
    for group in test.groups:
        ids = [i for i in wide.index if i.startswith(group.group + "-")]
        guided = wide.loc[ids, "attribution"].astype(bool)
        placebo = wide.loc[ids, PLACEBO].astype(bool)
        assert group.n_pairs == len(ids)
        assert group.excess == pytest.approx(guided.mean() - placebo.mean(), abs=1e-12)
        expected_ci = paired_difference_ci(
            int((guided & placebo).sum()),
            int((guided & ~placebo).sum()),
            int((~guided & placebo).sum()),
            int((~guided & ~placebo).sum()),
            ALPHA,
        )
        assert group.excess_ci == pytest.approx(expected_ci, abs=1e-12)
        difference = drop.loc[ids, "attribution"] - drop.loc[ids, PLACEBO]
        assert group.excess_drop == pytest.approx(difference.mean(), abs=1e-12)


def _hand_made_wald(frame: pd.DataFrame, *, by_confidence: bool) -> float:
    """The Wald statistic of the group terms of OLS(e ~ group [+ confidence strata]) with the
    HC3 sandwich, written out with numpy."""
    columns = [np.ones(len(frame))] + [
        (frame["group_gender"] == g).to_numpy(float) for g in ("b", "c")
    ]
    if by_confidence:
        strata = pd.qcut(frame["orig_p_pred"].rank(method="first"), MARGIN_STRATA, labels=False)
        columns += [(strata == s).to_numpy(float) for s in range(1, MARGIN_STRATA)]
    design = np.column_stack(columns)
    y = frame["e"].to_numpy()
    bread = np.linalg.inv(design.T @ design)
    beta = bread @ design.T @ y
    leverage = np.einsum("ij,jk,ik->i", design, bread, design)
    residual = (y - design @ beta) / (1 - leverage)
    covariance = bread @ (design.T * residual**2) @ design @ bread
    contrast = np.zeros((2, design.shape[1]))
    contrast[0, 1] = contrast[1, 2] = 1.0
    estimate = contrast @ beta
    return float(estimate @ np.linalg.solve(contrast @ covariance @ contrast.T, estimate))


def test_the_wald_statistics_match_a_hand_made_hc3_sandwich() -> None:
    records = _records(
        np.random.default_rng(3),
        {"a": 90, "b": 110, "c": 60},
        guided_p={"a": 0.45, "b": 0.2, "c": 0.3},
        placebo_p={"a": 0.1, "b": 0.1, "c": 0.15},
    )
    test, _ = _excess(records)
    first = records[records["region_source"] == "attribution"].set_index("image_id")
    second = records[records["region_source"] == PLACEBO].set_index("image_id")
    frame = first[["group_gender", "orig_p_pred"]].assign(
        e=first["flipped"].astype(float) - second.loc[first.index, "flipped"].astype(float)
    )
    frame = frame.sort_index()
    raw = _hand_made_wald(frame, by_confidence=False)
    assert test.statistic == pytest.approx(raw, rel=1e-9)
    assert test.p_value == pytest.approx(float(chi2.sf(raw, 2)), rel=1e-9)
    adjusted = _hand_made_wald(frame, by_confidence=True)
    assert test.adjusted_p_value == pytest.approx(float(chi2.sf(adjusted, 2)), rel=1e-9)


def test_less_confident_groups_are_compared_at_the_same_confidence() -> None:
    """Reliance that grows as confidence falls, identical in both groups: one group's
    predictions are less confident, so its raw excess is larger and the raw test finds it. At
    equal confidence the test rejects no more than α over many such worlds."""
    raw_rejected, adjusted_rejected = 0, 0
    worlds = 200
    rng = np.random.default_rng(4)
    for _ in range(worlds):
        records = _records(
            rng,
            {"female": 150, "male": 150},
            guided_p={"female": 0.1, "male": 0.1},
            placebo_p={"female": 0.1, "male": 0.1},
            confidence={"female": (0.5, 0.8), "male": (0.7, 1.0)},
            reliance_on_confidence=0.5,
        )
        pairs = paired_arms(records, "attribution")
        test = excess_test(
            pairs,
            pairs["group_gender"],
            test_id="excess",
            probe="blackout",
            method="gradcam",
            region_source="attribution",
            grouping="gender",
            alpha=ALPHA,
            min_group_size=10,
        )
        assert test.p_value is not None and test.adjusted_p_value is not None
        raw_rejected += test.p_value <= ALPHA
        adjusted_rejected += test.adjusted_p_value <= ALPHA
    assert raw_rejected > 0.5 * worlds, "the world must confound confidence with the group"
    band = binom.interval(0.95, worlds, ALPHA)[1]
    assert adjusted_rejected <= band, f"{adjusted_rejected} of {worlds} (raw: {raw_rejected})"


def test_a_group_without_discordant_pairs_is_not_testable_and_says_why() -> None:
    records = _records(
        np.random.default_rng(5),
        {"female": 30, "male": 30},
        guided_p={"female": 0.0, "male": 0.0},
        placebo_p={"female": 0.0, "male": 0.0},
    )
    test, _ = _excess(records)
    assert test.test == "not testable" and test.p_value is None
    assert test.reason == "no image flipped under one edit and not the other"


def test_groups_that_fill_whole_confidence_strata_have_no_equal_confidence_gap() -> None:
    """24 and 36 images, every 'female' one less confident than every 'male' one: the quintile
    strata of 12 hold one group each, so group and stratum cannot be told apart. The raw test
    stands; the equal-confidence comparison is left out, not fitted on a singular design."""
    records = _records(
        np.random.default_rng(6),
        {"female": 24, "male": 36},
        guided_p={"female": 0.5, "male": 0.1},
        placebo_p={"female": 0.1, "male": 0.1},
        confidence={"female": (0.5, 0.6), "male": (0.9, 1.0)},
    )
    test, _ = _excess(records)
    assert test.p_value is not None and test.effect is not None
    assert test.adjusted_p_value is None and test.adjusted_effect is None


def test_the_policy_gates_on_the_excess_not_the_raw_gap() -> None:
    """``max_excess_flip_rate_gap`` fails the planted reliance and passes pure edit harm,
    whose raw flip gap would fail ``max_flip_rate_gap``; equivalence needs enough pairs."""
    reliance = _records(
        np.random.default_rng(6),
        {"female": 300, "male": 300},
        guided_p={"female": 0.55, "male": 0.15},
        placebo_p={"female": 0.10, "male": 0.10},
    )
    harm = _records(
        np.random.default_rng(7),
        {"female": 300, "male": 300},
        guided_p={"female": 0.5, "male": 0.1},
        placebo_p={"female": 0.5, "male": 0.1},
    )
    gate = Policy(max_excess_flip_rate_gap={"blackout": 0.1}, groupings=("gender",))

    def outcomes(records: pd.DataFrame, policy: Policy) -> dict[str, str]:
        statistics = compute_statistics(records, alpha=ALPHA, min_group_size=10)
        return {r.group: r.outcome for r in judge(statistics, policy)}

    assert outcomes(reliance, gate) == {"female": "fail", "male": "pass"}
    assert outcomes(harm, gate) == {"female": "pass", "male": "pass"}
    raw = Policy(max_flip_rate_gap={"blackout": 0.1}, groupings=("gender",))
    assert outcomes(harm, raw)["female"] == "fail"
    equivalence = dataclasses.replace(gate, require="equivalence")
    small = harm[harm["image_id"].str.split("-").str[1].astype(int) < 40]
    assert set(outcomes(small, equivalence).values()) == {"insufficient data"}


def test_the_excess_gap_a_test_could_miss_is_the_normal_power_formula() -> None:
    """(z₁₋α/2 + z₀.₈) σ √(1/n₁ + 1/n₂) for the two smallest groups, σ the spread of the
    per-image differences: what "no excess gap" can rule out."""
    records = _records(
        np.random.default_rng(8),
        {"female": 120, "male": 200},
        guided_p={"female": 0.3, "male": 0.3},
        placebo_p={"female": 0.1, "male": 0.1},
    )
    test, _ = _excess(records)
    pairs = paired_arms(records, "attribution")
    spread = float(pairs["excess"].std(ddof=1))
    expected = (norm.isf(ALPHA / 2) + norm.isf(0.2)) * spread * np.sqrt(1 / 120 + 1 / 200)
    assert test.min_detectable_gap == pytest.approx(expected, rel=1e-3)
