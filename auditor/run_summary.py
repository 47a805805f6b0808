"""summary.json read back as typed, frozen objects: what the report, the gate and compare use.

The writer (:mod:`auditor.summary`) serialises the engine's dataclasses (``auditor.stats``'
among them); the readers get these mirrors instead of raw dicts, so a misspelt key is a type
error that mypy finds, not a KeyError halfway through a report, and a file of another shape is
refused once, when it is read, naming the key that does not fit.

One converter, :func:`decode`, builds every class from its field types: JSON objects become
dataclasses or mappings, arrays become tuples (lists where a field says ``list``), nulls stay
None where a field allows it. A key that a class models must be there unless its field has a
default (keys the schema does not require); keys that no reader models are ignored.

Only the standard library is imported: readers start without torch, scipy or pandas.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar, get_args, get_origin

T = TypeVar("T")
SCHEMA_VERSION = 3  # of summary.json: the writer stamps it, the reader refuses any other
MapKey = tuple[str, str, str, str]  # a mean map's (method, grouping, group, outcome)
# A bootstrap interval; an end is null where the bootstrap could not place it (NaN on writing).
Bounds = tuple[float | None, float | None]
TestName = Literal[
    "chi-square",
    "fisher-exact",
    "fisher-exact (enumeration)",
    "fisher-exact (monte carlo)",
    "not testable",
]


class JsonShapeError(ValueError):
    """Parsed JSON that does not have the shape of the class it is read as; says where."""


def decode(kind: type[T], data: Any) -> T:
    """``data`` (parsed JSON) as an instance of the dataclass ``kind``, built field by field.

    Raises:
        JsonShapeError: a key ``kind`` needs is missing or holds a value of another type.
    """
    result: T = _decode(kind, data, "")
    return result


# --- statistics (auditor.stats' dataclasses, as dataclasses.asdict wrote them) --------------


@dataclass(frozen=True)
class Rate:
    """``k`` events in ``n`` trials, with a Wilson interval; all None when ``n`` is 0."""

    n: int
    k: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class GroupRate:
    group: str
    rate: Rate
    tested: bool  # False when smaller than the minimum group size


@dataclass(frozen=True)
class GapTest:
    """Whether a rate (error or flip) differs across the subgroups of one grouping."""

    id: str
    kind: Literal["error_rate", "flip_rate"]
    grouping: str
    probe: str | None
    region_source: str | None
    method: str | None
    groups: tuple[GroupRate, ...]
    test: TestName
    statistic: float | None
    p_value: float | None
    effect: float | None  # highest minus lowest tested rate
    effect_ci: tuple[float, float] | None
    highest: str | None
    lowest: str | None
    p_adjusted: float | None
    significant: bool
    monte_carlo_se: float | None  # of p_value; None for exact tests
    min_detectable_gap: float | None  # at power 0.8 between the two smallest tested groups
    equivalence_bound: float | None  # largest |pair difference| at the TOST level


@dataclass(frozen=True)
class PairedTest:
    """An attribution-guided edit vs the same edit on a random region, on the same images."""

    id: str
    probe: str
    region_source: str
    method: str | None
    n_pairs: int
    guided: Rate
    placebo: Rate
    both: int
    guided_only: int
    placebo_only: int
    neither: int
    test: Literal["exact McNemar", "mid-p McNemar", "not testable"]
    p_value: float | None
    effect: float | None  # guided minus placebo flip rate
    p_adjusted: float | None
    significant: bool
    # The pairs by their placebo's kind (records.CONTROL_KINDS); absent from older runs.
    control_kinds: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ExcessGroup:
    """One subgroup's guided and placebo arms on its images that received both edits."""

    group: str
    n_pairs: int
    tested: bool
    guided_rate: float | None
    placebo_rate: float | None
    excess: float | None  # guided minus placebo flip rate
    excess_ci: tuple[float, float] | None  # Newcombe's paired interval
    adjusted_excess: float | None  # at the run's confidence strata
    guided_drop: float | None  # mean drop of the originally predicted class's probability
    placebo_drop: float | None
    excess_drop: float | None
    excess_drop_ci: tuple[float, float] | None
    mean_confidence: float | None


@dataclass(frozen=True)
class ExcessTest:
    """Whether a probe arm's excess flip rate (guided minus placebo) differs across subgroups."""

    id: str
    probe: str
    method: str | None
    region_source: str
    grouping: str
    groups: tuple[ExcessGroup, ...]
    test: Literal["paired-difference linear model (HC3)", "not testable"]
    statistic: float | None
    df: int | None
    p_value: float | None
    effect: float | None  # highest minus lowest excess
    effect_ci: tuple[float, float] | None  # simultaneous over every pair of groups
    highest: str | None
    lowest: str | None
    adjusted_effect: float | None  # the same two groups at equal confidence
    adjusted_effect_ci: tuple[float, float] | None
    adjusted_p_value: float | None  # shown, not in the run's Holm family
    adjusted_p_adjusted: float | None  # Holm over the run's equal-confidence tests
    min_detectable_gap: float | None  # at power 0.8 between the two smallest tested groups
    reason: str | None
    p_adjusted: float | None
    significant: bool


@dataclass(frozen=True)
class AdjustedGap:
    """An error-rate gap's highest and lowest subgroups compared at equal covariates
    (``--adjust-for``): the odds ratio with its Wald interval at 1 − α, and the
    likelihood-ratio test of the subgroup terms, shown beside the raw gap (not in Holm)."""

    id: str  # adjusted_error/<grouping>
    grouping: str
    covariates: tuple[str, ...]
    highest: str | None
    lowest: str | None
    odds_ratio: float | None  # of highest against lowest
    odds_ratio_ci: tuple[float, float] | None
    statistic: float | None  # likelihood-ratio chi-square
    df: int | None
    p_value: float | None
    n_used: int  # images in the model
    n_left_out: int  # images of the tested subgroups with a missing covariate
    reason: str | None  # "not estimable: …" where the model gave no numbers


@dataclass(frozen=True)
class EditHarmTest:
    """Whether a painted arm's excess gap between its highest and lowest subgroups exceeds its
    erased twin's on the same images (``auditor.edit_harm``); Holm over the run's edit-harm
    tests, apart from the run's family."""

    id: str  # edit_harm/<painted arm>/<grouping>
    painted: str  # the painted arm's excess test id
    erased: str  # its erasing twin's
    grouping: str
    highest: str | None
    lowest: str | None
    n_images: int
    effect: float | None  # painted minus erased excess gap
    effect_ci: tuple[float, float] | None  # simultaneous over every pair of subgroups
    p_value: float | None
    reason: str | None
    p_adjusted: float | None
    significant: bool


@dataclass(frozen=True)
class Statistics:
    """Every rate and test of the run, Holm-adjusted together.

    ``flip_overall`` is keyed by ``<arm>/<region source>``, ``placebo_by_group`` by
    ``<arm>/<grouping>`` (an arm is ``probe`` or ``probe@method``).
    """

    alpha: float
    min_group_size: int
    groupings: tuple[str, ...]
    overall_error: Rate
    error_gaps: tuple[GapTest, ...]
    flip_gaps: tuple[GapTest, ...]
    paired: tuple[PairedTest, ...]
    flip_overall: Mapping[str, Rate]
    placebo_by_group: Mapping[str, tuple[GroupRate, ...]]
    excess: tuple[ExcessTest, ...]
    adjusted: tuple[AdjustedGap, ...] = ()  # absent from runs older than --adjust-for
    edit_harm: tuple[EditHarmTest, ...] = ()  # absent from runs older than edit-harm tests


# --- attribution maps ------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodInfo:
    name: str
    target_layer: str | None  # None for methods on the input pixels


@dataclass(frozen=True)
class Faithfulness:
    """One metric of one method's maps against a random map on the same images."""

    method: str
    metric: str
    better: Literal["lower", "higher"]
    n_images: int
    method_mean: float | None
    method_ci: Bounds | None  # None with fewer than two images
    random_mean: float | None
    random_ci: Bounds | None
    difference: float | None
    difference_ci: Bounds | None
    beats_random: bool


@dataclass(frozen=True)
class Localisation:
    """A method's mean mass share or AMR in one named region, over one subgroup."""

    method: str
    grouping: str
    group: str
    measure: Literal["mass_share", "amr"]
    region: str
    mean: float | None
    n: int


@dataclass(frozen=True)
class MeanMapEntry:
    """Which mean map ``mean_maps.npz`` holds at this entry's index, and how many images it
    averages."""

    method: str
    grouping: str
    group: str
    outcome: Literal["all", "error"]
    count: int

    @property
    def key(self) -> MapKey:
        return (self.method, self.grouping, self.group, self.outcome)


@dataclass(frozen=True)
class MapSide:
    """One of the two mean maps that a divergence compares."""

    method: str
    grouping: str
    group: str


@dataclass(frozen=True)
class Divergence:
    """Jensen–Shannon divergence (bits, 0 to 1) between two subgroups' or two methods' maps."""

    kind: Literal["groups", "methods"]
    a: MapSide
    b: MapSide
    js_divergence: float


@dataclass(frozen=True)
class AttributionInfo:
    """What the maps were of, which methods made them, and what was measured on them.

    ``options`` are the methods' cost/fidelity settings as given (``ig_steps``, ``samples``…).
    """

    target: str
    methods: tuple[MethodInfo, ...]
    options: Mapping[str, Any]
    default_note: str | None
    faithfulness: tuple[Faithfulness, ...]
    localisation: tuple[Localisation, ...]
    mean_maps: tuple[MeanMapEntry, ...]
    divergence: tuple[Divergence, ...]


# --- what was judged, and how ----------------------------------------------------------------


@dataclass(frozen=True)
class ToolInfo:
    name: str
    version: str


@dataclass(frozen=True)
class RunConfig:
    """The run's settings that the schema requires (the config holds more, as given)."""

    model_path: str | None  # None for a prediction function (--predict)
    dataset_dir: str
    out_dir: str
    label_column: str
    target: str
    probes: tuple[str, ...]
    region_area: float
    batch_size: int
    seed: int
    alpha: float
    min_group_size: int
    label_source: str | None = None  # who assigned the labels, where the auditor said
    mcnemar: Literal["exact", "mid-p"] = "exact"  # absent from runs older than --mcnemar
    adjust_for: tuple[str, ...] = ()  # absent from runs older than --adjust-for


@dataclass(frozen=True)
class ModelInfo:
    """Which model was judged (its file, or its prediction function, and their SHA-256), how it
    was loaded, and its metadata."""

    path: str
    sha256: str | None
    kind: Literal["state_dict", "pickle", "export", "torchscript", "onnx", "function"]
    single_logit: bool
    classes: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    arch: str | None = None
    target_layer: str | None = None
    attributes: tuple[str, ...] | None = None
    target_index: int | None = None
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    arch_sha256: str | None = None


@dataclass(frozen=True)
class SkipCount:
    """How many rows (``probe`` "(whole image)") or edits were skipped for one reason kind."""

    probe: str
    arm: Literal["image", "edit", "placebo"]  # what was skipped: a placebo only, the edit ran
    reason: str
    count: int


@dataclass(frozen=True)
class Skip:
    image_id: str
    probe: str | None  # None when the whole image was skipped
    reason: str


@dataclass(frozen=True)
class DatasetInfo:
    """Which data was judged, and how many of its rows were audited or skipped."""

    root: str
    labels_csv_sha256: str | None  # None for an ImageFolder layout
    label_column: str
    group_columns: tuple[str, ...]
    rows: int
    images_audited: int
    images_skipped: int
    skips_by_reason: tuple[SkipCount, ...]
    skipped: tuple[Skip, ...]  # the first skips one by one; skips_by_reason counts them all
    # What the dataset's labels.schema.json says of its label and group columns, by column;
    # absent from runs older than it.
    column_descriptions: Mapping[str, ColumnDescription] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnDescription:
    """What a label or group column stands for (``auditor.data.ColumnDescription``)."""

    description: str
    values: Mapping[str, str]  # what each value stands for, by value


@dataclass(frozen=True)
class ProbeInfo:
    """A probe as run: ``name`` is its canonical spec (``blackout(fill=inpaint)``), the name
    its results carry; ``params`` holds every argument, defaults included."""

    name: str
    description: str
    region_from: Literal["attribution", "face", "whole_image"]
    params: Mapping[str, str | int | float] = field(default_factory=dict)  # absent before params
    cover: Literal["paint", "erase"] | None = None  # probes.base.Cover; absent before covers


@dataclass(frozen=True)
class FlipDirections:
    """Which way one probe arm's edits from one region source changed one subgroup's
    predictions: ``corrections`` (wrong → right) and ``breaks`` (right → wrong) among its
    ``flips``; the other flips changed one wrong class for another.

    ``paired``: counted over the images that received both the guided edit and its placebo, as
    the guided-vs-placebo and excess tests are; else over every image of the arm, as its
    flip-rate gaps are. ``grouping`` and ``group`` are "all" for every image.
    """

    probe: str
    method: str | None
    region_source: str
    paired: bool
    grouping: str
    group: str
    n: int
    flips: int
    corrections: int
    breaks: int


DirectionsKey = tuple[str, str | None, str, bool, str, str]  # probe … group, as above


@dataclass(frozen=True)
class RunSummary:
    """summary.json: a run's statistics with what is needed to reproduce and trust them."""

    schema_version: int
    tool: ToolInfo
    created: str
    seconds: float
    config: RunConfig
    model: ModelInfo
    attribution: AttributionInfo
    dataset: DatasetInfo
    probes: tuple[ProbeInfo, ...]
    versions: Mapping[str, str]  # package → version
    statistics: Statistics
    flip_directions: tuple[FlipDirections, ...] = ()  # absent from runs before it was stored

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The typed summary of parsed summary.json ``data``.

        Raises:
            JsonShapeError: ``data`` is of another schema version, lacks a key that a reader
                needs, or holds another type there.
        """
        check_schema_version(data, SCHEMA_VERSION, "summary")
        return decode(cls, data)

    @property
    def method_names(self) -> list[str]:
        """The attribution methods in run order."""
        return [m.name for m in self.attribution.methods]

    def directions(
        self,
        probe: str,
        method: str | None,
        region_source: str,
        grouping: str,
        group: str,
        *,
        paired: bool,
    ) -> FlipDirections | None:
        """The flip directions of one arm, region source and subgroup; None where the run
        stored none (it predates them, or no image of the subgroup took the edit)."""
        return self._directions.get((probe, method, region_source, paired, grouping, group))

    @functools.cached_property
    def _directions(self) -> dict[DirectionsKey, FlipDirections]:
        return {
            (d.probe, d.method, d.region_source, d.paired, d.grouping, d.group): d
            for d in self.flip_directions
        }


# --- gallery.json ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredGalleryItem:
    """One of the most-affected images of a probe arm and subgroup, as gallery.json holds it
    (``auditor.gallery.GalleryItem`` with its thumbnails encoded as base64 PNG)."""

    probe: str  # the arm: the probe, or probe@method where an attribution map placed the region
    region_source: str
    image_id: str
    label: str
    groups: Mapping[str, str]
    orig_pred: str
    probed_pred: str
    orig_p_pred: float
    probed_p_orig_pred: float
    direction: str  # "" where the edit left the prediction's correctness as it was
    original_png: str
    heatmap_png: str  # without the region's outline, which the report draws after any blur
    probed_png: str
    # The edit region as a PNG mask of the thumbnails' size; null for whole-image probes. Runs
    # written before it was stored lack it: their heatmaps have the outline drawn in.
    region_png: str | None = None


# --- gate.json --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPolicy:
    """Of the policy a run was judged against (``auditor.policy.Policy``): where it came from
    and what its gates needed."""

    source: str  # its file, or "command line"
    require: Literal["significance", "estimate", "equivalence"]


@dataclass(frozen=True)
class StoredGateResult:
    """One gate judged for one subgroup (``auditor.policy.GateResult``)."""

    gate: str  # e.g. "error_rate_gap" or "flip_rate[blackout@gradcam]"
    grouping: str
    group: str
    outcome: Literal["pass", "fail", "insufficient data"]
    value: float | None
    maximum: float
    message: str


@dataclass(frozen=True)
class StoredVerdict:
    """gate.json: a run judged against a policy, as ``audit run --policy`` or ``audit gate``
    stored it (``auditor.policy.Verdict.to_json``)."""

    holds: bool
    policy: StoredPolicy
    results: tuple[StoredGateResult, ...]

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """The typed verdict of parsed gate.json ``data``.

        Raises:
            JsonShapeError: ``data`` lacks a key that a reader needs, or holds another type.
        """
        return decode(cls, data)

    @property
    def failed(self) -> list[StoredGateResult]:
        return [r for r in self.results if r.outcome == "fail"]

    @property
    def insufficient(self) -> list[StoredGateResult]:
        return [r for r in self.results if r.outcome == "insufficient data"]

    @property
    def nothing_judged(self) -> bool:
        """No gate passed or failed: every one lacked the data (or there was none to judge)."""
        return len(self.insufficient) == len(self.results)


def check_schema_version(data: Any, version: int, document: str) -> None:
    """Refuse parsed JSON stamped with another ``schema_version`` than the one this reads.

    Checked before decoding, so a file of another version is named as such, not by the first
    key its shape lacks.
    """
    stored = data.get("schema_version") if isinstance(data, dict) else None
    if stored != version:
        raise JsonShapeError(
            f"it was written with {document} schema {json.dumps(stored)}, this auditor reads "
            f"{document} schema {version}"
        )


# --- the converter ---------------------------------------------------------------------------


def _decode(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the type ``hint`` (a field's type); ``where`` names it in errors."""
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, _expect(value, dict, "an object", where), where)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return _first_reading([a for a in args if a is not type(None)], value, where)
    if origin is Literal:
        if value not in args:
            raise _mismatch(" or ".join(map(json.dumps, args)), value, where)
        return value
    if origin is tuple:
        items = _expect(value, list, "an array", where)
        kinds = [args[0]] * len(items) if args[1:] == (...,) else list(args)
        if len(kinds) != len(items):
            raise _mismatch(f"an array of {len(kinds)}", value, where)
        return tuple(
            _decode(k, v, f"{where}[{i}]")
            for i, (k, v) in enumerate(zip(kinds, items, strict=True))
        )
    if origin is list:
        items = _expect(value, list, "an array", where)
        return [_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin in (dict, Mapping):
        pairs = _expect(value, dict, "an object", where)
        return {k: _decode(args[1], v, _key(where, k)) for k, v in pairs.items()}
    if hint is Any:
        return value
    if hint is float:  # JSON writes 1.0 as 1 where Python held an int; keep the value as stored
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _mismatch("a number", value, where)
        return value
    if hint in _SCALARS:
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise _mismatch(_SCALARS[hint], value, where)
        return value
    raise TypeError(
        f"{where}: {hint!r} has no JSON reading"
    )  # a reader class's bug, not the file's


_SCALARS: dict[type, str] = {str: "a string", int: "a whole number", bool: "true or false"}


def _first_reading(hints: list[Any], value: Any, where: str) -> Any:
    """``value`` as the first of a union's ``hints`` that reads it (``str | int | float``)."""
    for hint in hints[:-1]:
        try:
            return _decode(hint, value, where)
        except JsonShapeError:
            continue
    return _decode(hints[-1], value, where)


def _dataclass(kind: Any, data: dict[str, Any], where: str) -> Any:
    values = {}
    for spec in dataclasses.fields(kind):
        name = _key(where, spec.name)
        if spec.name in data:
            values[spec.name] = _decode(_hints(kind)[spec.name], data[spec.name], name)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise JsonShapeError(f"{name} is missing")
    return kind(**values)


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    """A dataclass's field types, evaluated once (the annotations are strings here)."""
    return typing.get_type_hints(kind)


def _expect(value: Any, kind: type[T], what: str, where: str) -> T:
    if not isinstance(value, kind):
        raise _mismatch(what, value, where)
    return value


def _mismatch(what: str, value: Any, where: str) -> JsonShapeError:
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return JsonShapeError(f"{where or 'the document'} should be {what}, not {shown}")


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
