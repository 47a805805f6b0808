"""Findings as plain sentences with numbers and intervals, ranked by the harm they show.

Works on the stored summary only (:class:`auditor.run_summary.RunSummary`), so the console table
and the HTML report say the same thing and either can be re-rendered from a stored run.

Harm first: a model that is wrong more often for a subgroup harms it directly; reliance on a
region more for one subgroup (the excess over a placebo) says why it might; an edit that flips
more than its placebo says the region matters to the model at all; a painted edit's excess
gap that the paired test can neither blame on the paint nor clear of it may be either (reliance
and paint not told apart), weaker evidence than that clean comparison; one that significantly
exceeds the same regions erased, where those show none, is the paint's own
effect (a black square read as an object where the model looks), not reliance; a raw flip-rate
gap without a placebo mixes the model with the edit. Within each kind, the largest effect first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal, get_args

from auditor.power import unseen_text
from auditor.records import AREA_MATCHED, PLACEBO, SAME_SHAPE
from auditor.run_summary import (
    AdjustedGap,
    EditHarmTest,
    ExcessTest,
    FlipDirections,
    GapTest,
    PairedTest,
    Rate,
    RunSummary,
    Statistics,
    StoredVerdict,
)
from auditor.stats import INTERSECTION, arm
from auditor.store import ALL

# The kinds of finding, most harmful first (the module's docstring says why): findings and
# headlines are ranked in this order.
FindingKind = Literal[
    "error_rate",
    "excess_flip",
    "guided_vs_placebo",
    "paint_or_reliance",
    "painted_edit",
    "flip_rate",
]
HARM_ORDER: tuple[FindingKind, ...] = get_args(FindingKind)
# The first screen's findings: the most harmful of each kind and probe, at most this many.
HEADLINES = 5


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
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
    """Whole percents, but one decimal below 10 % so that 1 in 300 does not read as 0 %; a
    value that rounds to zero has no sign ("-0.0 %" would claim a direction it does not have)."""
    text = f"{percent:.1f}" if 0 < abs(percent) < 9.95 else f"{percent:.0f}"
    return text.lstrip("-") if float(text) == 0 else text


def pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{_number(100 * rate)} %"


def interval_level(alpha: float) -> str:
    """The confidence level of a run's intervals, as the report labels them: "95 %" at α 0.05."""
    return f"{100 * (1 - alpha):.3g} %"


def rate_text(rate: Rate, more: str = "") -> str:
    """ "41 % (35–47 %)": the rate with its interval (at the run's level, 1 − α), and ``more``
    said in the same brackets: "41 % (35–47 %; 30 corrections, 12 breaks)"."""
    if rate.rate is None or rate.ci_low is None or rate.ci_high is None:  # n = 0: all None
        return "n/a (no images)"
    low, high = _number(100 * rate.ci_low), _number(100 * rate.ci_high)
    return f"{pct(rate.rate)} ({low}–{high} %{'; ' + more if more else ''})"


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
    """Every significant result of the run (after Holm correction), most harmful first.

    A region probe's subgroup finding is its excess flip rate (guided minus placebo): its raw
    flip-rate gap also carries edit harm and confidence, and stays in the tables as edit
    sensitivity. Probes without a placebo keep their raw gap, worded as edit sensitivity. Every
    flip rate is told with its direction: how many edits turned a wrong prediction right, and
    how many a right one wrong.
    """
    stats = summary.statistics
    gaps = [_gap_finding(t, summary) for t in subgroup_gaps(stats) if t.significant]
    excess = [_excess_finding(t, summary) for t in stats.excess if t.significant]
    paired = [_paired_finding(t, summary) for t in stats.paired if t.significant]
    return sorted([*gaps, *excess, *paired], key=_rank)


def subgroup_gaps(stats: Statistics) -> list[GapTest]:
    """The raw gaps that findings present: the error rate's, and the flip rate's of the probe
    arms that have no excess test (no placebo to subtract)."""
    with_excess = {(t.probe, t.method) for t in stats.excess}
    raw = [t for t in stats.flip_gaps if (t.probe, t.method) not in with_excess]
    return [*stats.error_gaps, *raw]


def adjusted_for(stats: Statistics, test: GapTest) -> AdjustedGap | None:
    """The ``--adjust-for`` comparison of an error gap's grouping, when the run made one."""
    if test.kind != "error_rate":
        return None
    return next((a for a in stats.adjusted if a.grouping == test.grouping), None)


def directions_text(directions: FlipDirections | None, define: bool = False) -> str:
    """ "38 corrections, 76 breaks": which way a flip rate's edits went, so that a rate of
    breaks is not read as one of corrections; ``define`` spells out the two words, as a
    sentence's first count does ("38 corrections: wrong → right, …"). Flips from one wrong
    class to another are counted where there are some; "" where the run stored no directions
    (it predates them)."""
    if directions is None:
        return ""
    corrections = _count(directions.corrections, "correction", "corrections")
    breaks = _count(directions.breaks, "break", "breaks")
    if define:
        corrections, breaks = f"{corrections}: wrong → right", f"{breaks}: right → wrong"
    other = directions.flips - directions.corrections - directions.breaks
    swaps = f", {other} from one wrong class to another" if other else ""
    return f"{corrections}, {breaks}{swaps}"


def _bracketed(text: str) -> str:
    return f" ({text})" if text else ""


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _gap_finding(test: GapTest, summary: RunSummary) -> Finding:
    """A significant subgroup gap in words: its highest and lowest subgroup and their rates,
    the smallest gap its sample sizes could reliably show, and the gap at equal covariates
    where the run adjusted an error gap for some (``--adjust-for``). A flip-rate gap gives the
    corrections and breaks behind each of its two rates."""
    hi, lo, p_adjusted = test.highest, test.lowest, test.p_adjusted
    # Significant: Holm adjusted its p-value, and it compares at least two tested subgroups.
    assert hi is not None and lo is not None and p_adjusted is not None, test.id
    assert test.min_detectable_gap is not None, test.id
    groups = {g.group: g.rate for g in test.groups}
    by = grouping_text(test.grouping)
    if test.probe is None:
        high, low = rate_text(groups[hi]), rate_text(groups[lo])
        lead = f"The model's error rate differs by {by}: {high} for '{hi}'"
    else:
        assert test.region_source is not None, test.id
        edit = (test.probe, test.method, test.region_source, test.grouping)
        high = rate_text(
            groups[hi], directions_text(summary.directions(*edit, hi, paired=False), True)
        )
        low = rate_text(groups[lo], directions_text(summary.directions(*edit, lo, paired=False)))
        action = action_text(test.probe, test.method, describe_probes(summary))
        lead = (
            f"Edit sensitivity, not evidence of reliance (no placebo to compare with): "
            f"{action.lower()} changes the prediction for {high} of images with {by} '{hi}'"
        )
    # With more than two subgroups the p is the test across all of them, not of this pair.
    tested = sum(g.tested for g in test.groups)
    scope = f" for a difference among all {tested} tested subgroups" if tested > 2 else ""
    adjusted = adjusted_for(summary.statistics, test)
    text = (
        f"{lead} vs {low} for '{lo}' (difference {pct(test.effect)}); "
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


def _excess_finding(test: ExcessTest, summary: RunSummary) -> Finding:
    """A significant difference across subgroups in how much more the guided edit flips than
    its placebo on the same images: reliance on the region, net of what the edit does anywhere.
    Where the edit paints the region and the same regions erased show no difference, the paint
    is what differs (a "painted_edit" finding) if its gap significantly exceeds the erased one;
    else the finding says the two cannot be told apart ("paint_or_reliance"). Each of the four
    rates comes with its corrections and breaks."""
    hi, lo, p_adjusted = test.highest, test.lowest, test.p_adjusted
    assert hi is not None and lo is not None and p_adjusted is not None, test.id
    assert test.effect is not None and test.effect_ci is not None, test.id
    groups = {g.group: g for g in test.groups}
    by = grouping_text(test.grouping)

    def arms_text(group: str, first: bool = False) -> str:
        """ "38 % of 'female' predictions (…) against 16 % (…), an excess of 23 points"; the
        ``first`` subgroup's says what the two counts and the placebo are."""
        g = groups[group]
        guided, placebo = (
            summary.directions(test.probe, test.method, source, test.grouping, group, paired=True)
            for source in (test.region_source, PLACEBO)
        )
        placebo_said = (
            f" for {_control_text(test.region_source, _control_kinds(summary, test))} on the "
            "same images"
            if first
            else ""
        )
        return (
            f"{pct(g.guided_rate)} of '{group}' predictions"
            f"{_bracketed(directions_text(guided, first))} against {pct(g.placebo_rate)}"
            f"{_bracketed(directions_text(placebo))}{placebo_said}, an excess of "
            f"{_points(g.excess)}"
        )

    low, high = test.effect_ci
    tested = sum(g.tested for g in test.groups)
    scope = f" for a difference among all {tested} tested subgroups" if tested > 2 else ""
    described = describe_probes(summary)
    action = action_text(test.probe, test.method, described)
    twin = _erased_twin(test, summary)
    harm_shown = twin is not None and _paint_exceeds(twin[1])
    if twin is None:
        lead = f"{_reliance_lead(test.region_source)} more for {by} '{hi}' than '{lo}'"
    elif harm_shown:
        lead = (
            f"Edit harm, not evidence of reliance: the paint matters more for {by} '{hi}' than "
            f"'{lo}', and the same regions erased do not"
        )
    else:
        lead = (
            f"Reliance or the paint's own effect, not told apart: the painted edit matters more "
            f"for {by} '{hi}' than '{lo}'"
        )
    text = (
        f"{lead}: {action[0].lower()}{action[1:]} changes {arms_text(hi, first=True)}; "
        f"{arms_text(lo)}; the excess differs by {_points(test.effect)} "
        f"({_number(100 * low)} to {_number(100 * high)}), "
        f"{p_text(p_adjusted)}{scope} after Holm correction{_at_equal_confidence(test)}"
        + (f"; {_erased_text(*twin, hi, lo, described)}" if twin else "")
        + (f"; {unseen_text(test.min_detectable_gap)}." if test.min_detectable_gap else ".")
    )
    return Finding(
        "excess_flip" if twin is None else "painted_edit" if harm_shown else "paint_or_reliance",
        text,
        abs(test.effect),
        p_adjusted,
        test.id,
        probe=test.probe,
        grouping=test.grouping,
        highest=hi,
        lowest=lo,
    )


def _erased_twin(test: ExcessTest, summary: RunSummary) -> tuple[ExcessTest, EditHarmTest] | None:
    """The excess test of an erasing probe on ``test``'s regions, with the edit-harm test that
    compares the two gaps (``auditor.edit_harm``): the run has one where ``test``'s probe paints
    its regions and the twin was tested and found no difference."""
    stats = summary.statistics
    harm = next((h for h in stats.edit_harm if h.painted == test.id), None)
    if harm is None:
        return None
    return next(t for t in stats.excess if t.id == harm.erased), harm


def _paint_exceeds(harm: EditHarmTest) -> bool:
    """Whether the painted gap significantly exceeds its erased twin's (Holm over the run's
    edit-harm tests): only then is the gap the paint's, not reliance measured more strongly."""
    return harm.significant and harm.effect is not None and harm.effect > 0


def _erased_text(
    twin: ExcessTest, harm: EditHarmTest, hi: str, lo: str, described: Mapping[str, str]
) -> str:
    """ "removing the attribution region, inpainted from its surroundings (gradcam), shows no
    significant difference on the same regions ('male' minus 'female': 3.0 points, p = 0.54
    after Holm correction; a gap smaller than 9.0 points could not reliably have been seen
    here), and the paint's gap exceeds it by 10 points (…), so …". The twin's silence is no
    proof of no gap, so it says what it could miss, and the paint is blamed only where its gap
    is shown to exceed the twin's."""
    excess = {g.group: g.excess for g in twin.groups}
    first, second = excess.get(hi), excess.get(lo)
    same_pair = (
        f"'{hi}' minus '{lo}': {_points(first - second)}, "
        if first is not None and second is not None
        else ""
    )
    p = twin.p_adjusted if twin.p_adjusted is not None else twin.p_value
    action = action_text(twin.probe, twin.method, described)
    unseen = f"; {unseen_text(twin.min_detectable_gap)}" if twin.min_detectable_gap else ""
    silent = (
        f"{action[0].lower()}{action[1:]} shows no significant difference on the same regions "
        f"({same_pair}{p_text(p)} after Holm correction{unseen})"
    )
    if harm.effect is None or harm.effect_ci is None or harm.p_adjusted is None:
        return f"{silent}, but the two gaps could not be compared ({harm.reason})"
    low, high = harm.effect_ci
    compared = (
        f"{_points(harm.effect)} ({_number(100 * low)} to {_number(100 * high)}), "
        f"{p_text(harm.p_adjusted)} after Holm over the run's paint-vs-erase comparisons"
    )
    if _paint_exceeds(harm):
        return (
            f"{silent}, and the paint's gap exceeds it by {compared}, so the gap is the painted "
            "square's own effect where the model looks, not reliance on what the region shows"
        )
    return (
        f"{silent}, but the paint's gap does not significantly exceed it either "
        f"({compared}), so this run cannot tell the paint's own effect from reliance on the "
        "region"
    )


def _points(difference: float | None) -> str:
    """A difference of two rates in percentage points: "14 points"."""
    return "n/a" if difference is None else f"{_number(100 * difference)} points"


def _at_equal_confidence(test: ExcessTest) -> str:
    """The same comparison at equal confidence of the original predictions, where the run
    could make it (the methodology says why it is shown, not tested)."""
    if test.adjusted_effect is None or test.adjusted_p_adjusted is None:
        return ""
    return (
        f"; at equal confidence of the original predictions, {_points(test.adjusted_effect)} "
        f"({p_text(test.adjusted_p_adjusted)} after Holm over the run's equal-confidence "
        "comparisons)"
    )


def _reliance_lead(region_source: str) -> str:
    """What an excess gap says: reliance on the region where a map placed it; otherwise only
    that the edit matters more for one group beyond what its control does."""
    if region_source == "attribution":
        return "The model relies on its attributed region"
    return "Beyond its control, the edit matters"


def _control_text(region_source: str, kinds: Mapping[str, int]) -> str:
    """The control an arm is compared with, and how many of its pairs had each kind of it
    (``kinds``: ``PairedTest.control_kinds``), where the arm's controls were of several kinds
    or of a kind its region source does not suggest."""
    if region_source == "whole_image":
        return "the noise floor (the image shifted by one pixel)"
    if set(kinds) <= {SAME_SHAPE}:
        if region_source == "attribution":
            return "the same edit placed at random"
        return "the same edit on a random region of the same shape"
    if set(kinds) == {AREA_MATCHED}:
        return (
            "the same edit on a random blob of the same area and compactness (the region's "
            "shape fits nowhere else)"
        )
    return (
        f"the same edit on a random region of the same shape (or, on the "
        f"{kinds.get(AREA_MATCHED, 0)} of {sum(kinds.values())} images where that shape fits "
        "nowhere else, on a random blob of the same area and compactness)"
    )


def _control_kinds(summary: RunSummary, test: ExcessTest) -> Mapping[str, int]:
    """The kinds of the controls of ``test``'s arm, from its guided-vs-placebo test (which pairs
    every image of the arm); none where that test is missing."""
    paired = next(
        (
            t
            for t in summary.statistics.paired
            if (t.probe, t.method, t.region_source) == (test.probe, test.method, test.region_source)
        ),
        None,
    )
    return paired.control_kinds if paired else {}


def _paired_finding(test: PairedTest, summary: RunSummary) -> Finding:
    """A guided edit that flips significantly more than the same edit placed at random, each
    arm's flips with their corrections and breaks."""
    assert test.p_adjusted is not None, f"{test.id} is significant, so Holm adjusted it"
    guided, placebo = (
        summary.directions(test.probe, test.method, source, ALL, ALL, paired=True)
        for source in (test.region_source, PLACEBO)
    )
    action = action_text(test.probe, test.method, describe_probes(summary))
    text = (
        f"{action} changes {rate_text(test.guided, directions_text(guided, define=True))} "
        f"of predictions, vs {rate_text(test.placebo, directions_text(placebo))} for "
        f"{_control_text(test.region_source, test.control_kinds)}; {test.test} on "
        f"{test.n_pairs} images, {p_text(test.p_adjusted)} after Holm correction."
    )
    return Finding(
        "guided_vs_placebo", text, abs(test.effect or 0.0), test.p_adjusted, test.id, test.probe
    )


def _rank(finding: Finding) -> tuple[int, float, float, str]:
    """Most harmful kind first (HARM_ORDER), then the largest effect; equal effects by p, then
    by test id, so that the order (and the first screen's choice between near-copies, e.g. one
    probe's methods) never depends on the order the tests were computed in."""
    return (
        HARM_ORDER.index(finding.kind),
        -finding.effect,
        finding.p_adjusted,
        finding.test_id,
    )


def headlines(found: Sequence[Finding]) -> list[Finding]:
    """The first screen: the most harmful HEADLINES findings, one per family (the error rate;
    each probe's excess; each probe's guided-vs-placebo test; each placebo-less probe's
    flip-rate gap), in ``found``'s order (most harmful first).

    Within a family, the largest gap over a single group column (gender label, race label) is
    chosen where one is significant, and an intersection's only where none is: a gap between
    all women and all men is what a reader needs first, and the largest gap of a fine
    intersection, often between its two smallest cells, refines it. ``findings`` has them all.
    """
    best: dict[tuple[str, str | None], Finding] = {}
    for finding in found:  # most harmful first
        chosen = best.get(finding.family)
        if chosen is None or (chosen.over_intersection and not finding.over_intersection):
            best[finding.family] = finding
    return sorted(best.values(), key=_rank)[:HEADLINES]


def verdict(summary: RunSummary, found: Sequence[Finding]) -> str:
    """The run in one sentence, led by what harms most: whether the model is wrong more often
    for a subgroup, then where reliance on the attributed regions or edit sensitivity differs;
    ``found`` are the run's findings. Runs with different evidence get different sentences."""
    data, stats = summary.dataset, summary.statistics
    if data.images_audited == 0:
        return (
            f"Nothing was audited: all {data.rows} rows were skipped "
            "(see 'What could not be audited')."
        )
    if not data.group_columns:
        return "No subgroup columns were given, so no subgroup gap could be tested."
    tests = [*stats.error_gaps, *stats.flip_gaps]
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
    gaps = [f for f in found if f.grouping is not None]  # guided vs placebo is not a gap
    if not gaps:
        scope = "the tests that could run" if untested else "every test of the run"
        return (
            f"No significant subgroup gap found (α = {alpha}, Holm-corrected over {scope}): "
            f"{_most_sensitive(tests)}.{untested_note}"
        )
    errors = [f for f in gaps if f.kind == "error_rate"]
    lead = _error_gap_text(errors, stats) if errors else _no_error_gap_text(stats)
    differences = _differences_text(gaps, stats, besides_errors=bool(errors))
    return f"{lead}{differences} (α = {alpha}, Holm-corrected).{untested_note}"


def _error_gap_text(errors: Sequence[Finding], stats: Statistics) -> str:
    """ "Error-rate gap found: the model is wrong more often for gender label 'female' (16 %)
    than for 'male' (0.7 %), and by race label too", from the first screen's error finding."""
    (first,) = headlines(errors)
    test = next(t for t in stats.error_gaps if t.id == first.test_id)
    rates = {g.group: g.rate for g in test.groups}
    assert first.grouping is not None and first.highest is not None and first.lowest is not None
    others = _groupings_of([f for f in errors if f.grouping != first.grouping], stats)
    return (
        f"Error-rate gap found: the model is wrong more often for {grouping_text(first.grouping)}"
        f" '{first.highest}' ({pct(rates[first.highest].rate)}) than for '{first.lowest}' "
        f"({pct(rates[first.lowest].rate)})" + (f", and by {_listed(others)} too" if others else "")
    )


def _no_error_gap_text(stats: Statistics) -> str:
    """No error-rate gap, with what even the most sensitive error-rate test could have missed."""
    if all(t.min_detectable_gap is None for t in stats.error_gaps):
        return "The error rate could not be compared across subgroups (too few images)"
    gap, best = _most_sensitive_test(stats.error_gaps)
    return (
        f"No error-rate gap found (the most sensitive error-rate test, by "
        f"{grouping_text(best.grouping)}: {unseen_text(gap)})"
    )


# What a subgroup finding of each kind says differs, in the verdict's words.
_DIFFERS = {
    "excess_flip": "reliance on the attributed regions",
    "paint_or_reliance": "reliance or the painted edits' own effect (not told apart)",
    "painted_edit": "the painted edits' own effect (beyond what the same regions erased show)",
    "flip_rate": "edit sensitivity (edits with no placebo)",
}


def _differences_text(found: Sequence[Finding], stats: Statistics, *, besides_errors: bool) -> str:
    """What differs across subgroups other than the error rate: "; reliance on the attributed
    regions also differs, by gender label (3 findings), and so does edit sensitivity (…), by
    race label (2 findings)", or "; only …" where the error rate does not; "" for nothing."""
    parts = []
    for kind, what in _DIFFERS.items():
        mine = [f for f in found if f.kind == kind]
        if mine:
            count = _count(len(mine), "finding", "findings")
            parts.append((what, f"by {_listed(_groupings_of(mine, stats))} ({count})"))
    if not parts:
        return ""
    (what, by), *rest = parts
    if besides_errors:
        return f"; {what} also differs, {by}" + "".join(f", and so does {w}, {b}" for w, b in rest)
    return f"; only {what} differs, {by}" + "".join(f", and {w}, {b}" for w, b in rest)


def _groupings_of(found: Sequence[Finding], stats: Statistics) -> list[str]:
    """The groupings of ``found``, named, in the run's order (single columns, then the
    intersection)."""
    present = {f.grouping for f in found}
    return [grouping_text(g) for g in stats.groupings if g in present]


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _most_sensitive(tests: Sequence[GapTest]) -> str:
    """What "no gap found" can claim: the smallest gap that even the run's most sensitive test
    could reliably have seen; every other test needed a larger one."""
    gap, best = _most_sensitive_test(tests)
    kind = "error rate" if best.probe is None else f"{arm(best.probe, best.method)} flip rate"
    return (
        f"even for the most sensitive test ({kind} by {grouping_text(best.grouping)}), "
        f"{unseen_text(gap)}"
    )


def _most_sensitive_test(tests: Sequence[GapTest]) -> tuple[float, GapTest]:
    """The test with the smallest minimum detectable gap, and that gap (ties by test id)."""
    measured = [(t.min_detectable_gap, t) for t in tests if t.min_detectable_gap is not None]
    return min(measured, key=lambda pair: (pair[0], pair[1].id))


def policy_text(verdict: StoredVerdict) -> str:
    """ "Policy FAILS: 5 of 55 gates failed, 0 insufficient data (policy: audit.toml)." The
    console and the report's first screen say it in these words; they name the policy by its
    file name, which gate.json and the report's policy section give in full."""
    state = "holds" if verdict.holds else "FAILS"
    nothing = (
        "; no gate could be judged, and a policy never passes on nothing"
        if verdict.nothing_judged and not verdict.holds
        else ""
    )
    named = PurePath(verdict.policy.source).name
    return (
        f"Policy {state}: {len(verdict.failed)} of {len(verdict.results)} gate(s) failed, "
        f"{len(verdict.insufficient)} insufficient data (policy: {named})"
        f"{nothing}."
    )
