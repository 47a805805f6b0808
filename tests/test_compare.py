"""`audit compare`: two models on the same images, compared pair by pair, and nothing else.

Fast tests build run directories by hand (a results.parquet and the summary.json fields a
comparison reads), so every count is planted and checked against an independent
recomputation; slow tests compare the demo's biased and control models through the CLI.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import junitparser
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from auditor import __version__
from auditor.cli import cli
from auditor.compare import (
    Comparison,
    ComparisonRow,
    compare_runs,
    read_comparison,
    write_comparison,
)
from auditor.errors import AuditorError
from auditor.policy import FAIL, INSUFFICIENT, Policy, judge_comparison
from auditor.records import PLACEBO, RESULTS_FILE, schema
from auditor.store import seal
from auditor.summary import SCHEMA_VERSION

DATASET_SHA = "d" * 64
METHOD = "gradcam"


def people(n_female: int = 30, n_male: int = 30, n_small: int = 0) -> pd.DataFrame:
    """Images with a gender label and a race label; ``n_small`` more form race group 'C'."""
    genders = ["female"] * n_female + ["male"] * n_male + ["female"] * n_small
    races = [("A", "B")[i % 2] for i in range(n_female + n_male)] + ["C"] * n_small
    return pd.DataFrame(
        {
            "image_id": [f"img/{i:03d}.png" for i in range(len(genders))],
            "gender": genders,
            "race": races,
            "error": False,
            "flip": False,
        }
    )


def write_run(
    run_dir: Path,
    images: pd.DataFrame,
    *,
    model: str = "model.pt",
    dataset_sha: str = DATASET_SHA,
    methods: tuple[str, ...] = (METHOD,),
    mean_map: np.ndarray | None = None,
) -> Path:
    """A run directory as `audit run` leaves it, with the records and figures a comparison
    reads planted (:func:`summary_for` fills in the rest of summary.json).

    Each image is labelled by its gender label and predicted wrongly where ``error``; the
    blackout arm of every method flips it where ``flip`` (its placebo never does), the mirror
    flip never does.
    """
    run_dir.mkdir(parents=True)
    rows = []
    for image in images.itertuples():
        pred = {"female": "male", "male": "female"}[image.gender] if image.error else image.gender
        base = {
            "image_id": image.image_id,
            "label": image.gender,
            "group_gender": image.gender,
            "group_race": image.race,
            "orig_pred": pred,
        }
        for method in methods:
            rows.append(
                {
                    **base,
                    "probe": "blackout",
                    "region_source": "attribution",
                    "method": method,
                    "flipped": bool(image.flip),
                }
            )
            rows.append(
                {
                    **base,
                    "probe": "blackout",
                    "region_source": PLACEBO,
                    "method": method,
                    "flipped": False,
                }
            )
        rows.append({**base, "probe": "flip", "region_source": "whole_image", "flipped": False})
    table = pa.Table.from_pylist(rows, schema=schema(["gender", "race"]))
    pq.write_table(table, run_dir / RESULTS_FILE)
    maps = []
    if mean_map is not None:
        np.savez_compressed(run_dir / "mean_maps.npz", map_0=mean_map)
        maps = [
            {
                "method": methods[0],
                "grouping": "all",
                "group": "all",
                "outcome": "all",
                "count": len(images),
            }
        ]
    summary = summary_for(len(images), model, dataset_sha, methods, maps)
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    stored = [RESULTS_FILE, "summary.json", *(["mean_maps.npz"] if maps else [])]
    seal(run_dir, stored)  # a finished run, as `audit run` leaves it
    return run_dir


def summary_for(
    images: int, model: str, dataset_sha: str, methods: tuple[str, ...], maps: list[dict]
) -> dict[str, Any]:
    """A complete summary.json (readers refuse a partial one): what a comparison reads is
    planted, the rest holds placeholders (no test, no skip, no faithfulness curve)."""
    no_rate = {"n": 0, "k": 0, "rate": None, "ci_low": None, "ci_high": None}
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "auditor", "version": "0.1.0"},
        "created": "2026-01-01T00:00:00+00:00",
        "seconds": 1.0,
        "config": {
            "model_path": f"models/{model}",
            "dataset_dir": "data",
            "out_dir": "run",
            "label_column": "gender",
            "target": "predicted",
            "probes": ["blackout", "flip"],
            "region_area": 0.1,
            "batch_size": 32,
            "seed": 0,
            "alpha": 0.05,
            "min_group_size": 10,
        },
        "model": {
            "path": f"models/{model}",
            "sha256": model[0] * 64,
            "kind": "state_dict",
            "single_logit": False,
            "classes": ["female", "male"],
            "input_size": [64, 64],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        },
        "attribution": {
            "target": "predicted",
            "methods": [{"name": m, "target_layer": "layer4"} for m in methods],
            "options": {},
            "default_note": None,
            "faithfulness": [],
            "localisation": [],
            "mean_maps": maps,
            "divergence": [],
        },
        "dataset": {
            "root": "data",
            "labels_csv_sha256": dataset_sha,
            "label_column": "gender",
            "group_columns": ["gender", "race"],
            "rows": images,
            "images_audited": images,
            "images_skipped": 0,
            "skips_by_reason": [],
            "skipped": [],
        },
        "probes": [
            {
                "name": "blackout",
                "description": "blacking out the attribution region",
                "region_from": "attribution",
            },
            {
                "name": "flip",
                "description": "mirroring the image left to right",
                "region_from": "whole_image",
            },
        ],
        "versions": {},
        "statistics": {
            "alpha": 0.05,
            "min_group_size": 10,
            "groupings": [],
            "overall_error": no_rate,
            "error_gaps": [],
            "flip_gaps": [],
            "paired": [],
            "flip_overall": {},
            "placebo_by_group": {},
            "excess": [],
        },
    }


def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A errs on 2 of 30 'female' images, B on 16 (A's 2 among them); both on 1 'male' image.
    B's blackout flips 12 'female' images, A's flips 2 of them."""
    a, b = people(), people()
    female = np.flatnonzero(a["gender"] == "female")
    male = np.flatnonzero(a["gender"] == "male")
    a.loc[female[:2], "error"] = True
    b.loc[female[:16], "error"] = True
    a.loc[male[:1], "error"] = b.loc[male[:1], "error"] = True
    a.loc[female[:2], "flip"] = True
    b.loc[female[:12], "flip"] = True
    return write_run(tmp_path / "a", a), write_run(tmp_path / "b", b, model="candidate.pt")


def row_of(rows: list[ComparisonRow], row_id: str) -> ComparisonRow:
    return next(r for r in rows if r.id == row_id)


def test_a_planted_difference_is_flagged_with_its_direction(tmp_path: Path) -> None:
    comparison = compare_runs(*planted(tmp_path))
    female = row_of(comparison.rows, "error_rate/gender/female")
    assert (female.n, female.k_a, female.k_b, female.a_only, female.b_only) == (30, 2, 16, 0, 14)
    assert female.rate_a == pytest.approx(2 / 30) and female.rate_b == pytest.approx(16 / 30)
    assert female.difference == pytest.approx(14 / 30)
    assert female.worse == "B" and female.significant and not female.insufficient
    assert female.ci[0] > 0 and female.ci[0] < female.difference < female.ci[1]
    male = row_of(comparison.rows, "error_rate/gender/male")
    assert male.difference == 0 and male.worse is None and male.p_value is None
    assert not male.significant
    flips = row_of(comparison.rows, "flip_rate/blackout@gradcam/gender/female")
    assert (flips.a_only, flips.b_only, flips.worse, flips.significant) == (0, 10, "B", True)


def test_mcnemar_p_values_and_holm_match_an_independent_recomputation(tmp_path: Path) -> None:
    comparison = compare_runs(*planted(tmp_path))
    tested = [r for r in comparison.rows if r.p_value is not None]
    for row in tested:  # exact McNemar: the B-only count is Binomial(discordant, 1/2)
        expected = sps.binomtest(row.b_only, row.a_only + row.b_only, 0.5).pvalue
        assert row.p_value == pytest.approx(expected, rel=1e-9), row.id
    ranked = sorted(tested, key=lambda r: r.p_value)
    running = 0.0
    for rank, row in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - rank) * row.p_value))
        assert row.p_adjusted == pytest.approx(running, rel=1e-9), row.id
        assert row.significant == (running < comparison.alpha)


def test_identical_runs_differ_nowhere(tmp_path: Path) -> None:
    _, b = planted(tmp_path)
    copy = tmp_path / "b-again"
    shutil.copytree(b, copy)
    comparison = compare_runs(b, copy)
    assert comparison.rows and comparison.images == 60
    for row in comparison.rows:
        assert row.difference == 0 and row.worse is None, row.id
        assert row.p_value is None and not row.significant, row.id
        assert row.ci[0] < 0 < row.ci[1], row.id


def test_a_small_subgroup_is_insufficient_data_not_a_pass(tmp_path: Path) -> None:
    a, b = people(n_small=5), people(n_small=5)
    b.loc[b["race"] == "C", "error"] = True  # a large gap, in too few images to test
    comparison = compare_runs(write_run(tmp_path / "a", a), write_run(tmp_path / "b", b))
    small = row_of(comparison.rows, "error_rate/race/C")
    assert small.insufficient and small.n == 5 and small.difference == 1.0
    assert small.test == "insufficient data" and small.p_value is None and not small.significant
    assert small.worse == "B"  # the point estimate is still stated
    assert not row_of(comparison.rows, "error_rate/race/A").insufficient


def test_runs_on_different_datasets_are_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", people())
    b = write_run(tmp_path / "b", people(), dataset_sha="e" * 64)
    with pytest.raises(AuditorError, match="different datasets"):
        compare_runs(a, b)
    result = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert result.exit_code == 2
    assert "audited different datasets" in result.output


def test_shared_images_with_different_labels_are_refused(tmp_path: Path) -> None:
    b_images = people()
    b_images["gender"] = b_images["gender"].map({"female": "male", "male": "female"})
    a, b = write_run(tmp_path / "a", people()), write_run(tmp_path / "b", b_images)
    with pytest.raises(AuditorError, match="disagree on 'label'"):
        compare_runs(a, b)


def test_a_directory_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", people())
    result = CliRunner().invoke(cli, ["compare", str(a), str(tmp_path)])
    assert result.exit_code == 2 and "holds no summary.json" in result.output


def test_a_comparison_is_never_written_into_a_run(tmp_path: Path) -> None:
    """--out RUN_B would replace the run's own gate.json (the verdict its report shows)."""
    a, b = planted(tmp_path)
    (b / "gate.json").write_text("{}", encoding="utf-8")  # the run's own verdict
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), "--out", str(b)])
    assert result.exit_code == 2 and "holds an audit run" in result.output
    assert (b / "gate.json").read_text(encoding="utf-8") == "{}"
    assert not (b / "comparison.json").exists()


def test_a_run_of_an_older_schema_is_refused(tmp_path: Path) -> None:
    a, b = write_run(tmp_path / "a", people()), write_run(tmp_path / "b", people())
    summary = json.loads((b / "summary.json").read_text(encoding="utf-8"))
    (b / "summary.json").write_text(json.dumps({**summary, "schema_version": 1}), encoding="utf-8")
    with pytest.raises(AuditorError, match=r"summary schema 1, .* rerun `audit run`"):
        compare_runs(a, b)


def test_only_what_both_runs_have_is_compared(tmp_path: Path) -> None:
    a_images, b_images = people(), people()
    b_images = b_images.iloc[:-4]  # four images B did not score
    a = write_run(tmp_path / "a", a_images)
    b = write_run(tmp_path / "b", b_images, methods=(METHOD, "xgradcam"))
    comparison = compare_runs(a, b)
    assert comparison.images == 56
    assert len(comparison.only_a.images) == 4 and comparison.only_b.images == []
    assert comparison.only_b.arms == ["blackout@xgradcam"] and comparison.only_a.arms == []
    assert {r.arm for r in comparison.rows} == {None, "blackout@gradcam", "flip"}
    assert row_of(comparison.rows, "error_rate/all/all").n == 56


def test_mean_maps_are_compared_per_method_and_subgroup(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    left, right = np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32)
    left[:, :4], right[:, 4:] = 1 / 32, 1 / 32
    same = rng.random((8, 8)).astype(np.float32)
    a = write_run(tmp_path / "a", people(), mean_map=left)
    b = write_run(tmp_path / "b", people(), mean_map=right)
    c = write_run(tmp_path / "c", people(), mean_map=same)
    (disjoint,) = compare_runs(a, b).maps
    assert (disjoint.method, disjoint.grouping, disjoint.n_a) == (METHOD, "all", 60)
    assert disjoint.js_divergence == pytest.approx(1.0)  # bits
    assert compare_runs(c, c).maps[0].js_divergence == pytest.approx(0.0, abs=1e-12)
    (too_few,) = compare_runs(a, b, min_group_size=61).maps
    assert too_few.insufficient and too_few.js_divergence is None


def test_the_cli_writes_json_and_html_beside_run_b(tmp_path: Path) -> None:
    a, b = planted(tmp_path)
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    out = b / "compare-a"
    data = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert data["a"]["model_sha256"] == "m" * 64 and data["b"]["model_sha256"] == "c" * 64
    assert data["a"]["labels_csv_sha256"] == DATASET_SHA and data["tool"]["version"]
    female = next(r for r in data["rows"] if r["id"] == "error_rate/gender/female")
    assert female["significant"] and female["worse"] == "B" and female["p_adjusted"] < 0.05
    page = html.unescape((out / "comparison.html").read_text(encoding="utf-8"))
    female_finding = "B errs more than A for images whose gender label is 'female': 53 % vs 6.7 %"
    assert female_finding.replace(" %", "\u00a0%") in page
    assert "B errs more than A for images whose gender label is 'female'" in result.output


def test_comparison_json_reads_back_as_the_comparison_written(tmp_path: Path) -> None:
    a, b = planted(tmp_path)
    comparison = compare_runs(a, b)
    stored = read_comparison(write_comparison(comparison, tmp_path / "out").parent)
    assert stored.tool.version == __version__ and stored.created
    written = {f.name: getattr(stored, f.name) for f in dataclasses.fields(Comparison)}
    assert Comparison(**written) == comparison


def test_a_difference_that_rounds_to_zero_reads_0_0_percent_without_a_sign(
    tmp_path: Path,
) -> None:
    """One error of 2,100 images that A makes and B does not: B − A is −0.048 %, shown with one
    decimal as "0.0 %", not "-0.0 %"; the number and its "%" never part across lines."""
    a_images, b_images = people(1050, 1050), people(1050, 1050)
    a_images.loc[0, "error"] = True
    a, b = write_run(tmp_path / "a", a_images), write_run(tmp_path / "b", b_images)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (overall,) = (r for r in read_comparison(out).rows if r.id == "error_rate/all/all")
    assert -0.0005 < overall.difference < 0
    page = html.unescape((out / "comparison.html").read_text(encoding="utf-8"))
    cells = re.findall(r"<td>([^<]*)</td>", page)
    assert "0.0\u00a0% (" in " ".join(cells)  # the all-images error row's B − A
    assert not re.search(r"-0(\.0)?\s%", page)
    assert not re.search(r"\d %", page), "every % is joined to its number by a no-break space"


def test_the_page_escapes_group_values(tmp_path: Path) -> None:
    images = people()
    images.loc[0, "race"] = "<script>alert(1)</script>"
    a, b = write_run(tmp_path / "a", images), write_run(tmp_path / "b", images)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["compare", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "comparison.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- gating a release on the comparison ------------------------------------------------------


def compare_gated(run_a: Path, run_b: Path, out: Path, *extra: str) -> tuple[int, str, dict]:
    """``audit compare RUN_A RUN_B --out OUT EXTRA...`` → (exit code, output, gate.json)."""
    result = CliRunner().invoke(cli, ["compare", str(run_a), str(run_b), "--out", str(out), *extra])
    gate_file = out / "gate.json"
    verdict = json.loads(gate_file.read_text(encoding="utf-8")) if gate_file.is_file() else {}
    return result.exit_code, result.output, verdict


def failures(verdict: dict) -> set[tuple[str, str, str]]:
    return {
        (r["gate"], r["grouping"], r["group"]) for r in verdict["results"] if r["outcome"] == FAIL
    }


def test_a_candidate_worse_for_one_subgroup_fails_the_regression_gate(tmp_path: Path) -> None:
    a, b = planted(tmp_path)
    junit = tmp_path / "compare.xml"
    code, output, verdict = compare_gated(
        a, b, tmp_path / "out", "--fail-on", "regression > 0", "--junit-xml", str(junit)
    )
    assert code == 1, output
    failed = failures(verdict)
    assert ("regression[error_rate]", "gender", "female") in failed
    assert ("regression[blackout@gradcam]", "gender", "female") in failed
    assert not any(group == "male" for _, grouping, group in failed if grouping == "gender")
    assert "Policy FAILS" in output
    suite = next(iter(junitparser.JUnitXml.fromfile(str(junit))))
    assert suite.failures == len(failed) and suite.tests == len(verdict["results"])


def test_the_regression_gate_holds_when_the_candidate_is_the_baseline(tmp_path: Path) -> None:
    _, b = planted(tmp_path)
    copy = tmp_path / "b-again"
    shutil.copytree(b, copy)
    code, output, verdict = compare_gated(b, copy, tmp_path / "out", "--fail-on", "regression > 0")
    assert code == 0, output
    assert verdict["holds"] and verdict["counts"]["pass"] == len(verdict["results"]) > 0


def test_a_regression_threshold_can_name_the_error_rate_alone(tmp_path: Path) -> None:
    """B − A is +47 % for 'female' error: under a 50 % maximum it passes; flips are not gated."""
    a, b = planted(tmp_path)
    code, output, verdict = compare_gated(
        a, b, tmp_path / "out", "--fail-on", "regression[error_rate] > 0.5"
    )
    assert code == 0, output
    assert {r["gate"] for r in verdict["results"]} == {"regression[error_rate]"}


def test_a_small_subgroup_is_insufficient_data_for_the_regression_gate(tmp_path: Path) -> None:
    a, b = people(n_small=5), people(n_small=5)
    b.loc[b["race"] == "C", "error"] = True
    comparison = compare_runs(write_run(tmp_path / "a", a), write_run(tmp_path / "b", b))
    lenient = judge_comparison(comparison, Policy(max_regression={"default": 0.0}))
    small = next(r for r in lenient.results if (r.grouping, r.group) == ("race", "C"))
    assert small.outcome == INSUFFICIENT and "insufficient data" in small.message
    assert lenient.holds
    strict = Policy(max_regression={"default": 0.0}, fail_on_insufficient_data=True)
    assert not judge_comparison(comparison, strict).holds


def test_a_policy_without_a_regression_threshold_is_for_audit_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = planted(tmp_path)
    run_policy = tmp_path / "audit.toml"
    run_policy.write_text("max_error_rate_gap = 0.05\n")
    code, output, _ = compare_gated(a, b, tmp_path / "explicit", "--policy", str(run_policy))
    assert code == 2 and "sets no threshold for audit compare" in output
    monkeypatch.chdir(tmp_path)  # found, not given: it is audit run's policy, not this one's
    code, output, verdict = compare_gated(a, b, tmp_path / "found")
    assert code == 0 and verdict == {}, output


@pytest.mark.slow
def test_the_biased_model_is_worse_than_the_control_for_female_labels(
    control_run: Path, biased_run: Path, tmp_path: Path
) -> None:
    code, output, verdict = compare_gated(
        control_run, biased_run, tmp_path, "--fail-on", "regression > 0"
    )
    assert code == 1, output  # the candidate is worse than the baseline for someone
    assert ("regression[error_rate]", "gender", "female") in failures(verdict)
    assert ("regression[error_rate]", "gender", "male") not in failures(verdict)
    data = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    rows = {r["id"]: r for r in data["rows"]}
    female = rows["error_rate/gender/female"]
    assert female["significant"] and female["worse"] == "B" and female["ci"][0] > 0
    assert not rows["error_rate/gender/male"]["significant"]
    assert sorted(data["only_b"]["arms"]) == sorted(
        f"{probe}@{method}"
        for probe in ("blackout", "blackout(fill=inpaint)", "white_patch")
        for method in ("gradcam++", "xgradcam")
    )
    assert {m["method"] for m in data["maps"]} == {"gradcam"}
    page = html.unescape((tmp_path / "comparison.html").read_text(encoding="utf-8"))
    assert "B errs more than A for images whose gender label is 'female'" in page


@pytest.mark.slow
def test_a_model_compared_with_itself_shows_nothing(control_run: Path, tmp_path: Path) -> None:
    code, output, verdict = compare_gated(
        control_run, control_run, tmp_path, "--fail-on", "regression > 0"
    )
    assert code == 0 and verdict["holds"], output
    data = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    assert data["rows"] and not any(r["significant"] for r in data["rows"])
    assert all(r["difference"] == 0 for r in data["rows"])
    assert all(m["js_divergence"] in (None, 0.0) for m in data["maps"])
    page = html.unescape((tmp_path / "comparison.html").read_text(encoding="utf-8"))
    assert "No significant difference between A and B" in page
