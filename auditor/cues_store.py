"""Candidate cues as a run stores them, and their typed reading: no torch, no engine.

Cue discovery (:mod:`auditor.cues`) writes two files into the run directory:

- ``cues.parquet``: one row per image × cue that the image's attribution region belongs to,
  with the region's box in the image *file's* pixels (not the model's input size) and how
  strongly the region belongs to the cue;
- ``cues.json``: one entry per cue (where it sits, a montage of member crops, how often it
  occurs per subgroup among errors and among correct predictions, and the reliance test).

Both are written from the dataclasses below and read back into them, so the writer and the
readers (the report) share one schema, checked by :func:`auditor.run_summary.decode`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

import pyarrow as pa
import pyarrow.parquet as pq

from auditor.run_summary import JsonShapeError, check_schema_version, decode

CUES_FILE = "cues.parquet"
CUES_SUMMARY_FILE = "cues.json"
CUES_SCHEMA_VERSION = 1
ALL = "all"  # the grouping and group of an occurrence row that counts every image

# cues.parquet's columns. Boxes are whole pixels of the image file: the region's box at the
# model's input size, scaled to the file and widened outward to whole pixels.
CUES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("cue", pa.int32()),
        pa.field("x0", pa.int32()),
        pa.field("y0", pa.int32()),
        pa.field("x1", pa.int32()),
        pa.field("y1", pa.int32()),
        pa.field("membership", pa.float64()),
        pa.field("misclassified", pa.bool_()),
    ]
)

Frame = Literal["face", "image"]


@dataclass(frozen=True)
class CueMember:
    """One image whose attribution region belongs to a cue (a row of cues.parquet).

    ``membership`` is in (0, 1]: 1 at the cue's centre, falling with the distance of the
    region's description from it (see :func:`auditor.cues.membership_scores`).
    """

    image_id: str
    cue: int
    x0: int
    y0: int
    x1: int
    y1: int
    membership: float
    misclassified: bool


@dataclass(frozen=True)
class CuePosition:
    """Where a cue sits.

    ``frame`` is ``face`` when the members' boxes are placed in the canonical 128 × 128 face
    frame (:func:`auditor.localisation.align_box`), ``image`` when some member's face could not
    be placed and the boxes are given as fractions of the image instead. ``box`` is the
    members' median box in that frame, as fractions of its side. ``region`` is the named face
    region (``auditor.localisation.ANATOMICAL_REGIONS``) that holds the largest part of most
    members' boxes, ``region_share`` the share of members for which it does; None without
    face geometry. ``area`` is the members' median box area as a fraction of the image.
    """

    frame: Frame
    box: tuple[float, float, float, float]
    region: str | None
    region_share: float
    area: float


@dataclass(frozen=True)
class CueOccurrence:
    """How often a cue is where the model looks, in one subgroup.

    Of the subgroup's misclassified images that have an attribution region, ``error_members``
    have it in the cue; of its correctly classified ones, ``correct_members``. ``grouping`` and
    ``group`` are ``all`` for every image.
    """

    grouping: str
    group: str
    errors: int
    error_members: int
    correct: int
    correct_members: int


@dataclass(frozen=True)
class CueReliance:
    """Does removing the cue correct the errors of its members, more than removing a random
    region of the same shape on the same images?

    ``edit`` names the fill as a probe spec (``blackout``, ``blackout(fill=inpaint)``). Of the
    ``pairs`` misclassified members whose region has a placebo twin, ``corrected`` are
    classified correctly once the cue region is filled, ``placebo_corrected`` once the twin is;
    ``guided_only`` and ``placebo_only`` are the discordant pairs of the exact McNemar test
    (``test``), Holm-adjusted over every cue and fill of the run (``p_adjusted``). ``skipped``
    members had no placebo (no room, or a declined draw).
    """

    edit: str
    description: str
    pairs: int
    corrected: int
    placebo_corrected: int
    guided_only: int
    placebo_only: int
    skipped: int
    test: str
    p_value: float | None
    p_adjusted: float | None
    significant: bool


@dataclass(frozen=True)
class Cue:
    """One candidate cue: a cluster of the misclassified images' attribution regions.

    ``id`` is its rank: cues specific to the errors first, the one whose blacking out corrects
    the most errors beyond its placebo's first, then the others by their misclassified
    members. ``members`` counts every image whose region belongs to it,
    ``error_members`` the misclassified ones. ``specific`` says whether its regions are more
    frequent among the errors than among the correct predictions in some subgroup: the
    smallest one-sided Fisher exact p over the subgroups, Bonferroni-adjusted for their number
    (``specificity_p``, a screen: the clusters were formed from the errors), is below α; that
    subgroup is ``specific_grouping`` / ``specific_group`` (``all`` / ``all`` for every image).
    Only specific cues take the reliance test, so ``reliance`` is empty for the others.
    ``montage`` holds the best members' crops (misclassified first) as base64 PNG, unblurred:
    the report blurs them as it blurs its gallery.
    """

    id: int
    members: int
    error_members: int
    specific: bool
    specificity_p: float
    specific_grouping: str
    specific_group: str
    position: CuePosition
    occurrence: tuple[CueOccurrence, ...]
    reliance: tuple[CueReliance, ...]
    montage: tuple[str, ...]


@dataclass(frozen=True)
class CueSummary:
    """cues.json: the run's candidate cues and what they were found from.

    ``method`` is the attribution method whose regions were clustered and ``descriptor`` how a
    region's look was described (the model's own embedding of its crop, or colour and texture
    where the model offers none). ``images`` had an attribution region, ``errors`` of them were
    misclassified. ``note`` says why no cue was looked for, where none was. ``label_column``
    is the run's label column, so that readers can say "labelled" for it.
    """

    schema_version: int
    method: str | None
    descriptor: str
    label_column: str
    images: int
    errors: int
    min_cluster_size: int
    alpha: float
    seconds: float
    note: str | None
    cues: tuple[Cue, ...]

    @classmethod
    def from_json(cls, data: object) -> Self:
        """The typed summary of parsed cues.json ``data``.

        Raises:
            JsonShapeError: ``data`` is of another schema version or shape.
        """
        check_schema_version(data, CUES_SCHEMA_VERSION, "cues")
        return decode(cls, data)


@dataclass(frozen=True)
class StoredCues:
    """A run's cue files, read back."""

    summary: CueSummary
    members: tuple[CueMember, ...]

    @classmethod
    def read(cls, run_dir: Path) -> Self | None:
        """The cues of ``run_dir``; None for a run made without cue discovery (``--no-cues``).

        Raises:
            JsonShapeError: cues.json or cues.parquet has another shape than this reads.
        """
        summary_path, members_path = run_dir / CUES_SUMMARY_FILE, run_dir / CUES_FILE
        if not summary_path.is_file():
            return None
        try:
            data = json.loads(summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise JsonShapeError(f"{summary_path} is not JSON: {exc}") from None
        return cls(CueSummary.from_json(data), read_members(members_path))

    def of_cue(self, cue: int) -> list[CueMember]:
        """The members of cue ``cue``, most strongly belonging first."""
        return sorted(
            (m for m in self.members if m.cue == cue), key=lambda m: (-m.membership, m.image_id)
        )


def read_members(path: Path) -> tuple[CueMember, ...]:
    """cues.parquet's rows as typed members.

    Raises:
        JsonShapeError: the file lacks a column of :data:`CUES_SCHEMA` or holds another type.
    """
    try:
        table = pq.read_table(path, schema=CUES_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
        raise JsonShapeError(f"{path} is not a cues table of this auditor: {exc}") from None
    return tuple(CueMember(**row) for row in table.to_pylist())


def members_table(members: list[CueMember]) -> pa.Table:
    """Members as cues.parquet's table (the writer's side of :func:`read_members`)."""
    return pa.Table.from_pylist([vars(m) for m in members], schema=CUES_SCHEMA)
