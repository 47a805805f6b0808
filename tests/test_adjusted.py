"""Error-rate gaps adjusted for other labels.csv columns (``--adjust-for``, auditor.adjusted).

The worlds are made here, so what the adjustment must find is known: in a confounded world the
error depends on age alone and one gender is older, so the raw gap is real but the subgroup
itself does not matter; in another the subgroup matters as well. The fits are checked against
statsmodels' formula interface, which builds its own design from the raw values.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy.stats import chi2, norm

from auditor.adjusted import AdjustedGap, is_numeric
from auditor.data import load_dataset
from auditor.records import COVARIATE_PREFIX, GROUP_PREFIX
from auditor.stats import Statistics, compute_statistics
from auditor.store import RunStore
from auditor.summary import SCHEMA_PATH
from tests.conftest import audit, load_summary

ALPHA = 0.05


def _records(
    errors: np.ndarray, groups: dict[str, np.ndarray], covariates: dict[str, list[str | None]]
) -> pd.DataFrame:
    """A records table of one whole-image probe: one row per image, its error as its
    prediction, its group and covariate cells as the run store writes them."""
    n = len(errors)
    return pd.DataFrame(
        {
            "image_id": [f"img/{i:05d}.png" for i in range(n)],
            "label": "a",
            "orig_pred": np.where(errors, "b", "a"),
            "skip_reason": None,
            "probe": "flip",
            "method": None,
            "region_source": "whole_image",
            "flipped": False,
            "orig_p_pred": 0.9,
            "probed_p_orig_pred": 0.8,
            **{GROUP_PREFIX + name: values for name, values in groups.items()},
            **{COVARIATE_PREFIX + name: values for name, values in covariates.items()},
        }
    )


def _logistic(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    return rng.random(len(logit)) < 1 / (1 + np.exp(-logit))


def _ages(values: np.ndarray) -> list[str | None]:
    return [f"{a:.2f}" for a in values]


def _confounded(seed: int = 0, n: int = 1200, gender_effect: float = 0.0) -> pd.DataFrame:
    """Women's images are twenty years older; the error rises with age (and, with
    ``gender_effect``, is that much higher in log-odds for women at any age)."""
    rng = np.random.default_rng(seed)
    gender = rng.choice(["female", "male"], n)
    age = np.where(gender == "female", rng.normal(50, 10, n), rng.normal(30, 10, n))
    logit = -2 + 0.08 * (age - 40) + gender_effect * (gender == "female")
    return _records(_logistic(rng, logit), {"gender": gender}, {"age": _ages(age)})


def _statistics(records: pd.DataFrame, min_group_size: int = 10) -> Statistics:
    return compute_statistics(records, alpha=ALPHA, min_group_size=min_group_size, seed=0)


def _only(statistics: Statistics, grouping: str) -> AdjustedGap:
    (found,) = [a for a in statistics.adjusted if a.grouping == grouping]
    return found


def _independent_fit(
    records: pd.DataFrame, group: str, lowest: str, highest: str, covariates: str
) -> tuple[float, tuple[float, float], float]:
    """(odds ratio, Wald interval, likelihood-ratio statistic) from statsmodels' formula API
    on the raw cells: ``error ~ C(group, reference lowest) + covariates``."""
    frame = records.rename(
        columns=lambda c: c.removeprefix(GROUP_PREFIX).removeprefix(COVARIATE_PREFIX)
    )
    frame = frame.assign(error=(frame["orig_pred"] != frame["label"]).astype(float))
    if "age" in frame:
        frame = frame.assign(age=pd.to_numeric(frame["age"]))
    frame = frame.dropna(subset=[c for c in ("age", "quality") if c in frame])
    term = f'C({group}, Treatment(reference="{lowest}"))'
    full = smf.logit(f"error ~ {term} + {covariates}", frame).fit(disp=False)
    reduced = smf.logit(f"error ~ {covariates}", frame).fit(disp=False)
    beta, se = full.params[f"{term}[T.{highest}]"], full.bse[f"{term}[T.{highest}]"]
    z = norm.ppf(1 - ALPHA / 2)
    ci = (math.exp(beta - z * se), math.exp(beta + z * se))
    return math.exp(beta), ci, 2 * (full.llf - reduced.llf)


def test_a_gap_that_age_explains_vanishes_once_age_is_held_equal() -> None:
    statistics = _statistics(_confounded())
    (raw,) = statistics.error_gaps
    adjusted = _only(statistics, "gender")
    assert raw.p_value is not None and raw.p_value < ALPHA  # the raw gap is real
    assert (adjusted.highest, adjusted.lowest) == (raw.highest, raw.lowest) == ("female", "male")
    assert adjusted.reason is None
    assert adjusted.odds_ratio_ci is not None and adjusted.p_value is not None
    low, high = adjusted.odds_ratio_ci
    assert low < 1 < high
    assert adjusted.p_value > ALPHA
    assert (adjusted.n_used, adjusted.n_left_out, adjusted.df) == (1200, 0, 1)
    assert adjusted.covariates == ("age",) and adjusted.id == "adjusted_error/gender"


def test_a_gap_of_the_subgroup_itself_survives_the_adjustment() -> None:
    adjusted = _only(_statistics(_confounded(gender_effect=1.0)), "gender")
    assert adjusted.odds_ratio_ci is not None and adjusted.p_value is not None
    assert adjusted.odds_ratio_ci[0] > 1
    assert adjusted.p_value < ALPHA


@pytest.mark.parametrize("effect", [0.0, 1.0])
def test_the_odds_ratio_interval_and_test_match_an_independent_fit(effect: float) -> None:
    records = _confounded(seed=3, gender_effect=effect)
    adjusted = _only(_statistics(records), "gender")
    odds, ci, statistic = _independent_fit(records, "gender", "male", "female", "age")
    assert adjusted.odds_ratio == pytest.approx(odds, rel=1e-8)
    assert adjusted.odds_ratio_ci == pytest.approx(ci, rel=1e-8)
    assert adjusted.statistic == pytest.approx(statistic, rel=1e-8, abs=1e-8)
    assert adjusted.p_value == pytest.approx(chi2.sf(statistic, 1), rel=1e-6, abs=1e-12)


def _quality_world(seed: int = 1, n: int = 1500) -> pd.DataFrame:
    """Errors depend only on image quality (a categorical column); race C's images are worse."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["A", "B", "C"], n)
    worse = [0.5, 0.3, 0.2]
    quality = np.array(
        [rng.choice(["low", "medium", "high"], p=worse if r == "C" else worse[::-1]) for r in race]
    )
    logit = np.select([quality == "low", quality == "medium"], [-0.5, -1.5], -2.5)
    return _records(_logistic(rng, logit), {"race": race}, {"quality": list(quality)})


def test_a_categorical_covariate_enters_as_indicators() -> None:
    records = _quality_world()
    statistics = _statistics(records)
    (raw,) = statistics.error_gaps
    adjusted = _only(statistics, "race")
    assert raw.p_value is not None and raw.p_value < ALPHA
    assert raw.highest == "C"
    assert adjusted.reason is None and adjusted.df == 2  # three subgroups
    assert adjusted.p_value is not None and adjusted.p_value > ALPHA
    assert adjusted.odds_ratio_ci is not None
    assert adjusted.odds_ratio_ci[0] < 1 < adjusted.odds_ratio_ci[1]
    assert raw.lowest is not None
    odds, ci, statistic = _independent_fit(records, "race", raw.lowest, "C", "C(quality)")
    assert adjusted.odds_ratio == pytest.approx(odds, rel=1e-8)
    assert adjusted.odds_ratio_ci == pytest.approx(ci, rel=1e-8)
    assert adjusted.statistic == pytest.approx(statistic, rel=1e-8, abs=1e-8)


def test_images_missing_a_covariate_are_left_out_and_counted() -> None:
    records = _confounded(seed=5)
    missing = np.random.default_rng(9).choice(len(records), 73, replace=False)
    records.loc[missing, COVARIATE_PREFIX + "age"] = None
    adjusted = _only(_statistics(records), "gender")
    assert (adjusted.n_used, adjusted.n_left_out) == (1200 - 73, 73)
    odds, ci, _ = _independent_fit(records, "gender", "male", "female", "age")  # complete rows
    assert adjusted.odds_ratio == pytest.approx(odds, rel=1e-8)
    assert adjusted.odds_ratio_ci == pytest.approx(ci, rel=1e-8)


def test_every_grouping_gets_its_adjusted_gap_and_none_joins_the_holm_family() -> None:
    rng = np.random.default_rng(2)
    n = 900
    gender, race = rng.choice(["female", "male"], n), rng.choice(["A", "B", "C"], n)
    age = rng.normal(40, 12, n)
    records = _records(
        _logistic(rng, -1.5 + 0.05 * (age - 40)),
        {"gender": gender, "race": race},
        {"age": _ages(age), "quality": list(rng.choice(["low", "high"], n))},
    )
    statistics = _statistics(records)
    assert [a.id for a in statistics.adjusted] == [
        f"adjusted_error/{g.grouping}" for g in statistics.error_gaps
    ]
    assert [a.grouping for a in statistics.adjusted] == ["gender", "race", "gender×race"]
    assert all(a.covariates == ("age", "quality") for a in statistics.adjusted)
    assert all(a.reason is None for a in statistics.adjusted), statistics.adjusted
    plain = _statistics(
        records.drop(columns=[COVARIATE_PREFIX + "age", COVARIATE_PREFIX + "quality"])
    )
    assert plain.adjusted == []
    assert [g.p_adjusted for g in statistics.error_gaps] == [g.p_adjusted for g in plain.error_gaps]


def _reason(records: pd.DataFrame, grouping: str = "gender") -> str:
    adjusted = _only(_statistics(records), grouping)
    assert adjusted.odds_ratio is None and adjusted.odds_ratio_ci is None
    assert adjusted.p_value is None and adjusted.statistic is None
    assert adjusted.reason is not None and adjusted.reason.startswith("not estimable: ")
    return adjusted.reason


def test_a_subgroup_without_errors_is_separation_not_a_crash() -> None:
    records = _confounded(seed=4)
    men = records[GROUP_PREFIX + "gender"] == "male"
    records.loc[men, "orig_pred"] = records.loc[men, "label"]  # no man's image is an error
    reason = _reason(records)
    assert "'male' has no errors" in reason and "separation" in reason


def test_a_covariate_that_decides_every_error_is_separation_not_a_crash() -> None:
    records = _confounded(seed=6)
    old = pd.to_numeric(records[COVARIATE_PREFIX + "age"]) > 40
    records["orig_pred"] = np.where(old, "b", "a")  # an error exactly when older than 40
    assert "separate" in _reason(records)


def test_a_categorical_value_whose_images_share_one_outcome_is_named() -> None:
    records = _quality_world(seed=2)
    scanned = records[COVARIATE_PREFIX + "quality"] == "low"
    records.loc[scanned, "orig_pred"] = "b"  # every low-quality image is an error
    reason = _reason(records, "race")
    assert "'quality' value 'low' has only errors" in reason


def test_a_singular_design_says_so() -> None:
    records = _confounded(seed=7)
    records[COVARIATE_PREFIX + "age"] = "31"
    assert "'age' takes one value" in _reason(records)
    site = records[GROUP_PREFIX + "gender"].map({"female": "north", "male": "south"})
    records[COVARIATE_PREFIX + "age"] = list(site)  # a covariate that is the subgroup again
    assert "singular" in _reason(records)


def test_too_few_tested_subgroups_is_a_reason() -> None:
    records = _confounded(seed=8, n=30)
    men = records.index[records[GROUP_PREFIX + "gender"] == "male"]
    one_man = records.drop(index=men[1:]).reset_index(drop=True)  # too few men to test
    assert "fewer than two subgroups" in _reason(one_man)


def test_subgroups_with_equal_error_rates_name_no_pair() -> None:
    errors = np.tile([True, False, False, False], 10)  # 5 of 20 in each gender
    gender = np.repeat(["female", "male"], 20)
    ages = _ages(np.random.default_rng(0).normal(40, 10, 40))
    assert "same error rate" in _reason(_records(errors, {"gender": gender}, {"age": ages}))


def test_numbers_enter_linearly_and_anything_else_as_categories() -> None:
    assert is_numeric(pd.Series(["31", "2.5", "1e3", None, " 7"]))
    assert not is_numeric(pd.Series(["31", "young"]))
    assert not is_numeric(pd.Series(["31", "inf"]))
    assert not is_numeric(pd.Series([None, None], dtype=object))


# --- from labels.csv to summary.json -----------------------------------------------------------


def _with_age(root: Path) -> Path:
    """Add an ``age`` column (two cells missing, spelt two ways) to a dataset's labels.csv."""
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    table["age"] = [str(20 + 3 * i) for i in range(len(table))]
    table.loc[1, "age"], table.loc[4, "age"] = "", "NA"
    table.to_csv(root / "labels.csv", index=False)
    return root


def test_labels_csv_covariates_become_sample_cells(small_dataset: Callable[..., Path]) -> None:
    root = _with_age(small_dataset(n=6))
    dataset = load_dataset(root, ("female", "male"), label_column="gender", adjust_for=["age"])
    assert dataset.covariate_columns == ("age",)
    cells = [s.covariates for s in sorted(dataset.samples, key=lambda s: s.id)]
    assert cells[0] == {"age": "20"} and cells[1] == {} and cells[4] == {}


def test_an_unknown_adjust_for_column_exits_2_naming_it(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data = small_dataset(n=4)
    code, output = audit(tiny_model(), data, tmp_path / "run", "--adjust-for", "agee")
    assert code == 2, output
    assert "'agee'" in output and "--adjust-for" in output and "race" in output  # the columns
    assert not (tmp_path / "run" / "results.parquet").exists()


@pytest.mark.parametrize("column", ["race", "gender"])  # a group column; the label column
def test_adjusting_for_a_group_or_the_label_exits_2(
    column: str, tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data = small_dataset(n=4)
    code, output = audit(tiny_model(), data, tmp_path / "run", "--adjust-for", column)
    assert code == 2, output
    assert f"'{column}'" in output and "--adjust-for" in output


def test_audit_run_adjust_for_writes_the_adjusted_gaps(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data = _with_age(small_dataset(n=24))
    out = tmp_path / "run"
    options = ("--probes", "flip", "--faithfulness-images", "0", "--min-group-size", "2")
    code, output = audit(tiny_model(), data, out, "--adjust-for", "age", *options)
    assert code == 0, output
    summary = load_summary(out)
    jsonschema.validate(summary, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    assert summary["config"]["adjust_for"] == ["age"]
    adjusted = summary["statistics"]["adjusted"]
    assert [a["id"] for a in adjusted] == [
        f"adjusted_error/{g['grouping']}" for g in summary["statistics"]["error_gaps"]
    ]
    gender = next(a for a in adjusted if a["grouping"] == "gender")
    assert (gender["n_used"], gender["n_left_out"]) == (22, 2)
    assert all(a["covariates"] == ["age"] for a in adjusted)
    results = pd.read_parquet(out / "results.parquet")
    assert results[COVARIATE_PREFIX + "age"].isna().groupby(results["image_id"]).all().sum() == 2
    # The gate recomputes the statistics from results.parquet alone: the same adjusted gaps.
    run = RunStore.open(out)
    again = compute_statistics(run.records(), alpha=ALPHA, min_group_size=2, seed=0)
    assert json.loads(json.dumps([dataclasses.asdict(a) for a in again.adjusted])) == adjusted
    typed = run.summary().statistics.adjusted
    assert json.loads(json.dumps([dataclasses.asdict(a) for a in typed])) == adjusted
    # The report states each error gap at equal age beside the raw one.
    html = (out / "report.html").read_text(encoding="utf-8")
    errors = html[html.index('id="errors"') :]
    assert errors.count("At equal age") >= len(adjusted)
