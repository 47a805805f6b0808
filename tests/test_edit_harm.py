"""A painted edit's gap is blamed on the paint only when it exceeds what erasing the regions shows.

Worlds made here give every image a painted edit (a black square) and an erasing one (the same
region inpainted), each with its placebo. Where the square disturbs one group's images more,
the painted arm's excess gap exceeds the erased arm's and the audit says edit harm; where both
arms show the same reliance, the paired test of the two gaps rejects no more often than α, so
an erased twin that merely missed the gap does not turn reliance into "edit harm".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, norm
from statsmodels.stats.multitest import multipletests

from auditor.edit_harm import edit_harm_test
from auditor.excess import excess_test, paired_arms
from auditor.records import PLACEBO
from auditor.run_summary import RunSummary
from auditor.stats import compute_statistics, group_labels
from auditor.store import RunStore
from reports.findings import findings, verdict

ALPHA = 0.05
PAINT, ERASE = "blackout", "blackout(fill=inpaint)"
COVERS = {PAINT: "paint", ERASE: "erase"}
Rates = dict[str, tuple[float, float]]  # group → (guided, placebo) flip probabilities


def _records(rng: np.random.Generator, n: int, painted: Rates, erased: Rates) -> pd.DataFrame:
    """Four rows per image: each probe's guided and placebo arm, with flips drawn per arm."""
    parts = []
    for group in painted:
        ids = [f"{group}-{i}" for i in range(n)]
        confidence = rng.uniform(0.6, 1.0, n)
        for probe, rates in ((PAINT, painted), (ERASE, erased)):
            for source, p in zip(("attribution", PLACEBO), rates[group], strict=True):
                flipped = rng.random(n) < p
                parts.append(
                    pd.DataFrame(
                        {
                            "image_id": ids,
                            "label": "a",
                            "orig_pred": "a",
                            "skip_reason": None,
                            "probe": probe,
                            "method": "gradcam",
                            "region_source": source,
                            "flipped": flipped,
                            "orig_p_pred": confidence,
                            "probed_p_orig_pred": confidence - np.where(flipped, 0.5, 0.05),
                            "group_gender": group,
                        }
                    )
                )
    return pd.concat(parts, ignore_index=True)


def test_a_square_that_disturbs_one_group_more_is_blamed_on_the_paint() -> None:
    """The black square flips 'female' predictions beyond its placebo far more than 'male'
    ones, while the same regions erased flip both alike: the painted gap is significant, its
    twin's is not, and the edit-harm test finds the paint's gap larger, in the painted order."""
    records = _records(
        np.random.default_rng(0),
        300,
        painted={"female": (0.40, 0.05), "male": (0.12, 0.05)},
        erased={"female": (0.08, 0.05), "male": (0.08, 0.05)},
    )
    stats = compute_statistics(records, alpha=ALPHA, min_group_size=10, covers=COVERS)
    painted = next(t for t in stats.excess if t.probe == PAINT)
    erased = next(t for t in stats.excess if t.probe == ERASE)
    assert painted.significant and not erased.significant
    (harm,) = stats.edit_harm
    assert (harm.painted, harm.erased) == (painted.id, erased.id)
    assert (harm.highest, harm.lowest) == ("female", "male")
    assert harm.significant and harm.effect is not None and harm.effect > 0.15
    assert harm.n_images == 600

    # Without covers the run cannot tell which probe paints: no edit-harm test at all.
    assert compute_statistics(records, alpha=ALPHA, min_group_size=10).edit_harm == []


def test_no_edit_harm_test_where_the_erased_twin_finds_the_gap_too() -> None:
    """Both arms show the same reliance and both gaps are significant: the finding is reliance
    either way, so nothing is there to decide and no edit-harm test is made."""
    records = _records(
        np.random.default_rng(1),
        300,
        painted={"female": (0.45, 0.05), "male": (0.10, 0.05)},
        erased={"female": (0.45, 0.05), "male": (0.10, 0.05)},
    )
    stats = compute_statistics(records, alpha=ALPHA, min_group_size=10, covers=COVERS)
    assert all(t.significant for t in stats.excess)
    assert stats.edit_harm == []


def test_the_paint_vs_erase_test_rejects_equal_gaps_at_most_at_alpha() -> None:
    """Over 200 seeded worlds where painting and erasing show the same reliance gap (balanced
    and unbalanced, small and large), the test that the painted gap exceeds the erased one
    rejects within the binomial 95 % band of α, or below it."""
    worlds, rejected = 200, 0
    for seed in range(worlds):
        rng = np.random.default_rng(seed)
        n = (40, 120, 300)[seed % 3]
        rates = {"female": (0.30, 0.08), "male": (0.15, 0.08)}
        records = _records(rng, n, painted=rates, erased=rates)
        if seed % 2:  # unbalanced: a third of the 'male' images left out
            drop = [f"male-{i}" for i in range(2 * n // 3, n)]
            records = records[~records["image_id"].isin(drop)]
        painted, erased = (
            _excess_of(records[records["probe"] == probe]) for probe in (PAINT, ERASE)
        )
        harm = edit_harm_test(painted[0], erased[0], painted[1], erased[1], painted[2], ALPHA)
        assert harm.p_value is not None, harm.reason
        rejected += harm.p_value < ALPHA
    assert rejected <= binom.ppf(0.975, worlds, ALPHA), rejected


def _excess_of(records: pd.DataFrame):  # type: ignore[no-untyped-def]
    """One probe's excess test by gender, its per-image pairs and their labels."""
    pairs = paired_arms(records, "attribution")
    labels = group_labels(pairs, ["gender"])
    test = excess_test(
        pairs,
        labels,
        test_id=f"excess_flip/{records['probe'].iloc[0]}@gradcam/gender",
        probe=records["probe"].iloc[0],
        method="gradcam",
        region_source="attribution",
        grouping="gender",
        alpha=ALPHA,
        min_group_size=10,
    )
    return test, pairs, labels


@pytest.mark.slow
def test_the_control_demo_s_edit_harm_figures_equal_a_recomputation(control_run: Path) -> None:
    """summary.json's edit-harm tests of the control model, recomputed from results.parquet
    with numpy: which painted gaps get one (significant, the erased twin tested and silent),
    each pair's difference of excess gaps on the images with both arms, its HC3 standard error
    (a group's mean residual sum of squares over (n − 1)², as HC3 gives in a one-way design),
    the interval and p-value Bonferroni over the pairs, and Holm over the tests."""
    summary = RunStore.open(control_run).summary()
    stats = summary.statistics
    excess = {t.id: t for t in stats.excess}
    covers = {p.name: p.cover for p in summary.probes}
    expected_family = [
        t.id
        for t in stats.excess
        if covers.get(t.probe) == "paint"
        and t.significant
        and any(
            covers.get(e.probe) == "erase"
            and (e.method, e.region_source, e.grouping) == (t.method, t.region_source, t.grouping)
            and e.p_value is not None
            and not e.significant
            for e in stats.excess
        )
    ]
    assert [h.painted for h in stats.edit_harm] == expected_family
    assert expected_family, "the control's black square has a gap its inpainted twin lacks"

    records = pd.read_parquet(control_run / "results.parquet")
    records = records[records["skip_reason"].isna()]
    p_values = []
    for harm in stats.edit_harm:
        painted, erased = excess[harm.painted], excess[harm.erased]
        per_image = []
        for test in (painted, erased):
            rows = records[(records["probe"] == test.probe) & (records["method"] == test.method)]
            flips = rows.pivot_table(
                index="image_id", columns="region_source", values="flipped", aggfunc="first"
            ).dropna()
            per_image.append(flips[test.region_source].astype(float) - flips[PLACEBO].astype(float))
        difference = (per_image[0] - per_image[1]).dropna()
        images = records.drop_duplicates("image_id").set_index("image_id")
        columns = ["group_" + c for c in harm.grouping.split("×")]
        labels = images.loc[difference.index, columns].astype(str).agg("×".join, axis=1)
        levels = sorted(g.group for g in painted.groups if g.tested)
        means, variances = {}, {}
        for level in levels:
            values = difference[labels == level].to_numpy()
            means[level] = values.mean()
            variances[level] = ((values - values.mean()) ** 2).sum() / (len(values) - 1) ** 2
        hi, lo = painted.highest, painted.lowest
        assert (harm.highest, harm.lowest) == (hi, lo)
        effect = means[hi] - means[lo]
        error = math.sqrt(variances[hi] + variances[lo])
        pairs = len(levels) * (len(levels) - 1) // 2
        half = norm.isf(ALPHA / (2 * pairs)) * error
        assert harm.effect == pytest.approx(effect, abs=1e-12)
        assert harm.effect_ci == pytest.approx((effect - half, effect + half), abs=1e-9)
        p = min(1.0, pairs * 2 * norm.sf(abs(effect) / error))
        assert harm.p_value == pytest.approx(p, rel=1e-9, abs=1e-15)
        assert harm.n_images == int(labels.isin([hi, lo]).sum())
        p_values.append(p)
    reject, adjusted, _, _ = multipletests(p_values, alpha=ALPHA, method="holm")
    assert [h.p_adjusted for h in stats.edit_harm] == pytest.approx(list(adjusted), rel=1e-9)
    assert [h.significant for h in stats.edit_harm] == list(reject)


@pytest.mark.slow
def test_a_painted_gap_the_paired_test_cannot_blame_is_not_called_edit_harm(
    control_run: Path,
) -> None:
    """The control's summary with each edit-harm test made insignificant: the black square's
    findings then neither claim edit harm nor plain reliance; they say the two are not told
    apart and rank after guided vs placebo, with the paired test's figures; the verdict
    says the same."""
    raw = json.loads((control_run / "summary.json").read_text(encoding="utf-8"))
    for harm in raw["statistics"]["edit_harm"]:
        harm["significant"], harm["p_adjusted"] = False, 0.2
    summary = RunSummary.from_json(raw)
    painted = {h["painted"] for h in raw["statistics"]["edit_harm"]}
    found = [f for f in findings(summary) if f.test_id in painted]
    assert found, "the control's black square has findings to reword"
    for finding in found:
        assert finding.kind == "paint_or_reliance", finding.text
        assert finding.text.startswith("Reliance or the paint's own effect, not told apart")
        assert "but the paint's gap does not significantly exceed it either" in finding.text
        assert "p = 0.2 after Holm over the run's paint-vs-erase comparisons" in finding.text
        assert "cannot tell the paint's own effect from reliance on the region" in finding.text
    says = verdict(summary, findings(summary))
    assert "reliance or the painted edits' own effect (not told apart)" in says, says
    assert "beyond what the same regions erased show" not in says, says
