"""Stored run → view model: every number computed and formatted here, none in the template."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from auditor.power import POWER, unseen_text
from auditor.records import AREA_MATCHED, NOISE_FLOOR, PLACEBO, SAME_SHAPE
from auditor.run_summary import (
    AdjustedGap,
    Bounds,
    Divergence,
    ExcessTest,
    FlipDirections,
    GapTest,
    Localisation,
    MapSide,
    PairedTest,
    ProbeInfo,
    Rate,
    RunSummary,
    Statistics,
    StoredGalleryItem,
    StoredGateResult,
    StoredVerdict,
)
from auditor.stats import INTERSECTION, arm
from auditor.store import ALL, GATE_FILE, CompletedRun, RunStore, read_typed
from reports.cues import CueSection, cue_section
from reports.findings import (
    HEADLINES,
    Finding,
    adjusted_for,
    adjusted_text,
    findings,
    grouping_text,
    headlines,
    interval_level,
    p_text,
    pct,
    policy_text,
    rate_text,
    verdict,
)
from reports.images import (
    DEFAULT_REPORT_IMAGES,
    ReportImages,
    chart_image_uri,
    face_image_uri,
    images_note,
)
from reports.plots import DirectionCount, FlipRatePoint, corrections_breaks_plot, flip_rate_plot

# At most this many gallery figures (three thumbnails each) go into a report, taken in turn from
# every probe arm and subgroup so that each keeps its most-affected images: with 5 kB JPEG
# thumbnails about 5.5 MB, whatever the number of images audited.
MAX_GALLERY_FIGURES = 360
# The failed gates the first screen names, as gate and grouping with at most so many of their
# groups; the policy section lists every gate.
FIRST_SCREEN_GATES = 3
FIRST_SCREEN_GROUPS = 4
# What a placebo (an arm's control on the same image) is, by the arm's kind of region.
PLACEBO_TIP = (
    "the same edit on a random region of the same shape, or of the same area and compactness "
    "where that shape fits nowhere else; for a whole-image edit, the noise floor (the image "
    "shifted by one pixel)"
)
# Tooltips of table headers: what a column means, for readers who did not run the audit.
TIPS = {
    "n": "images of this subgroup that were audited",
    "Pairs": "images of this subgroup that received both the guided edit and its placebo",
    "Excess at equal confidence": "the excess this subgroup would show at the run's mix of "
    "original-prediction confidence (quintile strata)",
    "Probability drop: guided / placebo": "mean fall of the originally predicted class's "
    "probability under each edit",
    "Mean confidence": "mean probability of the originally predicted class before any edit",
    "In test": "groups smaller than the minimum group size are shown but left out of the test",
    "corrections": "edits that turned a wrong prediction right",
    "breaks": "edits that turned a right prediction wrong",
    "placebo flip rate": PLACEBO_TIP,
    "Placebo flip rate": PLACEBO_TIP,
    "Control": "what each pair's placebo was, with how many pairs had it",
    "Exact McNemar": "paired test on the images where only one of the two edits flipped",
    "Holm-adjusted": "p-value corrected for every test of the run (Holm's method)",
    "Holm-adjusted p": "p-value corrected for every test of the run (Holm's method)",
    "AMR": "Acceptable Mask Ratio: activated area inside the region × image share outside it",
    "JS divergence": "Jensen–Shannon divergence of the mean maps, in bits: 0 identical, 1 disjoint",
}


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class ProbeSection:
    name: str
    description: str
    tables: list[Table]


@dataclass
class GalleryFigure:
    """One edited image: original, heatmap with the region outlined, and the edited image, as
    data URIs (None when the report shows no images), and what the edit did to the scores."""

    probe: str
    image_id: str
    label: str
    groups: dict[str, str]
    orig_pred: str
    orig_p_pred: str
    probed_pred: str
    probed_p_orig_pred: str
    direction: str
    original: str | None
    heatmap: str | None
    probed: str | None


@dataclass
class Gallery:
    figures: list[GalleryFigure]
    stored: int  # figures in gallery.json, before the cap
    probes: list[str]
    filters: list[tuple[str, list[str]]]  # group column → its values, for the selectors


@dataclass
class PolicyView:
    """The policy verdict of gate.json: its sentence and the failed gates for the first
    screen, and every gate judged for the policy section."""

    holds: bool
    text: str
    failed: list[str]  # the first FIRST_SCREEN_GATES failed gates and groupings, with groups
    more_failed: int  # failed gates and groupings beyond those
    gates: Table


@dataclass
class ReportView:
    title: str
    verdict: str
    tone: Literal["harm", "differences", "none"]  # error-rate gaps; only other gaps; none
    policy: PolicyView | None  # None where the run was not judged against a policy
    headlines: list[Finding]  # the first screen: the most harmful, one per kind and probe
    headline_limit: int
    findings: list[Finding]  # every significant result, most harmful first
    quiet_tests: list[str]
    run_card: list[tuple[str, str]]
    skips: Table
    error_tables: list[Table]
    intersection_table: Table | None
    probe_sections: list[ProbeSection]
    paired: Table
    plot_svg: str
    directions_svg: str
    gallery: Gallery
    report_images: ReportImages
    images_note: str
    tips: dict[str, str]
    appendix: Table
    label_column: str
    label_source: str
    label_meanings: list[LabelMeaning]  # what the label and group values stand for, if said
    group_columns: list[str]
    alpha: float
    interval_level: str  # of the rates' and gaps' intervals: 1 − α
    methods: list[str]
    region_area: float
    methods_section: MethodsSection
    cues: CueSection | None  # "What the model keys on"; None for a --no-cues run


@dataclass(frozen=True)
class LabelMeaning:
    """A label or group column as the dataset's labels.schema.json describes it."""

    column: str
    description: str
    values: list[tuple[str, str]]  # (value, what it stands for)


def _label_meanings(summary: RunSummary) -> list[LabelMeaning]:
    """The label column's and the group columns' descriptions, each once, in that order."""
    described = summary.dataset.column_descriptions
    columns = dict.fromkeys([summary.dataset.label_column, *summary.dataset.group_columns])
    return [
        LabelMeaning(
            grouping_text(c), described[c].description, sorted(described[c].values.items())
        )
        for c in columns
        if c in described
    ]


def build_view(run_dir: Path, images: ReportImages = DEFAULT_REPORT_IMAGES) -> ReportView:
    """Everything the report shows, from the stored run; ``images`` says what of the photos."""
    run = RunStore.open(run_dir)
    summary = run.summary()
    records = run.records()
    stored = run.gallery()
    stats = summary.statistics
    found = findings(summary)
    level = interval_level(stats.alpha)
    return ReportView(
        title=(
            f"Audit of {Path(summary.model.path).name} on {summary.dataset.images_audited} "
            f"images of {Path(summary.dataset.root).name}/"
        ),
        verdict=verdict(summary, found),
        tone=_tone(found),
        policy=_policy(run_dir),
        cues=cue_section(run_dir, images),
        headlines=headlines(found),
        headline_limit=HEADLINES,
        findings=found,
        quiet_tests=_quiet(summary),
        run_card=_run_card(summary, records),
        skips=_skips(summary),
        error_tables=[_error_table(t, level, adjusted_for(stats, t)) for t in stats.error_gaps],
        intersection_table=_intersection_table(summary),
        probe_sections=_probe_sections(summary),
        paired=_paired(summary),
        plot_svg=_plot(summary),
        directions_svg=_directions_plot(summary),
        gallery=_gallery(stored, summary, images),
        report_images=images,
        images_note=images_note(
            images, "rerender with `audit report RUN_DIR --report-images full`"
        ),
        tips=TIPS,
        appendix=_appendix(stats),
        label_column=summary.dataset.label_column,
        label_source=_label_source(summary),
        label_meanings=_label_meanings(summary),
        group_columns=list(summary.dataset.group_columns),
        alpha=stats.alpha,
        interval_level=level,
        methods=summary.method_names,
        region_area=summary.config.region_area,
        methods_section=_methods_section(summary, run, images),
    )


def _tone(found: list[Finding]) -> Literal["harm", "differences", "none"]:
    """How the verdict box is marked: the model is wrong more often for a subgroup; only other
    subgroup differences (reliance, edit sensitivity) were found; none was."""
    if any(f.kind == "error_rate" for f in found):
        return "harm"
    return "differences" if any(f.grouping is not None for f in found) else "none"


def _policy(run_dir: Path) -> PolicyView | None:
    """gate.json's verdict, where ``audit run --policy`` or ``audit gate`` stored one."""
    path = run_dir / GATE_FILE
    if not path.is_file():
        return None
    judged = read_typed(path, StoredVerdict.from_json, "audit gate")
    failed = _failed_gates(judged.failed)
    not_passed = [r for r in judged.results if r.outcome != "pass"]
    return PolicyView(
        holds=judged.holds,
        text=policy_text(judged),
        failed=failed[:FIRST_SCREEN_GATES],
        more_failed=max(len(failed) - FIRST_SCREEN_GATES, 0),
        gates=Table(
            f"Gates not passed ({len(not_passed)} of {len(judged.results)})",
            ["Gate", "Grouping", "Group", "Outcome", "Figures"],
            [
                [r.gate, grouping_text(r.grouping), r.group, r.outcome, r.message]
                for r in not_passed
            ],
            note=f'Policy: {judged.policy.source} (require = "{judged.policy.require}"). '
            f"{'Every other gate' if not_passed else 'Every gate'} passed; gate.json holds "
            "every gate with its figures.",
        ),
    )


def _failed_gates(failed: list[StoredGateResult]) -> list[str]:
    """Failed gates named once per gate and grouping, with their first groups ("error_rate_gap
    for gender label × race label 'female×A', 'female×B'"), so five failures of one gate take
    one phrase on the first screen, not five, and twenty take no more room than four."""
    groups: dict[tuple[str, str], list[str]] = {}
    for result in failed:
        groups.setdefault((result.gate, result.grouping), []).append(f"'{result.group}'")
    return [
        f"{gate} for {grouping_text(grouping)} {', '.join(names[:FIRST_SCREEN_GROUPS])}"
        + (
            f" and {len(names) - FIRST_SCREEN_GROUPS} more"
            if len(names) > FIRST_SCREEN_GROUPS
            else ""
        )
        for (gate, grouping), names in groups.items()
    ]


def _label_source(summary: RunSummary) -> str:
    """Who assigned the labels, as the auditor stated it (--label-source), or that they did not."""
    source = summary.config.label_source
    if source:
        return f"The labels were assigned by {source}."
    return (
        "Who assigned the labels was not stated (audit run --label-source); the dataset's "
        "documentation should say, and any result quoted from this report should name it."
    )


def _quiet(summary: RunSummary) -> list[str]:
    """One line per grouping with no significant gap, so silence is stated, not implied, with
    the smallest gap its sample sizes could reliably have shown."""
    stats = summary.statistics
    return [_quiet_line(t, stats.min_group_size) for t in stats.error_gaps if not t.significant]


def _quiet_line(test: GapTest, min_group_size: int) -> str:
    """A test that found nothing, with what it could have missed; one that could not run says
    so, rather than "no significant difference"."""
    by = f"Error rate by {grouping_text(test.grouping)}"
    if test.min_detectable_gap is None:
        return f"{by}: not tested (fewer than two subgroups of at least {min_group_size} images)."
    return (
        f"{by}: no significant difference ({p_text(test.p_adjusted)} after Holm correction; "
        f"largest gap {pct(test.effect)}); {unseen_text(test.min_detectable_gap)}."
    )


def _region_area(cap: float, records: pd.DataFrame) -> str:
    """The cap on an attribution region and what the regions measured: the cap is the top share
    of a map, and the connected region kept from it is often much smaller."""
    cap_text = f"at most {100 * cap:.0f} % of the image (--region-area)"
    guided = records[
        records["skip_reason"].isna()
        & records["region_area"].notna()
        & (records["region_source"] == "attribution")
    ].drop_duplicates(["image_id", "method"])
    if guided.empty:
        return cap_text
    areas = 100 * guided["region_area"]
    return (
        f"{cap_text}; measured {areas.mean():.1f} % on average "
        f"({areas.min():.1f}–{areas.max():.1f} %, {len(guided)} regions)"
    )


def _run_card(summary: RunSummary, records: pd.DataFrame) -> list[tuple[str, str]]:
    model, data, config = summary.model, summary.dataset, summary.config
    versions = ", ".join(f"{k} {v}" for k, v in summary.versions.items())
    height, width = model.input_size
    return [
        ("Model file", f"{model.path} ({model.kind})"),
        ("Model SHA-256", str(model.sha256)),
        (
            "Classes (output order)",
            ", ".join(model.classes) + (" — single-logit head" if model.single_logit else ""),
        ),
        ("Input", f"{height}×{width}, mean {list(model.mean)}, std {list(model.std)}"),
        ("Dataset", data.root),
        ("Labels assigned by", config.label_source or "(not stated)"),
        ("labels.csv SHA-256", data.labels_csv_sha256 or "(ImageFolder layout, no labels.csv)"),
        (
            "Label column / group columns",
            f"{data.label_column} / {', '.join(data.group_columns) or '(none)'}",
        ),
        (
            "Images",
            f"{data.rows} rows, {data.images_audited} audited, {data.images_skipped} skipped",
        ),
        (
            "Attribution",
            f"for the {summary.attribution.target} class: "
            + "; ".join(
                f"{m.name} (layer {m.target_layer or '(input pixels)'})"
                for m in summary.attribution.methods
            ),
        ),
        ("Region area", _region_area(config.region_area, records)),
        ("Probes", ", ".join(config.probes)),
        (
            "Seed / α / minimum group size",
            f"{config.seed} / {config.alpha} / {config.min_group_size}",
        ),
        (
            "Created",
            f"{summary.created} in {summary.seconds:.0f} s by auditor {summary.tool.version}",
        ),
        ("Versions", versions),
    ]


RERENDER_FULL = "rerender with `audit report RUN_DIR --report-images full`"
SKIPPED_ARM = {
    "image": "the whole image",
    "edit": "the edit",
    "placebo": "only its placebo (the edit itself ran)",
}


def _skips(summary: RunSummary) -> Table:
    rows = [
        [s.probe, SKIPPED_ARM[s.arm], s.reason, str(s.count)]
        for s in summary.dataset.skips_by_reason
    ]
    listed = summary.dataset.skipped
    note = "; ".join(f"{s.image_id}: {s.reason}" for s in listed if s.probe is None)
    return Table(
        "Rows and edits that could not be used",
        ["Probe", "Skipped", "Reason", "Count"],
        rows,
        note=f"Skipped images: {note}" if note else "",
    )


def _gap_table(test: GapTest, event: str, what: str, level: str) -> Table:
    rows = [
        [
            g.group,
            str(g.rate.n),
            str(g.rate.k),
            rate_text(g.rate),
            "yes" if g.tested else "too few",
        ]
        for g in test.groups
    ]
    note = f"{test.test}: {p_text(test.p_value)}{_monte_carlo_text(test)}, " + (
        f"Holm-adjusted {p_text(test.p_adjusted)}" + (" — significant" if test.significant else "")
    )
    if test.min_detectable_gap is not None:
        note += (
            f"; {unseen_text(test.min_detectable_gap)} ({100 * POWER:.0f} % power, between the "
            "two smallest subgroups in the test)"
        )
    return Table(
        f"{what.capitalize()} by {grouping_text(test.grouping)}",
        ["Group", "n", event, f"{what} ({level} CI)", "In test"],
        rows,
        note,
    )


def _monte_carlo_text(test: GapTest) -> str:
    """A Monte Carlo p-value's own uncertainty, as " (Monte Carlo SE 0.0015)"; "" when exact."""
    return "" if test.monte_carlo_se is None else f" (Monte Carlo SE {test.monte_carlo_se:.2g})"


def _error_table(test: GapTest, level: str, adjusted: AdjustedGap | None = None) -> Table:
    """The error-rate table of one grouping, with accuracy (1 − error rate) beside it, and the
    gap at equal covariates where the run adjusted for some."""
    table = _gap_table(test, "errors", "error rate", level)
    if adjusted is not None:
        text = adjusted_text(adjusted)
        table.note += f". {text[0].upper()}{text[1:]}"
    table.columns.insert(4, f"accuracy ({level} CI)")
    for row, group in zip(table.rows, test.groups, strict=True):
        row.insert(4, rate_text(_accuracy(group.rate)))
    return table


def _accuracy(errors: Rate) -> Rate:
    """The share of correct predictions: 1 − the error rate, its interval mirrored."""
    if errors.rate is None or errors.ci_low is None or errors.ci_high is None:
        return errors  # no images: no rate either way
    return Rate(
        errors.n, errors.n - errors.k, 1 - errors.rate, 1 - errors.ci_high, 1 - errors.ci_low
    )


def _intersection_table(summary: RunSummary) -> Table | None:
    """Gender Shades-style: the error rate of every cell of two group columns, with margins.

    Rows are the second column's values, columns the first's, each cell "rate (CI), n"; None
    unless the run has exactly two group columns (more are listed as one intersection).
    """
    columns = summary.dataset.group_columns
    if len(columns) != 2:
        return None
    tests = {t.grouping: t for t in summary.statistics.error_gaps}
    across, down = columns
    if not {across, down, INTERSECTION.join(columns)} <= set(tests):
        return None
    cells = {g.group: g.rate for g in tests[INTERSECTION.join(columns)].groups}
    across_rates = {g.group: g.rate for g in tests[across].groups}
    down_rates = {g.group: g.rate for g in tests[down].groups}

    def cell(rate: Rate | None) -> str:
        return "—" if rate is None else f"{rate_text(rate)}, n = {rate.n}"

    rows = [
        [
            value,
            *[cell(cells.get(f"{a}{INTERSECTION}{value}")) for a in across_rates],
            cell(down_rates[value]),
        ]
        for value in down_rates
    ]
    rows.append(
        [
            "all",
            *[cell(r) for r in across_rates.values()],
            cell(summary.statistics.overall_error),
        ]
    )
    return Table(
        f"Error rate by {grouping_text(across)} (columns) and {grouping_text(down)} (rows)",
        [f"{down} \\ {across}", *across_rates, "all"],
        rows,
        note=f"Each cell: error rate with its Wilson {interval_level(summary.statistics.alpha)} "
        "interval and the number of images. "
        "The tests across subgroups are in the tables below and in the appendix.",
    )


def _gallery(stored: list[StoredGalleryItem], summary: RunSummary, images: ReportImages) -> Gallery:
    """The stored gallery, capped at MAX_GALLERY_FIGURES in turn across arms and subgroups."""
    by_key: dict[tuple[str, ...], list[StoredGalleryItem]] = {}
    for item in stored:  # stored best first within each arm and subgroup
        key = (item.probe, *(str(v) for _, v in sorted(item.groups.items())))
        by_key.setdefault(key, []).append(item)
    keys = sorted(by_key)
    chosen = [
        by_key[key][rank]
        for rank in range(max((len(v) for v in by_key.values()), default=0))
        for key in keys
        if rank < len(by_key[key])
    ][:MAX_GALLERY_FIGURES]
    order = {id(item): i for i, item in enumerate(stored)}
    chosen.sort(key=lambda item: order[id(item)])
    columns = summary.dataset.group_columns
    return Gallery(
        figures=[_figure(item, images) for item in chosen],
        stored=len(stored),
        probes=list(dict.fromkeys(item.probe for item in chosen)),
        filters=[
            (column, sorted({str(item.groups.get(column)) for item in chosen}))
            for column in columns
        ],
    )


def _figure(item: StoredGalleryItem, images: ReportImages) -> GalleryFigure:
    return GalleryFigure(
        probe=item.probe,
        image_id=item.image_id,
        label=item.label,
        groups={k: str(v) for k, v in item.groups.items()},
        orig_pred=item.orig_pred,
        orig_p_pred=pct(item.orig_p_pred),
        probed_pred=item.probed_pred,
        probed_p_orig_pred=pct(item.probed_p_orig_pred),
        direction=item.direction or "no change",
        original=face_image_uri(item.original_png, images),
        heatmap=face_image_uri(item.heatmap_png, images, item.region_png),
        probed=face_image_uri(item.probed_png, images),
    )


def arms(summary: RunSummary) -> list[tuple[ProbeInfo, str | None]]:
    """(probe, method) pairs in run order: one per method for probes that a map places."""
    methods: list[str | None] = [*summary.method_names]
    return [
        (probe, method)
        for probe in summary.probes
        for method in (methods if probe.region_from == "attribution" else [None])
    ]


def _probe_sections(summary: RunSummary) -> list[ProbeSection]:
    stats = summary.statistics
    sections = []
    for probe, method in arms(summary):
        name = arm(probe.name, method)
        tables = []
        for test in (t for t in stats.flip_gaps if t.probe == probe.name and t.method == method):
            assert test.region_source is not None, test.id
            placebo = {
                g.group: g.rate for g in stats.placebo_by_group.get(f"{name}/{test.grouping}", ())
            }
            table = _gap_table(test, "changed", "flip rate", interval_level(stats.alpha))
            table.columns = [
                *table.columns[:4],
                "corrections",
                "breaks",
                "placebo flip rate",
                table.columns[4],
            ]
            for row, group in zip(table.rows, test.groups, strict=True):
                label = group.group
                directions = summary.directions(
                    probe.name, method, test.region_source, test.grouping, label, paired=False
                )
                row[4:4] = [
                    *_corrections_breaks(directions),
                    rate_text(placebo[label]) if label in placebo else "—",
                ]
            tables.append(table)
        excess = [t for t in stats.excess if t.probe == probe.name and t.method == method]
        if excess:  # the raw tables measure edit sensitivity; reliance is the excess
            for table in tables:
                table.caption = f"Edit sensitivity: {table.caption[0].lower()}{table.caption[1:]}"
        tables += [_excess_table(t, interval_level(stats.alpha)) for t in excess]
        description = probe.description + (f" (regions from {method})" if method else "")
        sections.append(ProbeSection(name, description, tables))
    return sections


def _excess_table(test: ExcessTest, level: str) -> Table:
    """Reliance by subgroup: guided minus placebo on the same images, with the probability
    drop beside the flips and the comparison at equal confidence."""
    rows = [
        [
            g.group,
            str(g.n_pairs),
            pct(g.guided_rate),
            pct(g.placebo_rate),
            _difference_text(g.excess, g.excess_ci),
            _difference_text(g.adjusted_excess, None),
            f"{pct(g.guided_drop)} / {pct(g.placebo_drop)}",
            pct(g.mean_confidence),
            "yes" if g.tested else "too few",
        ]
        for g in test.groups
    ]
    if test.p_value is None:
        note = f"Not tested: {test.reason}."
    else:
        note = (
            f"Does the excess differ across subgroups? {test.test}, {p_text(test.p_value)}, "
            f"Holm-adjusted {p_text(test.p_adjusted)}"
            + (" — significant" if test.significant else "")
            + f"; gap '{test.highest}' − '{test.lowest}' "
            + _difference_text(test.effect, test.effect_ci)
            + " (a simultaneous interval)"
        )
        if test.min_detectable_gap is not None:
            note += f"; {unseen_text(test.min_detectable_gap)} ({100 * POWER:.0f} % power)"
        if test.adjusted_p_adjusted is not None:
            note += (
                f". At equal confidence: gap {_difference_text(test.adjusted_effect, None)}, "
                f"{p_text(test.adjusted_p_adjusted)} after Holm over the run's equal-confidence "
                "comparisons (a family of their own, not the run's)"
            )
    return Table(
        f"Reliance by {grouping_text(test.grouping)}: guided minus placebo on the same images",
        [
            "Group",
            "Pairs",
            "Guided flip rate",
            "Placebo flip rate",
            f"Excess ({level} CI)",
            "Excess at equal confidence",
            "Probability drop: guided / placebo",
            "Mean confidence",
            "In test",
        ],
        rows,
        note + ".",
    )


def _difference_text(value: float | None, interval: tuple[float, float] | None) -> str:
    """ "+14 points (7.4 to 20)": a difference of rates in points, with its interval."""
    if value is None:
        return "—"
    text = f"{100 * value:+.1f} points"
    if interval is not None:
        text += f" ({100 * interval[0]:.1f} to {100 * interval[1]:.1f})"
    return text


def _corrections_breaks(directions: FlipDirections | None) -> list[str]:
    """The corrections and breaks cells of a flip rate; dashes where the run stored none."""
    if directions is None:
        return ["—", "—"]
    return [str(directions.corrections), str(directions.breaks)]


# Each kind of control (auditor.records.CONTROL_KINDS), as the paired table's column names it.
_CONTROL_NAMES = {
    SAME_SHAPE: "same shape",
    AREA_MATCHED: "area-matched",
    NOISE_FLOOR: "noise floor",
}


def _control_kinds_text(kinds: Mapping[str, int]) -> str:
    """ "same shape 571, area-matched 29"; "—" for a run from before control kinds."""
    return ", ".join(f"{_CONTROL_NAMES.get(k, k)} {n}" for k, n in kinds.items()) or "—"


def _paired(summary: RunSummary) -> Table:
    """Every guided-vs-placebo test, each arm's flips with their corrections and breaks."""
    rows = []
    for t in summary.statistics.paired:
        guided, placebo = (
            _corrections_breaks(
                summary.directions(t.probe, t.method, source, ALL, ALL, paired=True)
            )
            for source in (t.region_source, PLACEBO)
        )
        rows.append(
            [
                arm(t.probe, t.method),
                str(t.n_pairs),
                rate_text(t.guided),
                " / ".join(guided),
                rate_text(t.placebo),
                " / ".join(placebo),
                _control_kinds_text(t.control_kinds),
                f"{t.guided_only} / {t.placebo_only}",
                p_text(t.p_value),
                p_text(t.p_adjusted),
            ]
        )
    return Table(
        "Edit vs its control on the same images",
        [
            "Probe",
            "Images",
            "Guided flip rate",
            "Guided: corrections / breaks",
            "Placebo flip rate",
            "Placebo: corrections / breaks",
            "Control",
            "Only guided / only placebo flipped",
            "Exact McNemar",
            "Holm-adjusted",
        ],
        rows,
    )


def _plot(summary: RunSummary) -> str:
    stats = summary.statistics
    singles = set(summary.dataset.group_columns)
    points = [
        FlipRatePoint(f"{grouping_text(t.grouping)}: {g.group}", _gap_arm(t), g.rate)
        for t in stats.flip_gaps
        if t.grouping in singles
        for g in t.groups
    ]
    points += [
        FlipRatePoint("all images", key.split("/")[0], rate)
        for key, rate in stats.flip_overall.items()
        if not key.endswith("/" + PLACEBO)
    ]
    probes = [arm(p.name, m) for p, m in arms(summary)]
    ordered = sorted(points, key=lambda p: p.label != "all images")
    return flip_rate_plot(ordered, probes, interval_level(stats.alpha))


def _gap_arm(test: GapTest) -> str:
    """The probe arm of a flip-rate gap (error-rate gaps have none)."""
    assert test.probe is not None, f"{test.id} is not a flip-rate gap"
    return arm(test.probe, test.method)


def _directions_plot(summary: RunSummary) -> str:
    """Corrections and breaks per probe arm, over all its images and each subgroup of each
    single group column."""
    singles = {ALL, *summary.dataset.group_columns}
    rows = [
        DirectionCount(
            label="all images" if d.grouping == ALL else f"{grouping_text(d.grouping)}: {d.group}",
            probe=arm(d.probe, d.method),
            n=d.n,
            corrections=d.corrections,
            breaks=d.breaks,
        )
        for d in summary.flip_directions
        if not d.paired and d.region_source != PLACEBO and d.grouping in singles
    ]
    return corrections_breaks_plot(rows, [arm(p.name, m) for p, m in arms(summary)])


def _statistic(test: GapTest | PairedTest | ExcessTest) -> float | None:
    """The test statistic the appendix shows: chi-square, the 2×2 odds ratio or the Wald
    statistic; None for McNemar (exact: its discordant counts say it) and for the larger
    Fisher tests, whose "statistic" is the observed table's probability, not a measure."""
    if isinstance(test, PairedTest):
        return None
    if isinstance(test, GapTest) and test.test.startswith("fisher-exact ("):
        return None
    return test.statistic


def _appendix(stats: Statistics) -> Table:
    rows = []
    tests: list[GapTest | PairedTest | ExcessTest] = [
        *stats.error_gaps,
        *stats.flip_gaps,
        *stats.excess,
        *stats.paired,
    ]
    for test in tests:
        statistic = _statistic(test)
        rows.append(
            [
                test.id,
                test.test,
                "—" if statistic is None else f"{statistic:.4g}",
                "—"
                if test.p_value is None
                else f"{test.p_value:.3g}"
                + (_monte_carlo_text(test) if isinstance(test, GapTest) else ""),
                "—" if test.p_adjusted is None else f"{test.p_adjusted:.3g}",
                "yes" if test.significant else "no",
            ]
        )
    return Table(
        "Every test of the run",
        ["Test id", "Test", "Statistic", "p", "Holm-adjusted p", "Significant"],
        rows,
    )


@dataclass
class MeanMapFigure:
    caption: str
    uri: str | None  # data URI; None when the report shows no images
    count: int


@dataclass
class MethodsSection:
    """Attribution methods side by side: the edits they place, how faithful their maps are,
    where they look per subgroup, and how their mean maps differ."""

    edits: Table
    faithfulness: Table
    localisation: list[Table]
    divergence: Table
    mean_maps: list[MeanMapFigure]


_METRIC_TEXT = {
    "deletion_auc": "Deletion AUC (lower is better)",
    "insertion_auc": "Insertion AUC (higher is better)",
    "road_morf": "ROAD, most relevant first (lower is better)",
    "road_lerf": "ROAD, least relevant first (higher is better)",
}


def _interval(mean: float | None, ci: Bounds | None) -> str:
    if mean is None:
        return "—"
    if ci is None or ci[0] is None or ci[1] is None:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({ci[0]:.3f} to {ci[1]:.3f})"


def _methods_section(
    summary: RunSummary, run: CompletedRun, images: ReportImages
) -> MethodsSection:
    attribution, stats = summary.attribution, summary.statistics
    paired = {(t.probe, t.method): t for t in stats.paired}
    edits = Table(
        "Edits placed by each method: guided vs the same edit on a random region",
        ["Probe", "Method", "Images", "Guided flip rate", "Placebo flip rate", "Holm-adjusted"],
        [
            [
                probe.name,
                method,
                str(t.n_pairs),
                rate_text(t.guided),
                rate_text(t.placebo),
                p_text(t.p_adjusted),
            ]
            for probe, method in arms(summary)
            if method is not None and (t := paired.get((probe.name, method)))
        ],
        note="A method whose regions matter to the model flips far more predictions than the "
        "same edit placed at random.",
    )
    faithful = Table(
        "Faithfulness of each method's maps against a random map, on the same images",
        [
            "Method",
            "Metric",
            "Images",
            "Method (bootstrap 95 % CI)",
            "Random map (bootstrap 95 % CI)",
            "Difference (bootstrap 95 % CI)",
            "Beats random",
        ],
        [
            [
                row.method,
                _METRIC_TEXT.get(row.metric, row.metric),
                str(row.n_images),
                _interval(row.method_mean, row.method_ci),
                _interval(row.random_mean, row.random_ci),
                _interval(row.difference, row.difference_ci),
                "yes" if row.beats_random else "no",
            ]
            for row in attribution.faithfulness
        ],
        note="Deletion/insertion: the model's probability for the explained class as pixels are "
        "blurred away (or revealed) in the map's order; ROAD imputes removed pixels from their "
        "neighbours so the shape of the removed area leaks less. Bootstrap 95 % intervals over "
        "images; 'beats random' means the paired difference's interval excludes zero.",
    )
    return MethodsSection(
        edits=edits,
        faithfulness=faithful,
        localisation=_localisation_tables(attribution.localisation),
        divergence=_divergence_table(attribution.divergence),
        mean_maps=_mean_map_figures(run, summary, images),
    )


def _localisation_tables(rows: tuple[Localisation, ...]) -> list[Table]:
    """One table per method: mass share and AMR per named region, for every subgroup."""
    if not rows:
        return []
    frame = pd.DataFrame([asdict(r) for r in rows])
    regions = list(dict.fromkeys(frame["region"]))
    tables = []
    for method, mine in frame.groupby("method", sort=False):
        means = {(r.grouping, r.group, r.measure, r.region): r.mean for r in mine.itertuples()}
        sizes = mine[mine["measure"] == "mass_share"].groupby(["grouping", "group"])["n"].max()
        body = []
        for (grouping, group), n in sizes.items():
            label = "all images" if grouping == "all" else f"{grouping_text(grouping)} {group}"
            for measure, name in (("mass_share", label), ("amr", "")):
                values = [means.get((grouping, group, measure, r)) for r in regions]
                body.append(
                    [
                        name,
                        str(n) if measure == "mass_share" else "AMR",
                        *["—" if v is None else pct(v) for v in values],
                    ]
                )
        tables.append(
            Table(
                f"Where {method} looks: share of the map's mass per face region",
                ["Images", "n", *[r.replace("_", "/") for r in regions]],
                body,
                note="Regions come from the face box or landmarks (detected by OpenCV when "
                "labels.csv has none) and from labels.csv '<name>_box' columns. AMR (Acceptable "
                "Mask Ratio) = share of the activated area inside the region × the share of the "
                "image outside it, so large regions are not rewarded.",
            )
        )
    return tables


def _divergence_table(rows: tuple[Divergence, ...]) -> Table:
    def side(s: MapSide) -> str:
        where = "all images" if s.grouping == "all" else f"{grouping_text(s.grouping)} {s.group}"
        return f"{s.method}, {where}"

    return Table(
        "How different the mean maps are (Jensen–Shannon divergence in bits: 0 = identical, "
        "1 = disjoint)",
        ["Between", "A", "B", "JS divergence"],
        [[r.kind, side(r.a), side(r.b), f"{r.js_divergence:.3f}"] for r in rows],
        note="Maps are aligned to a canonical face frame and normalised to sum 1 before averaging,"
        " so every image weighs the same.",
    )


def _mean_map_figures(
    run: CompletedRun, summary: RunSummary, images: ReportImages
) -> list[MeanMapFigure]:
    from auditor.gallery import heat_image, png_base64

    counts = {entry.key: entry.count for entry in summary.attribution.mean_maps}
    figures = []
    for (method, grouping, group, outcome), mean in run.mean_maps().items():
        count = counts[(method, grouping, group, outcome)]
        who = "all images" if grouping == "all" else f"{grouping_text(grouping)} {group}"
        what = "misclassified images" if outcome == "error" else "all predictions"
        figures.append(
            MeanMapFigure(
                f"{method} · {who} · {what}",
                chart_image_uri(png_base64(heat_image(mean)), images),
                count,
            )
        )
    return figures
