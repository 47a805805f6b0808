"""Cue discovery: what the model looks at where it errs, found from the run's own data.

An audit's probes say *that* an attribution-guided edit changes predictions; published audits
found their shortcuts (a collar, a dumbbell, hair) by looking at *what* the regions show. This
stage does that looking without any labels.csv column naming the cue:

1. Each audited image's attribution region (the guided region of the run's first method, as
   results.parquet stores its box) is described by where it is, its box in the canonical
   128 × 128 face frame (:func:`auditor.localisation.align_box`) and the named face region
   holding most of it, and by what it looks like: the model's own penultimate-layer embedding
   of the region's crop (timm's ``forward_features`` then ``forward_head(pre_logits=True)``),
   or, for a model that offers none (TorchScript, ONNX, a black box), a colour and texture
   descriptor of the crop.
2. The regions of the misclassified images are clustered with HDBSCAN (Campello, Moulavi and
   Sander 2013; scikit-learn's implementation), which needs no number of clusters and leaves
   regions that resemble no others as noise, on the position beside the look's first two
   principal components (:func:`cluster_features`). Each cluster is a candidate cue.
3. Every image's region, misclassified or not, belongs to a cue when it lies within the
   cluster's reach (:func:`membership_scores`), so each cue gets how often it occurs per
   subgroup among errors and among correct predictions. A cluster that is no more frequent
   among some subgroup's errors than among its correct predictions is where the model looks
   on every image, not a cue of its errors (:func:`specificity`): it is reported, untested.
4. The reliance test: on the cue's misclassified members, the cue region is blacked out (and,
   separately, inpainted), and so is a placebo of the same shape on the same image
   (:func:`auditor.regions.placebo_region`). The exact McNemar test compares how often each
   corrects the error; Holm's method adjusts over every cue and fill.

Only the face box and landmarks of labels.csv are used (to place the face): its ``*_box``
columns, which may hold the very cue being looked for, never reach this module.

It runs after the run's parts are combined and re-reads the images it needs, in chunks of the
batch size, so memory stays one chunk whatever the run's size.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from PIL import Image
from scipy.stats import fisher_exact
from sklearn.cluster import HDBSCAN
from sklearn.decomposition import PCA

from auditor.cues_store import (
    ALL,
    CUES_FILE,
    CUES_SCHEMA_VERSION,
    CUES_SUMMARY_FILE,
    Cue,
    CueMember,
    CueOccurrence,
    CuePosition,
    CueReliance,
    CueSummary,
    Frame,
    members_table,
)
from auditor.data import Sample
from auditor.faces import image_geometry
from auditor.gallery import png_base64
from auditor.localisation import (
    ANATOMICAL_REGIONS,
    CANONICAL_SIZE,
    Geometry,
    align_box,
    box_mask,
    named_regions,
)
from auditor.models import LoadedModel
from auditor.preprocess import read_image, to_tensor
from auditor.records import GROUP_PREFIX
from auditor.regions import Region, placebo_region, scale_box
from auditor.rescore import predict
from auditor.stats import holm, mcnemar_p
from auditor.store import write_atomically
from probes.blackout import Blackout

# The columns of results.parquet that discovery reads (the group columns come with them).
RECORD_COLUMNS = (
    "image_id", "region_source", "method", "orig_pred",
    "region_x0", "region_y0", "region_x1", "region_y1",
)  # fmt: skip
GUIDED = "attribution"  # the region_source of an attribution-guided edit in results.parquet
# The two ways of removing a cue, as probe specs: black (as the collar experiments did) and
# inpainted from the surroundings (no new colour that could itself change a prediction).
REMOVALS = {
    "blackout": "blacking it out",
    "blackout(fill=inpaint)": "inpainting it from its surroundings",
}
# Below this many misclassified images with a region no cluster is looked for: HDBSCAN needs
# two clusters' worth to tell a cluster from noise.
MIN_ERRORS = 10
MIN_CLUSTER_SIZE = 5
CLUSTER_SHARE = 0.05  # ... or this share of the misclassified images, whichever is larger
# HDBSCAN's neighbourhood for core distances: its default (the cluster size) leaves most of a
# cue's regions as noise on a few dozen errors; 2 keeps more of them while the clusters stay
# pure (on the demo: 38 of the 49 tie errors in one cluster, and nothing else in it).
MIN_SAMPLES = 2
# Principal components of the look kept for clustering. Density-based clustering loses
# contrast as dimensions grow; with 8 components the tie's regions split by tie colour into
# two or three clusters, with 2 they stay one while the planted badge of tests/test_cues.py
# (another place, another look) stays apart from the errors around it.
APPEARANCE_DIMENSIONS = 2
MONTAGE_SIZE = 8  # member crops per cue
TILE_SIDE = 64  # pixels of one montage crop
_CONTEXT = 0.25  # a montage crop shows this share of the box's size around it on every side
_COLOUR_SIDE = 32  # crops are described for colour and texture at this size
_ORIENTATIONS = 8  # bins of the gradient-orientation histogram


@dataclass(frozen=True)
class CueOptions:
    """How cues are looked for: the method whose regions are clustered (None: the run has no
    attribution-guided probe), the run's seed, α, McNemar variant, batch size, label column and
    group columns."""

    method: str | None
    seed: int
    alpha: float
    mid_p: bool
    batch_size: int
    label_column: str
    group_columns: tuple[str, ...]


@dataclass(frozen=True)
class ImageRegion:
    """One image's attribution region: its box at the model's input size, and the prediction."""

    sample: Sample
    box: tuple[int, int, int, int]
    prediction: str

    @property
    def misclassified(self) -> bool:
        return self.prediction != self.sample.label


@dataclass(frozen=True)
class Description:
    """Where a region is and what it looks like (see the module docstring).

    ``position`` is the box's centre and size, (cx, cy, w, h), as fractions of the frame side;
    ``file_box`` is the box in the image file's whole pixels.
    """

    frame: Frame
    position: tuple[float, float, float, float]
    region: str | None
    area: float
    file_box: tuple[int, int, int, int]


Embed = Callable[[np.ndarray], np.ndarray]  # uint8 crops [N, H, W, 3] → descriptors [N, D]


def discover_cues(
    run_dir: Path,
    records: pd.DataFrame,
    samples: Sequence[Sample],
    model: LoadedModel,
    options: CueOptions,
) -> CueSummary:
    """Find the run's candidate cues, write cues.parquet and cues.json, return the summary.

    Args:
        run_dir: where the two files go.
        records: results.parquet's :data:`RECORD_COLUMNS` (``image_id``, ``region_source``,
            ``method``, ``orig_pred``, ``region_x0`` … ``region_y1``); labels and groups are
            taken from ``samples``.
        samples: the audited samples (their files, face boxes and landmarks are used).
        model: the audited model, to describe crops and to re-score the reliance edits.
        options: see :class:`CueOptions`.
    """
    started = time.monotonic()
    regions = attribution_regions(records, samples, options.method)
    embed, descriptor = make_embedder(model)
    errors = [i for i, r in enumerate(regions) if r.misclassified]
    min_size = max(MIN_CLUSTER_SIZE, math.ceil(CLUSTER_SHARE * len(errors)))
    note = _no_search_reason(options.method, len(errors))
    members: list[CueMember] = []
    cues: list[Cue] = []
    if note is None:
        descriptions, looks = describe(regions, model, embed, options.batch_size)
        features = cluster_features(descriptions, looks, errors)
        labels = HDBSCAN(
            min_cluster_size=min_size,
            min_samples=MIN_SAMPLES,
            # All the errors may share one cause: without this, HDBSCAN splits such a cluster.
            allow_single_cluster=True,
            copy=True,
        ).fit_predict(features[errors])
        clusters = [np.asarray(errors)[labels == k] for k in sorted(set(labels) - {-1})]
        scored = [membership_scores(features, members_of) for members_of in clusters]
        cues, members = _cues(regions, descriptions, scored, model, options)
        if not cues:
            note = f"the {len(errors)} misclassified images' regions form no cluster"
    summary = CueSummary(
        schema_version=CUES_SCHEMA_VERSION,
        method=options.method,
        descriptor=descriptor,
        label_column=options.label_column,
        images=len(regions),
        errors=len(errors),
        min_cluster_size=min_size,
        alpha=options.alpha,
        seconds=round(time.monotonic() - started, 3),
        note=note,
        cues=tuple(cues),
    )
    write_cues(run_dir, summary, members)
    return summary


def write_cues(run_dir: Path, summary: CueSummary, members: list[CueMember]) -> None:
    """cues.json and cues.parquet, each written atomically."""
    text = json.dumps(dataclasses.asdict(summary), indent=1)
    write_atomically(run_dir / CUES_SUMMARY_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    write_atomically(run_dir / CUES_FILE, lambda p: pq.write_table(members_table(members), p))


def attribution_regions(
    records: pd.DataFrame, samples: Sequence[Sample], method: str | None
) -> list[ImageRegion]:
    """Each image's guided attribution region of ``method`` (one per image: the region probes
    of one method share it), in image-id order."""
    if method is None or records.empty:
        return []
    guided = records[
        (records["region_source"] == GUIDED)
        & (records["method"] == method)
        & records["region_x0"].notna()
    ].drop_duplicates("image_id")
    by_id = {s.id: s for s in samples}
    box_columns = ["region_x0", "region_y0", "region_x1", "region_y1"]
    out = []
    for row in guided.sort_values("image_id").itertuples(index=False):
        sample = by_id.get(str(row.image_id))
        if sample is not None:
            x0, y0, x1, y1 = (int(getattr(row, c)) for c in box_columns)
            out.append(ImageRegion(sample, (x0, y0, x1, y1), str(row.orig_pred)))
    return out


def make_embedder(model: LoadedModel) -> tuple[Embed, str]:
    """How crops are described, and that in words: the model's penultimate-layer embedding
    where its network has timm's ``forward_features`` and ``forward_head``, else colour and
    texture (:func:`colour_texture`)."""
    network = model.module
    features = getattr(network, "forward_features", None)
    head = getattr(network, "forward_head", None)
    if model.black_box or not callable(features) or not callable(head):
        return colour_texture, "colour and texture (the model offers no embedding)"

    def embed(crops: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            inputs = to_tensor(crops, model.meta, model.device)
            pooled = head(features(inputs), pre_logits=True)
        return np.asarray(pooled.flatten(1).double().cpu().numpy())

    name = model.meta.arch or type(network).__name__
    return embed, f"the model's penultimate-layer embedding ({name}) of each region's crop"


def colour_texture(crops: np.ndarray) -> np.ndarray:
    """A colour and texture descriptor per crop: mean and spread of CIE Lab, mean gradient
    strength, and the histogram of gradient orientations weighted by strength (a one-cell
    HOG, Dalal and Triggs 2005), on the crop at 32 × 32 pixels."""
    out = []
    for crop in crops:
        small = cv2.resize(crop, (_COLOUR_SIDE, _COLOUR_SIDE), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float64)
        dx, dy = cv2.Sobel(gray, cv2.CV_64F, 1, 0), cv2.Sobel(gray, cv2.CV_64F, 0, 1)
        strength = np.hypot(dx, dy)
        angles = np.mod(np.arctan2(dy, dx), np.pi)  # unsigned orientations, as HOG
        histogram, _ = np.histogram(angles, bins=_ORIENTATIONS, range=(0, np.pi), weights=strength)
        total = histogram.sum()
        out.append(
            np.concatenate(
                [
                    lab.mean(axis=0),
                    lab.std(axis=0),
                    [strength.mean()],
                    histogram / total if total > 0 else histogram,
                ]
            )
        )
    return np.asarray(out, dtype=np.float64).reshape(len(crops), -1)


def describe(
    regions: Sequence[ImageRegion], model: LoadedModel, embed: Embed, batch_size: int
) -> tuple[list[Description], np.ndarray]:
    """Every region's :class:`Description` and look (``embed`` of its crop), read in chunks."""
    descriptions: list[Description] = []
    looks: list[np.ndarray] = []
    for chunk in _chunks(regions, batch_size):
        crops = []
        for region, pixels, geometry, original in _read(chunk, model):
            descriptions.append(_where(region.box, geometry, pixels.shape[:2], original))
            crops.append(crop_resized(pixels, region.box, model.meta.input_size))
        looks.append(embed(np.stack(crops)))
    return descriptions, np.concatenate(looks) if looks else np.zeros((0, 0))


def cluster_features(
    descriptions: Sequence[Description], looks: np.ndarray, fit_rows: Sequence[int]
) -> np.ndarray:
    """The space regions are clustered in: position (cx, cy, w, h) beside the look's first
    principal components, each block centred and scaled on ``fit_rows`` (the misclassified
    images) to a mean squared length of 1, so where and what weigh the same."""
    rows = np.asarray(fit_rows)
    position = np.asarray([d.position for d in descriptions], dtype=np.float64)
    norms = np.linalg.norm(looks, axis=1, keepdims=True)
    unit = looks / np.where(norms > 0, norms, 1.0)
    components = min(APPEARANCE_DIMENSIONS, unit.shape[1], len(rows) - 1)
    look = PCA(n_components=components, random_state=0).fit(unit[rows]).transform(unit)
    return np.hstack([_scaled_block(position, rows), _scaled_block(look, rows)])


def membership_scores(features: np.ndarray, cluster: np.ndarray) -> dict[int, float]:
    """The rows of ``features`` that belong to the cluster of rows ``cluster``, with a score.

    A row belongs when it is no farther from the cluster's centroid than the farthest of the
    cluster's own rows; its score is exp(−d² / 2s²), with ``s`` the root mean square distance
    of the cluster's rows from the centroid: 1 at the centre, about 0.6 at a typical member.
    """
    centroid = features[cluster].mean(axis=0)
    distances = np.linalg.norm(features - centroid, axis=1)
    reach = float(distances[cluster].max())
    spread = max(float(np.sqrt(np.mean(distances[cluster] ** 2))), 1e-12)
    inside = np.flatnonzero(distances <= reach)
    return {int(i): float(np.exp(-0.5 * (distances[i] / spread) ** 2)) for i in inside}


def crop_resized(
    pixels: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]
) -> np.ndarray:
    """The box's pixels resized to ``size`` (height, width) with preprocessing's bilinear
    filter, so the model sees the crop as it sees a whole image."""
    x0, y0, x1, y1 = box
    crop = Image.fromarray(np.ascontiguousarray(pixels[y0:y1, x0:x1]))
    return np.asarray(crop.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _no_search_reason(method: str | None, errors: int) -> str | None:
    if method is None:
        return "the run has no attribution-guided probe, so no image has a region to cluster"
    if errors < MIN_ERRORS:
        return (
            f"only {errors} misclassified image(s) with an attribution region; at least "
            f"{MIN_ERRORS} are needed to look for a cue"
        )
    return None


def _chunks(items: Sequence[ImageRegion], size: int) -> Iterator[Sequence[ImageRegion]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read(
    chunk: Sequence[ImageRegion], model: LoadedModel
) -> Iterator[tuple[ImageRegion, np.ndarray, Geometry, tuple[int, int]]]:
    """Each region's image at the model's input size, its face geometry (face box and
    landmarks only: labels.csv's other boxes are dropped here) and the file's (width, height).

    Raises:
        ImageReadError: an image the run read can no longer be read (it changed since).
    """
    for region in chunk:
        sample = dataclasses.replace(region.sample, boxes={})
        image = read_image(sample.path, model.meta.input_size)
        yield region, image.pixels, image_geometry(sample, image), image.original_size


def _where(
    box: tuple[int, int, int, int],
    geometry: Geometry,
    shape: tuple[int, int],
    original: tuple[int, int],
) -> Description:
    """Where ``box`` (input pixels) is: in the face frame when the face can be placed, else as
    fractions of the image, with its named face region and its box in the file's pixels."""
    height, width = shape
    canonical = align_box(_floats(box), geometry)
    frame: Frame = "face" if canonical is not None else "image"
    if canonical is not None:
        side = float(CANONICAL_SIZE[0])
        x0, y0, x1, y1 = (v / side for v in canonical)
    else:
        x0, y0, x1, y1 = box[0] / width, box[1] / height, box[2] / width, box[3] / height
    fx0, fy0, fx1, fy1 = scale_box(_floats(box), (width, height), (original[1], original[0]))
    file_box = (math.floor(fx0), math.floor(fy0), math.ceil(fx1), math.ceil(fy1))
    return Description(
        frame=frame,
        position=((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0),
        region=_named_region(box, geometry, shape),
        area=(box[2] - box[0]) * (box[3] - box[1]) / (height * width),
        file_box=file_box,
    )


def _named_region(
    box: tuple[int, int, int, int], geometry: Geometry, shape: tuple[int, int]
) -> str | None:
    """The named face region holding most of the box's pixels; None without face geometry."""
    regions = named_regions(geometry, shape)
    inside = box_mask(_floats(box), shape)
    counts = {n: int((regions[n] & inside).sum()) for n in ANATOMICAL_REGIONS if n in regions}
    if not counts:
        return None
    return max(counts, key=lambda n: counts[n])


def _floats(box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (float(x0), float(y0), float(x1), float(y1))


def _scaled_block(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    centred = values - values[rows].mean(axis=0)
    scale = float(np.sqrt(np.mean(np.sum(centred[rows] ** 2, axis=1))))
    return centred / scale if scale > 0 else centred


def _cues(
    regions: Sequence[ImageRegion],
    descriptions: Sequence[Description],
    clusters: Sequence[dict[int, float]],
    model: LoadedModel,
    options: CueOptions,
) -> tuple[list[Cue], list[CueMember]]:
    """Each cluster as a :class:`Cue` and its member rows.

    Cues specific to the errors (:func:`specificity`) come first, the one whose removal
    corrects the most errors beyond its placebo's first (blacking out: the McNemar test's
    discordant pairs, one way minus the other), then the others by their misclassified
    members. Only specific cues take the reliance test, Holm-adjusted over all of them and
    both removals.
    """
    errors = np.asarray([r.misclassified for r in regions])
    occurrences = [_occurrence(regions, set(c), options.group_columns) for c in clusters]
    screened = [specificity(o) for o in occurrences]
    tested = [
        _reliance(regions, cluster, model, options) if screened[k][0] < options.alpha else []
        for k, cluster in enumerate(clusters)
    ]
    order = sorted(
        range(len(clusters)),
        key=lambda k: (
            screened[k][0] >= options.alpha,
            -(tested[k][0].guided_only - tested[k][0].placebo_only) if tested[k] else 0,
            -int(errors[list(clusters[k])].sum()),
        ),
    )
    tests = [tested[k] for k in order]
    _adjust(tests, options.alpha)
    cues, members = [], []
    for number, (k, reliance) in enumerate(zip(order, tests, strict=True), start=1):
        cluster = clusters[k]
        p_screen, where = screened[k]
        best = sorted(cluster, key=lambda i: (not errors[i], -cluster[i], i))[:MONTAGE_SIZE]
        cues.append(
            Cue(
                id=number,
                members=len(cluster),
                error_members=int(errors[list(cluster)].sum()),
                specific=p_screen < options.alpha,
                specificity_p=p_screen,
                specific_grouping=where.grouping,
                specific_group=where.group,
                position=_position([descriptions[i] for i in cluster]),
                occurrence=occurrences[k],
                reliance=tuple(reliance),
                montage=_montage([regions[i] for i in best], model),
            )
        )
        members += [
            CueMember(
                image_id=regions[i].sample.id,
                cue=number,
                x0=descriptions[i].file_box[0],
                y0=descriptions[i].file_box[1],
                x1=descriptions[i].file_box[2],
                y1=descriptions[i].file_box[3],
                membership=cluster[i],
                misclassified=bool(errors[i]),
            )
            for i in sorted(cluster, key=lambda i: regions[i].sample.id)
        ]
    return cues, members


def specificity(occurrence: Sequence[CueOccurrence]) -> tuple[float, CueOccurrence]:
    """Whether a cluster's regions are more frequent among the misclassified images than among
    the correct ones, in some subgroup (or overall): the smallest one-sided Fisher exact p over
    the subgroups, Bonferroni-adjusted for their number, and the subgroup it belongs to.

    A cluster that the correct predictions' regions fill as often as the errors' is where the
    model looks on every image, not a cue of its errors: removing the attributed region of a
    misclassified image corrects it more often than removing a random one for any faithful
    map, so the reliance test alone cannot tell the two apart. Subgroup by subgroup, because a
    cue usually misleads one subgroup (women wearing a tie) while the others' correct
    predictions rest on it (men wearing one). The p is a screen, not a finding: the clusters
    were formed from the errors, which makes it optimistic.
    """
    tested = [
        (
            float(
                fisher_exact(
                    [
                        [o.error_members, o.errors - o.error_members],
                        [o.correct_members, o.correct - o.correct_members],
                    ],
                    alternative="greater",
                ).pvalue
            ),
            o,
        )
        for o in occurrence
    ]
    p_value, where = min(tested, key=lambda t: t[0])
    return min(1.0, p_value * len(tested)), where


def _adjust(tests: list[list[CueReliance]], alpha: float) -> None:
    """Holm-adjust every reliance test of every cue as one family, in place."""
    places = [(c, t) for c, per_cue in enumerate(tests) for t in range(len(per_cue))]
    outcomes = holm([tests[c][t].p_value for c, t in places], alpha)
    for (c, t), outcome in zip(places, outcomes, strict=True):
        if outcome is not None:
            tests[c][t] = dataclasses.replace(
                tests[c][t], p_adjusted=outcome[0], significant=outcome[1]
            )


def _position(members: Sequence[Description]) -> CuePosition:
    """The members' median box in the face frame (in image fractions if any face could not be
    placed: the two frames do not mix) and their most common named region."""
    frame: Frame = "face" if all(d.frame == "face" for d in members) else "image"
    centre = np.median([d.position for d in members], axis=0)
    cx, cy, w, h = (float(v) for v in centre)
    named = [d.region for d in members if d.region is not None]
    region = max(sorted(set(named)), key=named.count) if named else None
    return CuePosition(
        frame=frame,
        box=(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
        region=region,
        region_share=named.count(region) / len(members) if region else 0.0,
        area=float(np.median([d.area for d in members])),
    )


def _occurrence(
    regions: Sequence[ImageRegion], members: set[int], group_columns: Sequence[str]
) -> tuple[CueOccurrence, ...]:
    """Per subgroup (and overall): misclassified and correct images, and how many of each
    have their region in the cue."""
    frame = pd.DataFrame(
        {
            "grouping_all": ALL,
            **{
                GROUP_PREFIX + c: [r.sample.groups.get(c, "") for r in regions]
                for c in group_columns
            },
            "error": [r.misclassified for r in regions],
            "member": [i in members for i in range(len(regions))],
        }
    )
    out = []
    for grouping, column in [(ALL, "grouping_all")] + [
        (c, GROUP_PREFIX + c) for c in group_columns
    ]:
        for group, rows in frame.groupby(column, sort=True):
            errors, correct = rows[rows["error"]], rows[~rows["error"]]
            out.append(
                CueOccurrence(
                    grouping=grouping,
                    group=str(group),
                    errors=len(errors),
                    error_members=int(errors["member"].sum()),
                    correct=len(correct),
                    correct_members=int(correct["member"].sum()),
                )
            )
    return tuple(out)


def _reliance(
    regions: Sequence[ImageRegion],
    cluster: dict[int, float],
    model: LoadedModel,
    options: CueOptions,
) -> list[CueReliance]:
    """Remove the cue region of each misclassified member, and a placebo of the same shape on
    the same image; count the corrections of each (see :class:`CueReliance`). Scored chunk by
    chunk, so memory stays one chunk's edits."""
    wrong = [regions[i] for i in sorted(cluster) if regions[i].misclassified]
    removals = [Blackout(), Blackout(fill="inpaint")]
    corrected: dict[str, list[np.ndarray]] = {r.name: [] for r in removals}
    placebo_corrected: dict[str, list[np.ndarray]] = {r.name: [] for r in removals}
    skipped = 0
    for chunk in _chunks(wrong, options.batch_size):
        pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # pixels, cue, placebo
        truth: list[int] = []
        for region, pixels, _, _ in _read(chunk, model):
            cue = box_mask(_floats(region.box), (pixels.shape[0], pixels.shape[1]))
            rng = np.random.default_rng(
                [options.seed, zlib.crc32(region.sample.id.encode()), zlib.crc32(b"cue")]
            )
            twin = placebo_region(Region(cue), rng)
            if not isinstance(twin, Region):
                skipped += 1
                continue
            pairs.append((pixels, cue, twin.mask))
            truth.append(model.meta.classes.index(region.sample.label))
        for removal in removals:
            for masks, out in ((1, corrected), (2, placebo_corrected)):
                edited = [removal(image=pair[0], region=pair[masks])["image"] for pair in pairs]
                out[removal.name].append(_corrected(model, edited, truth, options.batch_size))
    tests = []
    for removal in removals:
        guided = np.concatenate([np.zeros(0, dtype=bool), *corrected[removal.name]])
        placebo = np.concatenate([np.zeros(0, dtype=bool), *placebo_corrected[removal.name]])
        guided_only, placebo_only = int((guided & ~placebo).sum()), int((placebo & ~guided).sum())
        tests.append(
            CueReliance(
                edit=removal.name,
                description=REMOVALS[removal.name],
                pairs=len(guided),
                corrected=int(guided.sum()),
                placebo_corrected=int(placebo.sum()),
                guided_only=guided_only,
                placebo_only=placebo_only,
                skipped=skipped,
                test="mid-p McNemar" if options.mid_p else "exact McNemar",
                p_value=mcnemar_p(guided_only, placebo_only, mid_p=options.mid_p)
                if len(guided)
                else None,
                p_adjusted=None,
                significant=False,
            )
        )
    return tests


def _corrected(
    model: LoadedModel, images: list[np.ndarray], truth: list[int], batch_size: int
) -> np.ndarray:
    """Which edited images the model now classifies as their label (False where it gives no
    output: an edit that breaks the model corrects nothing)."""
    if not images:
        return np.zeros(0, dtype=bool)
    probs = predict(model, np.stack(images), batch_size)
    finite = np.isfinite(probs).all(axis=1)
    return finite & (np.nan_to_num(probs, nan=-1.0).argmax(axis=1) == np.asarray(truth))


def _montage(members: Sequence[ImageRegion], model: LoadedModel) -> tuple[str, ...]:
    """The members' crops with some context, each fitted into a TILE_SIDE square, as PNG."""
    tiles = []
    for region, pixels, _, _ in _read(members, model):
        x0, y0, x1, y1 = region.box
        margin_x, margin_y = _CONTEXT * (x1 - x0), _CONTEXT * (y1 - y0)
        height, width = pixels.shape[:2]
        crop = pixels[
            max(0, math.floor(y0 - margin_y)) : min(height, math.ceil(y1 + margin_y)),
            max(0, math.floor(x0 - margin_x)) : min(width, math.ceil(x1 + margin_x)),
        ]
        tiles.append(png_base64(_tile(crop)))
    return tuple(tiles)


def _tile(crop: np.ndarray) -> np.ndarray:
    """``crop`` scaled to fit a TILE_SIDE square and centred on mid-grey."""
    scale = TILE_SIDE / max(crop.shape[:2])
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    fitted = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
    tile = np.full((TILE_SIDE, TILE_SIDE, 3), 128, np.uint8)
    top, left = (TILE_SIDE - size[1]) // 2, (TILE_SIDE - size[0]) // 2
    tile[top : top + size[1], left : left + size[0]] = fitted
    return tile
