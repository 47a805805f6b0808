"""Two audits of one dataset compared: where does model B do worse than model A, and for whom?

Typical pairs: a baseline (A) and a release candidate (B), or a model trained on skewed data and
one trained on balanced data. Both runs scored the same images, so every comparison is paired,
image by image, and made only on the images (and edits) valid in both runs. Choices:

- Rates: per subgroup (all images, each group column, their intersection), the error rate and
  the flip rate of every probe arm present in both runs. Placebo rows are each run's control,
  not an arm to compare.
- Test: exact McNemar on the discordant images (the event in one run only). Under "no
  difference" the B-only count is Binomial(discordant, 1/2), whatever the concordant images do;
  with no discordant image there is nothing to test (``p_value`` None, difference exactly 0).
- Interval for B − A: Newcombe's square-and-add interval for paired proportions (Newcombe,
  Statistics in Medicine 17 (1998) 2635–2650, method 10; Fagerland, Lydersen & Laake,
  *Statistical Analysis of Contingency Tables* (2017), ch. 8): the Wilson intervals of both
  rates combined through their estimated correlation. It stays in [-1, 1] and keeps its coverage
  near 0 and 1, where the Wald interval does not.
- Subgroups with fewer than ``min_group_size`` paired images are "insufficient data": rates are
  reported, nothing is tested, and such a row is never significant.
- Multiplicity: Holm over every test of the comparison.
- Maps: per method present in both runs and per subgroup, the Jensen–Shannon divergence between
  the two runs' aligned mean maps (each run's mean over its own valid images of the subgroup).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from auditor import __version__, stats
from auditor.errors import AuditorError, ConfigError
from auditor.records import GROUP_PREFIX, PLACEBO
from auditor.run_summary import RunSummary, ToolInfo, decode
from auditor.stats import arm_labels, group_labels, groupings, paired_difference_ci
from auditor.store import ALL, MapKey, RunStore

COMPARISON_FILE = "comparison.json"
Metric = Literal["error_rate", "flip_rate"]
Side = Literal["A", "B"]


@dataclass(frozen=True)
class RunIdentity:
    """Which model and which dataset one side of the comparison audited."""

    run_dir: str
    model_path: str
    model_sha256: str | None  # None for a prediction function whose file was not found
    dataset_root: str
    labels_csv_sha256: str | None
    methods: tuple[str, ...]
    tool_version: str


@dataclass(frozen=True)
class ComparisonRow:
    """One rate in one subgroup, in A and in B, on the same ``n`` images.

    ``arm`` is the probe arm (``probe`` or ``probe@method``) of a flip rate, None for the error
    rate. ``a_only`` / ``b_only`` count the discordant images (the event in that run only).
    ``difference`` is B − A; ``ci`` its Newcombe interval at level 1 − α. ``worse`` says whose
    rate is higher (a higher error or flip rate is worse), None when they are equal;
    ``significant`` says whether that is established after Holm correction. ``insufficient``
    rows (fewer than the minimum group size) are never tested.
    """

    id: str
    metric: Metric
    grouping: str
    group: str
    arm: str | None
    n: int
    k_a: int
    k_b: int
    a_only: int
    b_only: int
    rate_a: float
    rate_b: float
    difference: float
    ci: tuple[float, float]
    worse: Side | None
    insufficient: bool
    test: str
    p_value: float | None
    p_adjusted: float | None = None
    significant: bool = False


@dataclass(frozen=True)
class MapDivergence:
    """How differently A and B look at one subgroup: Jensen–Shannon divergence (bits, 0 to 1)
    between their aligned mean maps; None when either mean averages too few images."""

    method: str
    grouping: str
    group: str
    n_a: int
    n_b: int
    js_divergence: float | None
    insufficient: bool


@dataclass(frozen=True)
class OneSided:
    """What one run has and the other lacks: images valid in it only, arms only it ran."""

    images: list[str]
    arms: list[str]


@dataclass(frozen=True)
class Comparison:
    """Everything ``audit compare`` found. ``rows`` is flat, so a policy can judge it row by row.

    ``images`` are the images valid in both runs; ``only_a`` / ``only_b`` name what one run has
    and the other lacks (images valid in one run only, arms run by one model only), so nothing
    is left out silently.
    """

    a: RunIdentity
    b: RunIdentity
    alpha: float
    min_group_size: int
    label_column: str
    group_columns: tuple[str, ...]
    groupings: tuple[str, ...]
    images: int
    only_a: OneSided
    only_b: OneSided
    probes: dict[str, str]  # probe name → what the edit does
    rows: list[ComparisonRow]
    maps: list[MapDivergence]

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": {"name": "auditor", "version": __version__},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **dataclasses.asdict(self),
        }


@dataclass(frozen=True)
class StoredComparison(Comparison):
    """comparison.json read back: the comparison, and which auditor wrote it when."""

    tool: ToolInfo
    created: str


def compare_runs(
    run_a: Path, run_b: Path, *, alpha: float = 0.05, min_group_size: int = 10
) -> Comparison:
    """Compare run B (e.g. a candidate) with run A (e.g. the baseline) on their shared images.

    Args:
        run_a: the ``--out`` directory of an ``audit run`` (the baseline side).
        run_b: the same for the other model, on the same dataset.
        alpha: significance level of the Holm-corrected tests and 1 − level of the intervals.
        min_group_size: subgroups with fewer paired images are reported, not tested.

    Raises:
        ConfigError: ``alpha`` or ``min_group_size`` out of range.
        AuditorError: a directory is not a finished run of this auditor version, or the runs
            did not audit the same dataset (labels.csv, label column, or the images' labels).
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1, got {alpha}")
    if min_group_size < 1:
        raise ConfigError("--min-group-size must be positive")
    summary_a, summary_b = RunStore.open(run_a).summary(), RunStore.open(run_b).summary()
    _check_same_dataset(summary_a, summary_b, run_a, run_b)
    columns = [c for c in summary_a.dataset.group_columns if c in summary_b.dataset.group_columns]
    valid_a, valid_b = _valid_records(run_a), _valid_records(run_b)
    images = _paired_images(valid_a, valid_b, columns)
    if images.empty:
        raise AuditorError(
            f"no image was audited in both {run_a} and {run_b}; compare two runs on the same images"
        )
    flips = _paired_flips(valid_a, valid_b, images)
    named = [(ALL, []), *groupings(columns)]
    rows = [
        *_rows(images, "error_rate", None, named, alpha, min_group_size),
        *(
            row
            for name, frame in flips.groupby("arm", sort=True)
            for row in _rows(frame, "flip_rate", str(name), named, alpha, min_group_size)
        ),
    ]
    arms_a, arms_b = set(arm_labels(valid_a)), set(arm_labels(valid_b))
    ids_a, ids_b = set(valid_a["image_id"]), set(valid_b["image_id"])
    return Comparison(
        a=_identity(run_a, summary_a),
        b=_identity(run_b, summary_b),
        alpha=alpha,
        min_group_size=min_group_size,
        label_column=summary_a.dataset.label_column,
        group_columns=tuple(columns),
        groupings=tuple(name for name, _ in named),
        images=len(images),
        only_a=OneSided(sorted(ids_a - ids_b), sorted(arms_a - arms_b)),
        only_b=OneSided(sorted(ids_b - ids_a), sorted(arms_b - arms_a)),
        probes={p.name: p.description for s in (summary_a, summary_b) for p in s.probes},
        rows=holm(rows, alpha),
        maps=_map_divergences(
            (run_a, summary_a), (run_b, summary_b), [ALL, *columns], min_group_size
        ),
    )


def write_comparison(comparison: Comparison, out_dir: Path) -> Path:
    """Write ``out_dir/comparison.json`` (creating the directory); return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / COMPARISON_FILE
    text = json.dumps(comparison.to_json(), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def read_comparison(out_dir: Path) -> StoredComparison:
    """``out_dir/comparison.json`` as typed objects, for the page and the console to render."""
    data = json.loads((out_dir / COMPARISON_FILE).read_text(encoding="utf-8"))
    return decode(StoredComparison, data)


def _check_same_dataset(a: RunSummary, b: RunSummary, run_a: Path, run_b: Path) -> None:
    """Refuse two runs that did not audit the same labelled images.

    The dataset's identity is its labels.csv (by SHA-256); an ImageFolder dataset without one
    is identified by its root directory. The labels of the shared images are checked as well,
    in :func:`_paired_images`.
    """
    data_a, data_b = a.dataset, b.dataset
    sha_a, sha_b = data_a.labels_csv_sha256, data_b.labels_csv_sha256
    if sha_a != sha_b:
        raise AuditorError(
            f"{run_a} and {run_b} audited different datasets (labels.csv SHA-256 "
            f"{_short(sha_a)} vs {_short(sha_b)}); audit both models on the same images to "
            "compare them"
        )
    if sha_a is None and data_a.root != data_b.root:
        raise AuditorError(
            f"{run_a} and {run_b} audited folders without labels.csv at different roots "
            f"({data_a.root} vs {data_b.root}); audit both models on the same images"
        )
    if data_a.label_column != data_b.label_column:
        raise AuditorError(
            f"{run_a} scored label column '{data_a.label_column}' and {run_b} "
            f"'{data_b.label_column}'; rerun one with the other's --label-column"
        )


def _short(sha: str | None) -> str:
    return "(none: no labels.csv)" if sha is None else sha[:12] + "…"


def _valid_records(run_dir: Path) -> pd.DataFrame:
    """Rows of images and edits that were scored (whole-image and per-edit skips dropped)."""
    records = RunStore.open(run_dir).records()
    return records[records["skip_reason"].isna() & records["probe"].notna()]


def _paired_images(
    valid_a: pd.DataFrame, valid_b: pd.DataFrame, columns: Sequence[str]
) -> pd.DataFrame:
    """One row per image valid in both runs: its label, groups and errors in A and in B.

    Raises:
        AuditorError: the runs give a shared image different labels or group values.
    """
    kept = ["label", *(GROUP_PREFIX + c for c in columns)]

    def per_image(valid: pd.DataFrame) -> pd.DataFrame:
        first = valid.drop_duplicates("image_id").set_index("image_id")
        return first[kept].assign(event=first["orig_pred"] != first["label"])

    joined = _inner(per_image(valid_a), per_image(valid_b))
    for column in kept:
        differs = joined[f"{column}_a"].fillna("") != joined[f"{column}_b"].fillna("")
        if differs.any():
            raise AuditorError(
                f"the runs disagree on '{column}' for {int(differs.sum())} shared image(s), e.g. "
                f"'{joined.index[differs][0]}': they did not audit the same labelled images"
            )
    return joined.rename(columns={f"{c}_a": c for c in kept})[[*kept, "event_a", "event_b"]]


def _paired_flips(
    valid_a: pd.DataFrame, valid_b: pd.DataFrame, images: pd.DataFrame
) -> pd.DataFrame:
    """One row per arm × image edited in both runs: whether the edit flipped A and B."""

    def flips(valid: pd.DataFrame) -> pd.DataFrame:
        guided = valid[valid["region_source"] != PLACEBO]
        return pd.DataFrame(
            {"arm": arm_labels(guided), "image_id": guided["image_id"], "event": guided["flipped"]}
        ).set_index(["arm", "image_id"])

    joined = _inner(flips(valid_a), flips(valid_b))
    groups = images.drop(columns=["event_a", "event_b"])
    joined = joined.reset_index().join(groups, on="image_id", how="inner")
    return joined.astype({"event_a": bool, "event_b": bool})


def _inner(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows whose index both frames have, columns suffixed ``_a`` and ``_b``."""
    return pd.merge(a, b, left_index=True, right_index=True, how="inner", suffixes=("_a", "_b"))


def _rows(
    frame: pd.DataFrame,
    metric: Metric,
    arm_name: str | None,
    named: Sequence[tuple[str, list[str]]],
    alpha: float,
    min_group_size: int,
) -> Iterator[ComparisonRow]:
    """One row per subgroup of every grouping, from boolean columns ``event_a``/``event_b``."""
    for grouping, columns in named:
        labels = pd.Series(ALL, index=frame.index) if not columns else group_labels(frame, columns)
        for group, members in frame.groupby(labels, sort=True):
            key = "/".join(p for p in (metric, arm_name, grouping, str(group)) if p is not None)
            yield paired_row(
                members["event_a"].to_numpy(dtype=bool),
                members["event_b"].to_numpy(dtype=bool),
                id=key,
                metric=metric,
                grouping=grouping,
                group=str(group),
                arm=arm_name,
                alpha=alpha,
                min_group_size=min_group_size,
            )


def paired_row(
    event_a: np.ndarray,
    event_b: np.ndarray,
    *,
    alpha: float,
    min_group_size: int,
    **header: Any,
) -> ComparisonRow:
    """Rates, B − A with its interval, and the exact McNemar test, for one set of image pairs.

    ``event_a[i]`` and ``event_b[i]`` are the same image's outcome in A and in B. The p-value is
    left for :func:`holm` to adjust.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    n = len(event_a)
    both = int((event_a & event_b).sum())
    a_only = int((event_a & ~event_b).sum())
    b_only = int((~event_a & event_b).sum())
    neither = n - both - a_only - b_only
    difference = (b_only - a_only) / n
    insufficient = n < min_group_size
    p_value = None
    if not insufficient and a_only + b_only > 0:
        table = [[both, b_only], [a_only, neither]]
        p_value = float(mcnemar(table, exact=True).pvalue)
    return ComparisonRow(
        **header,
        n=n,
        k_a=both + a_only,
        k_b=both + b_only,
        a_only=a_only,
        b_only=b_only,
        rate_a=(both + a_only) / n,
        rate_b=(both + b_only) / n,
        difference=difference,
        ci=paired_difference_ci(both, b_only, a_only, neither, alpha),
        worse="B" if difference > 0 else "A" if difference < 0 else None,
        insufficient=insufficient,
        test=(
            "insufficient data"
            if insufficient
            else "exact McNemar"
            if p_value is not None
            else "not testable (no discordant image)"
        ),
        p_value=p_value,
    )


def holm(rows: Sequence[ComparisonRow], alpha: float) -> list[ComparisonRow]:
    """The rows with Holm-adjusted p-values over every test among them, and significance."""
    outcomes = stats.holm([row.p_value for row in rows], alpha)
    return [
        row
        if outcome is None
        else dataclasses.replace(row, p_adjusted=outcome[0], significant=outcome[1])
        for row, outcome in zip(rows, outcomes, strict=True)
    ]


def _identity(run_dir: Path, summary: RunSummary) -> RunIdentity:
    return RunIdentity(
        run_dir=str(run_dir),
        model_path=summary.model.path,
        model_sha256=summary.model.sha256,
        dataset_root=summary.dataset.root,
        labels_csv_sha256=summary.dataset.labels_csv_sha256,
        methods=tuple(summary.method_names),
        tool_version=summary.tool.version,
    )


def _map_divergences(
    side_a: tuple[Path, RunSummary],
    side_b: tuple[Path, RunSummary],
    groupings_of_maps: Sequence[str],
    min_group_size: int,
) -> list[MapDivergence]:
    """JS divergence between A's and B's mean maps over all predictions, per method (present in
    both runs) and subgroup; mean maps are kept per group column, not per intersection."""
    from auditor.localisation import js_divergence  # scipy and OpenCV: only when maps compare

    maps_a = RunStore.open(side_a[0]).mean_maps()
    maps_b = RunStore.open(side_b[0]).mean_maps()
    counts_a, counts_b = _map_counts(side_a[1]), _map_counts(side_b[1])
    out = []
    for key in sorted(maps_a.keys() & maps_b.keys()):
        method, grouping, group, outcome = key
        if outcome != ALL or grouping not in groupings_of_maps:
            continue
        n_a, n_b = counts_a[key], counts_b[key]
        insufficient = min(n_a, n_b) < min_group_size
        out.append(
            MapDivergence(
                method=method,
                grouping=grouping,
                group=group,
                n_a=n_a,
                n_b=n_b,
                js_divergence=None if insufficient else js_divergence(maps_a[key], maps_b[key]),
                insufficient=insufficient,
            )
        )
    return out


def _map_counts(summary: RunSummary) -> dict[MapKey, int]:
    return {entry.key: entry.count for entry in summary.attribution.mean_maps}
