"""The hypothesis page: hypothesis.json and examples.json → a view model → one HTML file.

Works on the stored outputs only, so the page re-renders without the model, and the console
line (:func:`headline`) and the page say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.hypothesis.document import (
    Example,
    HypothesisDocument,
    VerdictFigures,
    read_examples,
    read_hypothesis,
)
from auditor.hypothesis.files import HYPOTHESIS_PAGE, OUTCOME_CELLS
from auditor.run_summary import Rate
from reports.findings import interval_level, p_text, pct, rate_text
from reports.html import _environment
from reports.images import DEFAULT_REPORT_IMAGES, ReportImages, face_image_uri, images_note
from reports.view import Table

_VERDICT_WORDS = {
    "supported": "Supported",
    "not supported": "Not supported",
    "insufficient data": "Insufficient data",
}
_VERDICT_CLASS = {  # CSS class of the verdict box
    "supported": "supported",
    "not supported": "not-supported",
    "insufficient data": "insufficient",
}


@dataclass(frozen=True)
class ExampleView:
    image_id: str
    outcome: str
    caption: str
    # data URIs of the three thumbnails as --report-images allows (None: no images)
    original: str | None
    hypothesis: str | None
    control: str | None
    predictions: list[str]  # before, after the hypothesis edit, after the control edit


@dataclass(frozen=True)
class HypothesisView:
    title: str
    description: str
    verdict: str  # "supported", "not supported" or "insufficient data"
    verdict_class: str
    headline: str
    expectation: str
    spec_card: list[tuple[str, str]]
    figures: Table
    paired: Table
    skips: Table
    examples: list[ExampleView]
    run_card: list[tuple[str, str]]
    label_column: str
    images_note: str


def headline(document: HypothesisDocument) -> str:
    """The verdict in plain words with the figures it rests on: the page's first line."""
    v = document.verdict
    described = document.described
    selection = document.selection
    if v.verdict == "insufficient data":
        return (
            f"Insufficient data: {v.trials} image(s) took both edits ({selection.skipped} "
            f"of {selection.selected} selected were skipped); at least {v.min_trials} are "
            f"needed before any result could reach p < {v.alpha:g}."
        )
    assert v.effect_ci is not None, "a decided verdict has trials, hence an interval"
    return (
        f"{_VERDICT_WORDS[v.verdict]}: {described.hypothesis_edit} "
        f"{described.success} for {v.hypothesis.k} of {v.trials} images, "
        f"{rate_text(v.hypothesis)}, against {v.control.k} of {v.trials}, "
        f"{rate_text(v.control)}, for the control: {described.control_edit}. Difference "
        f"{_points(v.effect)} ({interval_level(v.alpha)} CI {_signed(v.effect_ci[0])} to "
        f"{_signed(v.effect_ci[1])}); {p_text(v.p_value)} (one-sided exact McNemar "
        f"test, α = {v.alpha:g})."
    )


def expectation_text(document: HypothesisDocument) -> str:
    """'' without ``expect``; else whether the verdict is the one the spec expects."""
    expect = document.expect
    if expect is None:
        return ""
    if document.expectation_met:
        return f"As the spec expects: {expect}."
    return (
        f"The spec expects '{expect}', the verdict is '{document.verdict.verdict}' (exit code 1)."
    )


def build_hypothesis_view(
    out_dir: Path, images: ReportImages = DEFAULT_REPORT_IMAGES
) -> HypothesisView:
    document = read_hypothesis(out_dir)
    spec = document.spec
    classes = document.model.classes
    return HypothesisView(
        title=f"Hypothesis: {spec.name}",
        description=spec.description.strip(),
        verdict=document.verdict.verdict,
        verdict_class=_VERDICT_CLASS[document.verdict.verdict],
        headline=headline(document),
        expectation=expectation_text(document),
        spec_card=_spec_card(document),
        figures=_figures(document),
        paired=_paired(document.verdict),
        skips=_skips(document),
        examples=[
            _example(e, classes, images)
            for e in sorted(read_examples(out_dir), key=lambda e: OUTCOME_CELLS.index(e.outcome))
        ],
        run_card=_run_card(document),
        label_column=document.dataset.label_column,
        images_note=images_note(images, "rerun with `--report-images full`"),
    )


def render_hypothesis(out_dir: Path, images: ReportImages = DEFAULT_REPORT_IMAGES) -> Path:
    """Write ``out_dir/hypothesis.html`` from the stored outputs; return its path. ``images``
    says what of the photos it shows: blurred faces by default, as the audit report does."""
    view = build_hypothesis_view(out_dir, images)
    html = _environment().get_template("hypothesis.html.j2").render(view=view)
    path = out_dir / HYPOTHESIS_PAGE
    path.write_text(html, encoding="utf-8")
    return path


def _signed(difference: float) -> str:
    return f"{100 * difference:+.0f}"


def _points(difference: float | None) -> str:
    return "n/a" if difference is None else f"{_signed(difference)} percentage points"


def _spec_card(document: HypothesisDocument) -> list[tuple[str, str]]:
    spec, described = document.spec, document.described
    return [
        ("Images", f"where {spec.where}" if spec.where else "every readable image"),
        ("Edit", described.hypothesis_edit),
        ("Success", f"the edit {described.success}"),
        ("Control", described.control_edit),
        ("Expected verdict", spec.expect or "(none stated)"),
        ("Spec file", f"{spec.path} (SHA-256 {spec.sha256})"),
    ]


def _figures(document: HypothesisDocument) -> Table:
    v = document.verdict
    effect = (
        "n/a"
        if v.effect is None or v.effect_ci is None
        else f"{_points(v.effect)} ({_signed(v.effect_ci[0])} to {_signed(v.effect_ci[1])})"
    )
    rows = [
        ["Selected images", str(document.selection.selected)],
        ["Trials (took both edits)", str(v.trials)],
        ["Hypothesis edit succeeded", _count(v.hypothesis)],
        ["Control edit succeeded", _count(v.control)],
        ["Difference (hypothesis − control)", effect],
        ["One-sided exact McNemar test", p_text(v.p_value)],
        ["Verdict", f"{v.verdict} (α = {v.alpha:g}, at least {v.min_trials} trials)"],
    ]
    return Table(
        "The figures",
        ["", f"value ({interval_level(v.alpha)} CI)"],
        rows,
        note=f"Rates carry Wilson {interval_level(v.alpha)} intervals (1 − α); the difference "
        "carries Newcombe's interval for "
        "paired proportions. The test counts the images where exactly one of the two edits "
        "succeeded: if the edit were no better than the control, either would be as likely.",
    )


def _count(rate: Rate) -> str:
    return f"{rate.k} of {rate.n}: {rate_text(rate)}"


def _paired(v: VerdictFigures) -> Table:
    return Table(
        "Hypothesis vs control, image by image",
        ["", "control succeeded", "control did not"],
        [
            ["hypothesis succeeded", str(v.both), str(v.hypothesis_only)],
            ["hypothesis did not", str(v.control_only), str(v.neither)],
        ],
    )


def _skips(document: HypothesisDocument) -> Table:
    selection, data = document.selection, document.dataset
    rows = [
        ["selected, not tried", reason, str(n)] for reason, n in selection.skips_by_reason.items()
    ]
    if data.not_read_count:
        rows.append(["not read, not selectable", "see hypothesis.json", str(data.not_read_count)])
    listed = "; ".join(f"{s.image_id}: {s.reason}" for s in selection.skipped_images)
    return Table(
        "Images that could not be used",
        ["Stage", "Reason", "Count"],
        rows,
        note=f"Skipped images: {listed}" if listed else "",
    )


def _example(item: Example, classes: Sequence[str], images: ReportImages) -> ExampleView:
    def prediction(stage: str, probs: Sequence[float]) -> str:
        best = max(range(len(classes)), key=probs.__getitem__)
        return f"{stage}: {classes[best]} ({pct(probs[best])})"

    groups = " · ".join(f"{k} {v}" for k, v in item.groups.items())
    return ExampleView(
        image_id=item.image_id,
        outcome=item.outcome,
        caption=f"{item.image_id} · label {item.label}" + (f" · {groups}" if groups else ""),
        original=face_image_uri(item.original, images),
        hypothesis=face_image_uri(item.hypothesis, images),
        control=face_image_uri(item.control, images),
        predictions=[
            prediction("original", item.orig_probs),
            prediction("hypothesis edit", item.hypothesis_probs),
            prediction("control edit", item.control_probs),
        ],
    )


def _run_card(document: HypothesisDocument) -> list[tuple[str, str]]:
    model, data, spec = document.model, document.dataset, document.spec
    return [
        ("Model file", f"{model.path} ({model.kind})"),
        ("Model SHA-256", model.sha256 or "(none: a prediction function)"),
        ("Classes (output order)", ", ".join(model.classes)),
        ("Dataset", data.root),
        ("labels.csv SHA-256", data.labels_csv_sha256 or "(ImageFolder layout, no labels.csv)"),
        ("Label column", data.label_column),
        ("Images", f"{data.rows} rows, {data.images_scored} scored"),
        ("Seed / α", f"{spec.seed} / {spec.alpha:g}"),
        (
            "Created",
            f"{document.created} in {document.seconds:.0f} s by auditor {document.tool.version}",
        ),
        ("Versions", ", ".join(f"{k} {v}" for k, v in document.versions.items())),
    ]
