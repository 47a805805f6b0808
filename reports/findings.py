"""Findings as plain sentences with numbers and intervals, ranked by effect size.

Works on the stored summary only (:class:`auditor.run_summary.RunSummary`), so the console table
and the HTML report say the same thing and either can be re-rendered from a stored run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from auditor.power import unseen_text
from auditor.run_summary import (
    AdjustedGap,
    ExcessTest,
    GapTest,
    PairedTest,
    Rate,
    RunSummary,
    Statistics,
)
from auditor.stats import INTERSECTION, arm


@dataclass(frozen=True)
class Finding:
    kind: str  # "error_rate", "excess_flip", "flip_rate" or "guided_vs_placebo"
    text: str
    effect: float
    p_adjusted: float
    test_id: str
    probe: str | None = None  # the probe of a flip-rate, excess or guided-vs-placebo finding
    grouping: str | None = None  # the grouping of a subgroup gap
    highest: str | None = None  # a gap's subgroup with the highest rate, and with the lowest
    lowest: str | None = None

    @property
    def family(self) -> tuple[str, str | None]:
        """Findings of one kind and probe: the methods of a probe nearly repeat each other."""
        return (self.kind, self.probe)

    @property
    def over_intersection(self) -> bool:
        return self.grouping is not None and INTERSECTION in self.grouping


def _number(percent: float) -> str:
    """Whole percents, but one decimal below 10 % so that 1 in 300 does not read as 0 %."""
    return f"{percent:.1f}" if 0 < abs(percent) < 9.95 else f"{percent:.0f}"


def pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{_number(100 * rate)} %"


def interval_level(alpha: float) -> str:
    """The confidence level of a run's intervals, as the report labels them: "95 %" at α 0.05."""
    return f"{100 * (1 - alpha):.3g} %"


def rate_text(rate: Rate) -> str:
    """ "41 % (35–47 %)": the rate with its interval (at the run's level, 1 − α)."""
    if rate.rate is None or rate.ci_low is None or rate.ci_high is None:  # n = 0: all None
        return "n/a (no images)"
    low, high = _number(100 * rate.ci_low), _number(100 * rate.ci_high)
    return f"{pct(rate.rate)} ({low}–{high} %)"


def p_text(p: float | None) -> str:
    if p is None:
        return "not testable"
    # Three significant digits: 0.0497 must not read as 0.050 beside α = 0.05.
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def grouping_text(grouping: str) -> str:
    """Name a grouping for a reader: labels were assigned by others, so say 'label'."""
    return " × ".join(f"{part} label" for part in grouping.split("×"))


def describe_probes(summary: RunSummary) -> dict[str, str]:
    return {p.name: p.description for p in summary.probes}


def action_text(probe: str, method: str | None, described: Mapping[str, str]) -> str:
    """What the edit did, capitalised, naming the attribution method that placed its region."""
    action = described.get(probe, probe)
    if method:
        action += f" ({method})"
    return action[0].upper() + action[1:]


def findings(summary: RunSummary) -> list[Finding]:
    """Every significant result of the run (after Holm correction), largest effect first.

    A region probe's subgroup finding is its excess flip rate (guided minus placebo): its raw
    flip-rate gap also carries edit harm and confidence, and stays in the tables as edit
    sensitivity. Probes without a placebo keep their raw gap, worded as edit sensitivity.
    """
    stats = summary.statistics
    described = describe_probes(summary)
    adjusted = {a.grouping: a for a in stats.adjusted}
    gaps = [
        _gap_finding(t, described, adjusted.get(t.grouping) if t.kind == "error_rate" else None)
        for t in subgroup_gaps(stats)
        if t.significant
    ]
    excess = [_excess_finding(t, described) for t in stats.excess if t.significant]
    paired = [_paired_finding(t, described) for t in stats.paired if t.significant]
    return sorted([*gaps, *excess, *paired], key=_rank)


def subgroup_gaps(stats: Statistics) -> list[GapTest]:
    """The raw gaps that findings present: the error rate's, and the flip rate's of the probe
    arms that have no excess test (no placebo to subtract)."""
    with_excess = {(t.probe, t.method) for t in stats.excess}
    raw = [t for t in stats.flip_gaps if (t.probe, t.method) not in with_excess]
    return [*stats.error_gaps, *raw]


def _gap_finding(
    test: GapTest, described: Mapping[str, str], adjusted: AdjustedGap | None = None
) -> Finding:
    """A significant subgroup gap in words: its highest and lowest subgroup and their rates,
    the smallest gap its sample sizes could reliably show, and the gap at equal covariates
    where the run adjusted an error gap for some (``--adjust-for``)."""
    hi, lo, p_adjusted = test.highest, test.lowest, test.p_adjusted
    # Significant: Holm adjusted its p-value, and it compares at least two tested subgroups.
    assert hi is not None and lo is not None and p_adjusted is not None, test.id
    assert test.min_detectable_gap is not None, test.id
    groups = {g.group: g.rate for g in test.groups}
    by = grouping_text(test.grouping)
    if test.kind == "error_rate":
        lead = f"The model's error rate differs by {by}: {rate_text(groups[hi])} for '{hi}'"
    else:
        assert test.probe is not None, "a flip-rate gap is a probe's"
        lead = (
            f"Edit sensitivity, not evidence of reliance (no placebo to compare with): "
            f"{action_text(test.probe, test.method, described).lower()} changes the prediction "
            f"for {rate_text(groups[hi])} of images with {by} '{hi}'"
        )
    # With more than two subgroups the p is the test across all of them, not of this pair.
    tested = sum(g.tested for g in test.groups)
    scope = f" for a difference among all {tested} tested subgroups" if tested > 2 else ""
    text = (
        f"{lead} vs {rate_text(groups[lo])} for '{lo}' (difference {pct(test.effect)}); "
        f"{p_text(p_adjusted)}{scope} after Holm correction ({test.test}); "
        f"{unseen_text(test.min_detectable_gap)}"
        + (f"; {adjusted_text(adjusted)}." if adjusted is not None else ".")
    )
    return Finding(
        test.kind,
        text,
        abs(test.effect or 0.0),
        p_adjusted,
        test.id,
        probe=test.probe,
        grouping=test.grouping,
        highest=hi,
        lowest=lo,
    )


def adjusted_text(adjusted: AdjustedGap) -> str:
    """The gap at equal covariates, in one clause: "at equal age, 'female' vs 'male' has an
    odds ratio of 1.3 (0.8–2.1), p = 0.3 (likelihood ratio; 20 images left out)"."""
    covariates = ", ".join(adjusted.covariates)
    if adjusted.odds_ratio is None or adjusted.odds_ratio_ci is None:
        return f"at equal {covariates}: {adjusted.reason}"
    low, high = adjusted.odds_ratio_ci
    left_out = (
        f"; {adjusted.n_left_out} image(s) without a value left out" if adjusted.n_left_out else ""
    )
    return (
        f"at equal {covariates}, '{adjusted.highest}' vs '{adjusted.lowest}' has an error odds "
        f"ratio of {adjusted.odds_ratio:.2g} ({low:.2g}–{high:.2g}), {p_text(adjusted.p_value)} "
        f"(likelihood-ratio test of the subgroups, not in the Holm family{left_out})"
    )


def _excess_finding(test: ExcessTest, described: Mapping[str, str]) -> Finding:
    """A significant difference across subgroups in how much more the guided edit flips than
    its placebo on the same images: reliance on the region, net of what the edit does anywhere."""
    hi, lo, p_adjusted = test.highest, test.lowest, test.p_adjusted
    assert hi is not None and lo is not None and p_adjusted is not None, test.id
    assert test.effect is not None and test.effect_ci is not None, test.id
    groups = {g.group: g for g in test.groups}
    by = grouping_text(test.grouping)

    def arms_text(group: str) -> str:
        g = groups[group]
        return (
            f"'{group}' {pct(g.guided_rate)} vs {pct(g.placebo_rate)} (excess {_points(g.excess)})"
        )

    low, high = test.effect_ci
    tested = sum(g.tested for g in test.groups)
    scope = f" for a difference among all {tested} tested subgroups" if tested > 2 else ""
    action = action_text(test.probe, test.method, described)
    text = (
        f"The model relies on its attributed region more for {by} '{hi}' than '{lo}': "
        f"{action[0].lower()}{action[1:]} changes {arms_text(hi)} and {arms_text(lo)} of "
        "predictions, against the same edit placed at random on the same images; the excess "
        f"differs by {_points(test.effect)} ({_number(100 * low)} to {_number(100 * high)}), "
        f"{p_text(p_adjusted)}{scope} after Holm correction{_at_equal_confidence(test)}"
        + (f"; {unseen_text(test.min_detectable_gap)}." if test.min_detectable_gap else ".")
    )
    return Finding(
        "excess_flip",
        text,
        abs(test.effect),
        p_adjusted,
        test.id,
        probe=test.probe,
        grouping=test.grouping,
        highest=hi,
        lowest=lo,
    )


def _points(difference: float | None) -> str:
    """A difference of two rates in percentage points: "14 points"."""
    return "n/a" if difference is None else f"{_number(100 * difference)} points"


def _at_equal_confidence(test: ExcessTest) -> str:
    """The same comparison at equal confidence of the original predictions, where the run
    could make it (the methodology says why it is shown, not tested)."""
    if test.adjusted_effect is None or test.adjusted_p_value is None:
        return ""
    return (
        f"; at equal confidence of the original predictions, {_points(test.adjusted_effect)} "
        f"({p_text(test.adjusted_p_value)} before Holm)"
    )


def _paired_finding(test: PairedTest, described: Mapping[str, str]) -> Finding:
    """A guided edit that flips significantly more than the same edit placed at random."""
    assert test.p_adjusted is not None, f"{test.id} is significant, so Holm adjusted it"
    text = (
        f"{action_text(test.probe, test.method, described)} changes {rate_text(test.guided)} "
        f"of predictions, vs {rate_text(test.placebo)} for the same edit on a random region of "
        f"the same size ({test.test} on {test.n_pairs} images, {p_text(test.p_adjusted)} "
        "after Holm correction)."
    )
    return Finding(
        "guided_vs_placebo", text, abs(test.effect or 0.0), test.p_adjusted, test.id, test.probe
    )


def _rank(finding: Finding) -> tuple[float, float, str]:
    """Largest effect first; equal effects by p, then by test id, so that the order (and the
    first screen's choice between near-copies, e.g. one probe's methods) never depends on the
    order the tests were computed in."""
    return (-finding.effect, finding.p_adjusted, finding.test_id)


def headlines(found: Sequence[Finding]) -> list[Finding]:
    """The first screen: one finding per family (the error rate; each probe's flip-rate gaps;
    each probe's guided-vs-placebo test), largest effect first.

    Within a family, the largest gap over a single group column (gender label, race label) is
    chosen where one is significant, and an intersection's only where none is: a gap between
    all women and all men is what a reader needs first, and the largest gap of a fine
    intersection, often between its two smallest cells, refines it. ``findings`` has them all.
    """
    best: dict[tuple[str, str | None], Finding] = {}
    for finding in found:  # largest effect first
        chosen = best.get(finding.family)
        if chosen is None or (chosen.over_intersection and not finding.over_intersection):
            best[finding.family] = finding
    return sorted(best.values(), key=_rank)


def verdict(summary: RunSummary) -> str:
    data, stats = summary.dataset, summary.statistics
    if data.images_audited == 0:
        return (
            f"Nothing was audited: all {data.rows} rows were skipped "
            "(see 'What could not be audited')."
        )
    if not data.group_columns:
        return "No subgroup columns were given, so no subgroup gap could be tested."
    tests = [*stats.error_gaps, *stats.flip_gaps]
    presented: list[GapTest | ExcessTest] = [*subgroup_gaps(stats), *stats.excess]
    gaps = [t for t in presented if t.significant]
    # Too few images to compare; a test whose every trial had one outcome saw no gap, and ran.
    untested = [t for t in tests if sum(g.tested for g in t.groups) < 2]
    alpha = stats.alpha
    if len(untested) == len(tests):
        return (
            f"No subgroup gap could be tested: no grouping has two subgroups of at least "
            f"{stats.min_group_size} audited images, so this run shows neither a gap nor its "
            "absence."
        )
    untested_note = (
        f" {len(untested)} of the {len(tests)} tests could not run (fewer than two subgroups "
        f"of at least {stats.min_group_size} images to compare), by "
        f"{', '.join(sorted({grouping_text(t.grouping) for t in untested}))}."
        if untested
        else ""
    )
    if gaps:
        groupings = sorted({grouping_text(t.grouping) for t in gaps})
        return (
            f"Subgroup gaps found: {len(gaps)} significant difference(s) across "
            f"{', '.join(groupings)} (α = {alpha}, Holm-corrected).{untested_note}"
        )
    scope = "the tests that could run" if untested else "every test of the run"
    return (
        f"No significant subgroup gap found (α = {alpha}, Holm-corrected over {scope}): "
        f"{_most_sensitive(tests)}.{untested_note}"
    )


def _most_sensitive(tests: Sequence[GapTest]) -> str:
    """What "no gap found" can claim: the smallest gap that even the run's most sensitive test
    could reliably have seen; every other test needed a larger one."""
    measured = [(t.min_detectable_gap, t) for t in tests if t.min_detectable_gap is not None]
    gap, best = min(measured, key=lambda pair: (pair[0], pair[1].id))
    kind = "error rate" if best.probe is None else f"{arm(best.probe, best.method)} flip rate"
    return (
        f"even for the most sensitive test ({kind} by {grouping_text(best.grouping)}), "
        f"{unseen_text(gap)}"
    )
