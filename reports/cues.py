"""The report's "What the model keys on" section: the run's candidate cues as view data.

Reads cues.json and cues.parquet through :class:`auditor.cues_store.StoredCues` (no torch, no
engine) and formats every number here, so the template (``cues.html.j2``) only loops. Each
cue gets one sentence, in the form

    Cue 1 — a region at the neck or collar, in 75 % of the misclassified images labelled
    'female' and 0 % of the correct ones; removing it corrects 100 % of them vs 0 % for a
    random region (exact McNemar, p < 0.001 after Holm).

with a montage of member crops (blurred like the gallery unless ``--report-images full``),
where it sits, how often it occurs per subgroup, and both removals' tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auditor.cues_store import ALL, Cue, CueOccurrence, CueReliance, CueSummary, StoredCues
from reports.findings import grouping_text, p_text, pct
from reports.images import ReportImages, blurred, decode, jpeg_uri

# Where a named face region is, in words (auditor.localisation.ANATOMICAL_REGIONS).
REGION_WORDS = {
    "eyes": "at the eyes",
    "nose": "at the nose",
    "mouth": "at the mouth",
    "rest_of_face": "on the face (forehead, cheeks or chin)",
    "neck_collar": "at the neck or collar",
    "hair": "in the hair",
    "background": "in the background",
}
SMALL, LARGE = 0.05, 0.2  # a region below / above this share of the image is small / large
MONTAGE_GAP = 4  # pixels between the crops of a montage


@dataclass(frozen=True)
class CueTable:
    caption: str
    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class CueView:
    """One cue as the report shows it; ``montage`` is a data URI, or None under
    ``--report-images none``."""

    title: str
    sentence: str
    where: str
    specific: bool
    relied_on: bool
    montage: str | None
    montage_alt: str
    occurrence: CueTable
    reliance: CueTable | None


@dataclass(frozen=True)
class CueSection:
    intro: str
    note: str | None
    cues: list[CueView]


def cue_section(run_dir: Path, images: ReportImages) -> CueSection | None:
    """The section's view data; None for a run made without cue discovery (``--no-cues``).

    Raises:
        JsonShapeError: cues.json or cues.parquet has another shape than this auditor reads.
    """
    stored = StoredCues.read(run_dir)
    if stored is None:
        return None
    summary = stored.summary
    return CueSection(
        intro=_intro(summary),
        note=summary.note,
        cues=[_cue_view(cue, summary, images) for cue in summary.cues],
    )


def cue_sentence(cue: Cue, label_column: str) -> str:
    """The cue in one sentence: where it is, how often among the errors and the correct
    predictions (of the subgroup where it is most specific to the errors; of all images for a
    cluster that is specific to none), and what removing it does."""
    where = f"{_size(cue.position.area)} {_region_words(cue)}"
    if not cue.specific:
        return (
            f"Cluster {cue.id} — {where}, {_among(_overall(cue), label_column)}: as frequent "
            "among the correct predictions as among the errors, so it is where the model looks "
            "on most images rather than a cue of its errors, and its removal was not tested."
        )
    among = _among(_specific_group(cue), label_column)
    return f"Cue {cue.id} — {where}, {among}; {_removal_clause(cue.reliance)}."


def _among(group: CueOccurrence, label_column: str) -> str:
    return (
        f"in {pct(_share(group.error_members, group.errors))} of the misclassified images"
        f"{_of_group(group, label_column)} and {pct(_share(group.correct_members, group.correct))} "
        "of the correct ones"
    )


def _intro(summary: CueSummary) -> str:
    method = f"the {summary.method} regions" if summary.method else "the attribution regions"
    return (
        f"Candidate cues: {method} of the {summary.errors} misclassified images (of "
        f"{summary.images} with a region), clustered by where they sit in the face frame and by "
        f"what they show, described by {summary.descriptor}. No labels.csv column names them. "
        "Every image's region is then matched to the clusters, so each cue is counted among the "
        "errors and among the correct predictions. A cue is one the model relies on when "
        "removing it corrects its misclassified images more often than removing a random "
        "region of the same shape on the same images (exact McNemar, Holm-adjusted over every "
        f"cue and removal at α = {summary.alpha:g})."
    )


def _cue_view(cue: Cue, summary: CueSummary, images: ReportImages) -> CueView:
    kind = "Cue" if cue.specific else "Cluster"
    return CueView(
        title=f"{kind} {cue.id}",
        sentence=cue_sentence(cue, summary.label_column),
        where=_where(cue),
        specific=cue.specific,
        relied_on=any(r.significant for r in cue.reliance),
        montage=montage_uri(cue.montage, images),
        montage_alt=f"{len(cue.montage)} of the {cue.members} regions of {kind.lower()} {cue.id}",
        occurrence=_occurrence_table(cue, summary.label_column),
        reliance=_reliance_table(cue) if cue.reliance else None,
    )


def montage_uri(tiles: tuple[str, ...], images: ReportImages) -> str | None:
    """The crops side by side as one JPEG data URI, each blurred on its own (as the gallery
    blurs a thumbnail) unless ``full``; None under ``none`` or without crops."""
    if images == "none" or not tiles:
        return None
    pixels = [decode(tile) for tile in tiles]
    if images == "blurred":
        pixels = [blurred(p) for p in pixels]
    height = max(p.shape[0] for p in pixels)
    gap = np.full((height, MONTAGE_GAP, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for p in pixels:
        row += [p, gap]
    return jpeg_uri(np.concatenate(row[:-1], axis=1))


def _where(cue: Cue) -> str:
    position = cue.position
    x0, y0, x1, y1 = (100 * v for v in position.box)
    frame = "the face frame" if position.frame == "face" else "the image"
    named = (
        f"; {pct(position.region_share)} of its regions lie mostly "
        f"{REGION_WORDS.get(position.region, position.region)}"
        if position.region
        else "; no face was placed, so no face region is named"
    )
    return (
        f"Median box x {x0:.0f}–{x1:.0f} %, y {y0:.0f}–{y1:.0f} % of {frame}, "
        f"{pct(position.area)} of the image{named}. {cue.members} images' regions belong to it, "
        f"{cue.error_members} of them misclassified."
    )


def _occurrence_table(cue: Cue, label_column: str) -> CueTable:
    rows = [
        [
            "all images" if o.grouping == ALL else f"{grouping_text(o.grouping)} '{o.group}'",
            _count(o.error_members, o.errors),
            _count(o.correct_members, o.correct),
        ]
        for o in cue.occurrence
    ]
    return CueTable(
        caption=f"How often the model looks at it, by subgroup ({label_column} is the label)",
        columns=["Subgroup", "Misclassified: region in the cue", "Correct: region in the cue"],
        rows=rows,
    )


def _reliance_table(cue: Cue) -> CueTable:
    rows = [
        [
            r.description,
            str(r.pairs),
            _count(r.corrected, r.pairs),
            _count(r.placebo_corrected, r.pairs),
            f"{r.guided_only} / {r.placebo_only}",
            p_text(r.p_value),
            p_text(r.p_adjusted) + (" (significant)" if r.significant else ""),
        ]
        for r in cue.reliance
    ]
    skipped = max((r.skipped for r in cue.reliance), default=0)
    note = f"; {skipped} misclassified member(s) had no room for a random region" if skipped else ""
    return CueTable(
        caption=f"Removing it from its misclassified images{note}",
        columns=[
            "Removal",
            "Pairs",
            "Corrected: cue removed",
            "Corrected: random region",
            "Only cue / only random",
            "Exact McNemar",
            "Holm-adjusted p",
        ],
        rows=rows,
    )


def _removal_clause(reliance: tuple[CueReliance, ...]) -> str:
    """ "removing it corrects 100 % of them vs 0 % for a random region (…)", from the first
    removal (blackout), with the inpainted removal after it."""
    first, *others = reliance
    clause = (
        f"removing it corrects {pct(_share(first.corrected, first.pairs))} of them vs "
        f"{pct(_share(first.placebo_corrected, first.pairs))} for a random region "
        f"({first.test}, {_adjusted(first)})"
    )
    for other in others:
        clause += (
            f"; {other.description}, {pct(_share(other.corrected, other.pairs))} vs "
            f"{pct(_share(other.placebo_corrected, other.pairs))} ({_adjusted(other)})"
        )
    return clause


def _adjusted(test: CueReliance) -> str:
    if test.p_adjusted is None:
        return "not testable: no pair"
    return f"{p_text(test.p_adjusted)} after Holm"


def _specific_group(cue: Cue) -> CueOccurrence:
    """The subgroup where the cue is most specific to the errors (see
    :func:`auditor.cues.specificity`)."""
    return next(
        o
        for o in cue.occurrence
        if (o.grouping, o.group) == (cue.specific_grouping, cue.specific_group)
    )


def _overall(cue: Cue) -> CueOccurrence:
    return next(o for o in cue.occurrence if o.grouping == ALL)


def _of_group(group: CueOccurrence, label_column: str) -> str:
    """ " labelled 'female'" (the label's own column), " with race label 'C'", or nothing for
    all images."""
    if group.grouping == ALL:
        return ""
    if group.grouping == label_column:
        return f" labelled '{group.group}'"
    return f" with {grouping_text(group.grouping)} '{group.group}'"


def _size(area: float) -> str:
    if area < SMALL:
        return "a small region"
    if area > LARGE:
        return "a large region"
    return "a region"


def _region_words(cue: Cue) -> str:
    position = cue.position
    if position.region is not None:
        return REGION_WORDS.get(position.region, f"at {position.region}")
    cx, cy = ((position.box[0] + position.box[2]) / 2, (position.box[1] + position.box[3]) / 2)
    return f"centred at {100 * cx:.0f} % across and {100 * cy:.0f} % down the image"


def _share(k: int, n: int) -> float | None:
    return k / n if n else None


def _count(k: int, n: int) -> str:
    return f"{k} of {n} ({pct(_share(k, n))})" if n else "none"
