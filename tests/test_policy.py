"""Release gating: a policy read from TOML or --fail-on, judged per gate and subgroup, with exit
codes, JUnit XML and a verdict that `audit gate` reproduces from stored results."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import junitparser
import pandas as pd
import pytest
from click.testing import CliRunner
from markupsafe import escape

from auditor.cli import cli
from auditor.compare import ComparisonRow
from auditor.demo import DEMO_POLICY
from auditor.errors import ConfigError, RunDirError
from auditor.junit import write_junit
from auditor.policy import (
    FAIL,
    INSUFFICIENT,
    PASS,
    REQUIRE,
    GateResult,
    Policy,
    Verdict,
    _regression_result,
    judge,
    load_policy,
    parse_policy,
    threshold,
    with_expressions,
)
from auditor.run_summary import StoredVerdict
from auditor.stats import compute_statistics
from reports.findings import policy_text
from reports.view import build_view
from tests.conftest import audit, load_summary

# --- reading a policy --------------------------------------------------------------------------


def test_audit_toml_and_pyproject_give_the_same_policy(tmp_path: Path) -> None:
    body = (
        'max_error_rate_gap = 0.05\nmax_flip_rate_gap = {default = 0.1, "blackout@gradcam" = 0.2}\n'
    )
    (tmp_path / "audit.toml").write_text(body)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n[tool.audit]\n" + body)
    from_toml = load_policy(tmp_path / "audit.toml")
    from_pyproject = load_policy(tmp_path / "pyproject.toml")
    assert from_toml is not None and from_pyproject is not None
    assert from_toml.max_error_rate_gap == from_pyproject.max_error_rate_gap == 0.05
    assert from_toml.max_flip_rate_gap == from_pyproject.max_flip_rate_gap
    assert from_toml.require == "significance"  # the default: noise alone never fails a release


def test_a_policy_in_the_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_policy(None) is None
    (tmp_path / "pyproject.toml").write_text("[tool.audit]\nmax_flip_rate = 0.4\n")
    found = load_policy(None)
    assert found is not None and found.max_flip_rate == {"default": 0.4}
    (tmp_path / "audit.toml").write_text("max_error_rate_gap = 0.1\n")  # audit.toml comes first
    found = load_policy(None)
    assert found is not None and found.max_error_rate_gap == 0.1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("max_error_gap = 0.1\n", "unknown policy key(s) max_error_gap"),
        ("max_error_rate_gap = 5\n", "max_error_rate_gap must be a rate between 0 and 1"),
        ("max_flip_rate = {blackout = 'high'}\n", "max_flip_rate.blackout must be a rate"),
        ("max_flip_rate = 0.3\nmin_group_size = 0\n", "min_group_size must be a whole number"),
        ("max_flip_rate = 0.3\nrequire_significance = 'yes'\n", "must be true or false"),
        (
            "max_flip_rate = 0.3\nrequire = 'proof'\n",
            'require must be one of "significance", "estimate", "equivalence", got \'proof\'',
        ),
        (
            "max_flip_rate = 0.3\nrequire = 'estimate'\nrequire_significance = false\n",
            "give require or require_significance, not both",
        ),
        ("alpha = 0.01\n", "sets no threshold"),
        ("max_flip_rate = [0.3\n", "is not valid TOML"),
    ],
)
def test_a_bad_policy_file_is_refused_with_the_key_named(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "audit.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_policy(path)


@pytest.mark.parametrize(
    ("table", "require"),
    [
        ({}, "significance"),
        ({"require_significance": True}, "significance"),
        ({"require_significance": False}, "estimate"),
        ({"require": "equivalence"}, "equivalence"),
    ],
)
def test_require_is_read_and_the_older_require_significance_maps_to_it(
    table: dict[str, Any], require: str
) -> None:
    assert parse_policy({"max_flip_rate": 0.3, **table}, "audit.toml").require == require


def test_require_on_the_command_line_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no policy file to discover
    path = tmp_path / "rc.toml"
    path.write_text("max_error_rate_gap = 0.05\nrequire_significance = true\n")
    policy = load_policy(path, require="equivalence")
    assert policy is not None and policy.require == "equivalence"
    assert policy.source == f"{path} + --require"
    policy = load_policy(None, ["error_rate_gap > 0.05"], require="estimate")
    assert policy is not None and policy.require == "estimate"
    with pytest.raises(ConfigError, match="--require: require must be one of"):
        load_policy(path, require="proof")
    with pytest.raises(ConfigError, match="sets no threshold for audit run"):
        load_policy(None, require="equivalence")


def test_fail_on_expressions_set_thresholds_and_win_over_the_file() -> None:
    policy = parse_policy({"max_flip_rate_gap": 0.3, "max_error_rate_gap": 0.2}, "audit.toml")
    policy = with_expressions(
        policy, ["error_rate_gap > 0.05", "flip_rate_gap[blackout]>0.1", "flip_rate > .4"]
    )
    assert policy.max_error_rate_gap == 0.05
    assert policy.max_flip_rate_gap == {"default": 0.3, "blackout": 0.1}
    assert policy.max_flip_rate == {"default": 0.4}
    assert policy.source == "audit.toml + --fail-on"


@pytest.mark.parametrize(
    "expression", ["flip_rate_gap >= 0.1", "accuracy > 0.9", "error_rate_gap[flip] > 0.1", "x"]
)
def test_a_bad_fail_on_expression_says_how_to_write_one(expression: str) -> None:
    with pytest.raises(ConfigError, match="--fail-on"):
        with_expressions(Policy(), [expression])


def test_the_most_specific_threshold_wins() -> None:
    thresholds = {"default": 0.3, "blackout": 0.2, "blackout@gradcam++": 0.1}
    assert threshold(thresholds, "blackout", "blackout@gradcam++") == 0.1
    assert threshold(thresholds, "blackout", "blackout@gradcam") == 0.2
    assert threshold(thresholds, "flip", "flip") == 0.3
    assert threshold({"blackout": 0.2}, "flip", "flip") is None  # not gated


# --- judging ------------------------------------------------------------------------------------


def records(groups: dict[str, tuple[int, int, int]]) -> pd.DataFrame:
    """A results table with one whole-image probe ("flip"): per gender label (n, errors, flips)."""
    rows = []
    for group, (n, errors, flips) in groups.items():
        for i in range(n):
            rows.append(
                {
                    "image_id": f"{group}/{i}",
                    "label": group,
                    "group_gender": group,
                    "probe": "flip",
                    "region_source": "whole_image",
                    "method": None,
                    "skip_reason": None,
                    "orig_pred": "other" if i < errors else group,
                    "probed_pred": group,
                    "flipped": i < flips,
                }
            )
    return pd.DataFrame(rows)


def judged(groups: dict[str, tuple[int, int, int]], **policy: Any) -> dict[str, list[str]]:
    """Gate name/subgroup by outcome, for ``groups`` as in ``records``."""
    results = judge(compute_statistics(records(groups), min_group_size=10), Policy(**policy))
    outcome: dict[str, list[str]] = {}
    for result in results:
        outcome.setdefault(result.outcome, []).append(f"{result.gate}/{result.group}")
    return outcome


def test_a_significant_gap_fails_only_the_subgroup_above_the_best_one() -> None:
    outcome = judged(
        {"female": (200, 60, 20), "male": (200, 10, 20)},
        max_error_rate_gap=0.05,
        max_flip_rate_gap={"flip": 0.05},
    )
    assert outcome[FAIL] == ["error_rate_gap/female"]
    assert sorted(outcome[PASS]) == ["error_rate_gap/male", "flip_rate_gap[flip]/female",
                                     "flip_rate_gap[flip]/male"]  # fmt: skip


def test_a_gap_that_noise_could_make_does_not_fail_unless_significance_is_waived() -> None:
    groups = {"female": (20, 4, 0), "male": (20, 1, 0)}  # 20 % vs 5 %: Fisher p ≈ 0.34
    assert FAIL not in judged(groups, max_error_rate_gap=0.1)
    assert judged(groups, max_error_rate_gap=0.1, require="estimate")[FAIL] == [
        "error_rate_gap/female"
    ]


def test_a_pass_on_a_gap_that_is_not_significant_says_how_large_a_gap_could_go_unseen() -> None:
    """20 % vs 5 % of 20 images each: not significant, so it passes, and the message says that
    a gap below 28.4 points (power 0.8 at α = 0.05, around the pooled 12.5 %) could be missed."""
    female = by_group({"female": (20, 4, 0), "male": (20, 1, 0)}, max_error_rate_gap=0.1)["female"]
    assert female.outcome == PASS
    assert female.message.endswith(
        'the gap is not significant, so it does not fail (require = "significance"); '
        "a gap smaller than 28.4 points could not reliably have been seen here"
    )


# Two gender labels of (n, errors, flips): the same error rate in many images, in few, and 20 %
# vs 10 % in many.
NULL_LARGE = {"female": (20_000, 2_000, 0), "male": (20_000, 2_000, 0)}
NULL_SMALL = {"female": (50, 5, 0), "male": (50, 5, 0)}
REAL_GAP = {"female": (2_000, 400, 0), "male": (2_000, 200, 0)}


def by_group(groups: dict[str, tuple[int, int, int]], **policy: Any) -> dict[str, GateResult]:
    """The one gate's result for each subgroup of ``groups`` (as in ``records``)."""
    results = judge(compute_statistics(records(groups), min_group_size=10), Policy(**policy))
    return {r.group: r for r in results}


EQUIVALENT: dict[str, Any] = {"max_error_rate_gap": 0.05, "require": "equivalence"}


def test_equivalence_passes_a_large_world_without_a_gap_and_says_what_it_rules_out() -> None:
    """2 × 20,000 images at 10 %: every pair's 90 % TOST interval lies within ±0.5 points."""
    results = by_group(NULL_LARGE, **EQUIVALENT)
    assert {r.outcome for r in results.values()} == {PASS}
    assert results["female"].message.endswith(
        "the data rule out a gap of 0.5 points or more between any two tested subgroups "
        '(require = "equivalence")'
    )


def test_equivalence_is_insufficient_data_on_a_small_world_without_a_gap() -> None:
    """2 × 50 images at 10 %: no gap, but a 10-point one cannot be ruled out, so the gate is
    not passed; under significance the same data pass."""
    results = by_group(NULL_SMALL, **EQUIVALENT)
    assert {r.outcome for r in results.values()} == {INSUFFICIENT}
    assert results["male"].message.endswith(
        'insufficient data (require = "equivalence"): the data cannot rule out a gap of '
        "10.5 points; a gap smaller than 16.6 points could not reliably have been seen here"
    )
    significance = by_group(NULL_SMALL, max_error_rate_gap=0.05)
    assert {r.outcome for r in significance.values()} == {PASS}
    policy = Policy(**EQUIVALENT)
    statistics = compute_statistics(records(NULL_SMALL), min_group_size=10)
    assert not Verdict(policy, judge(statistics, policy)).holds  # nothing judged: never a pass


def test_equivalence_fails_a_real_gap_and_passes_no_subgroup_of_its_grouping() -> None:
    results = by_group(REAL_GAP, **EQUIVALENT)
    assert results["female"].outcome == FAIL  # 20 % vs 10 %, significant: as under significance
    male = results["male"]
    assert male.outcome == INSUFFICIENT
    assert male.message.endswith("the data cannot rule out a gap of 11.8 points")  # found one


def test_equivalence_passes_a_significant_gap_well_inside_the_maximum() -> None:
    """11 % vs 10 % in 2 × 20,000 images: significant, but no gap of 1.5 points or more."""
    groups = {"female": (20_000, 2_200, 0), "male": (20_000, 2_000, 0)}
    results = by_group(groups, **EQUIVALENT)
    assert {r.outcome for r in results.values()} == {PASS}
    assert "after Holm (significant)" in results["female"].message
    assert "rule out a gap of 1.5 points or more" in results["female"].message


def test_equivalence_passes_a_flip_rate_only_when_its_whole_interval_is_below_the_maximum() -> None:
    groups = {"female": (300, 0, 150), "male": (300, 0, 100), "other": (15, 0, 9)}
    results = by_group(groups, max_flip_rate={"default": 0.4}, require="equivalence")
    assert results["female"].outcome == FAIL  # 50 % (44–56 %): wholly above
    assert results["male"].outcome == PASS  # 33 % (28–39 %): wholly below
    assert results["male"].message.endswith(
        'the whole interval lies below the maximum (require = "equivalence")'
    )
    other = results["other"]  # 60 % (36–80 %): either side
    assert other.outcome == INSUFFICIENT
    assert other.message.endswith(
        'insufficient data (require = "equivalence"): the interval reaches above the maximum, '
        "so the data cannot rule out a rate of 80.2 %"
    )


def regression(difference: float, ci: tuple[float, float], significant: bool) -> ComparisonRow:
    """B − A of a subgroup's error rate on 500 shared images."""
    return ComparisonRow(
        "error_rate/gender/female", "error_rate", "gender", "female", None, 500, 50,
        50 + round(500 * difference), 0, 0, 0.1, 0.1 + difference, difference, ci,
        "B" if difference > 0 else "A", False, "exact McNemar", 0.01, 0.01, significant,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("row", "outcome", "ending"),
    [
        (regression(0.1, (0.05, 0.15), True), FAIL, "after Holm"),
        (
            regression(-0.01, (-0.03, 0.01), False),
            PASS,
            'the interval\'s upper end lies below the maximum (require = "equivalence")',
        ),
        (
            regression(0.0, (-0.04, 0.04), False),
            INSUFFICIENT,
            'insufficient data (require = "equivalence"): the data cannot rule out B being '
            "4.0 points worse than A",
        ),
    ],
)
def test_equivalence_passes_a_regression_gate_only_when_b_is_shown_no_worse_than_allowed(
    row: ComparisonRow, outcome: str, ending: str
) -> None:
    result = _regression_result(row, 0.02, Policy(require="equivalence"), 10)
    assert result.outcome == outcome and result.message.endswith(ending)


def test_a_flip_rate_fails_when_its_whole_interval_is_above_the_maximum() -> None:
    groups = {"female": (300, 0, 150), "male": (300, 0, 100), "other": (15, 0, 9)}
    outcome = judged(groups, max_flip_rate={"default": 0.4})
    assert outcome[FAIL] == ["flip_rate[flip]/female"]  # 50 % (44–56 %)
    # 60 % of 15 is above 0.4 but its interval (36–80 %) is not.
    assert sorted(outcome[PASS]) == ["flip_rate[flip]/male", "flip_rate[flip]/other"]


def test_a_small_subgroup_is_insufficient_data_never_a_silent_pass() -> None:
    groups = {"female": (200, 60, 0), "male": (200, 10, 0), "nonbinary": (4, 4, 0)}
    outcome = judged(groups, max_error_rate_gap=0.05)
    assert outcome[INSUFFICIENT] == ["error_rate_gap/nonbinary"]
    statistics = compute_statistics(records(groups), min_group_size=10)
    lenient_policy = Policy(max_error_rate_gap=0.5)
    lenient = Verdict(lenient_policy, judge(statistics, lenient_policy))
    assert lenient.holds and len(lenient.insufficient) == 1
    strict_policy = Policy(max_error_rate_gap=0.5, fail_on_insufficient_data=True)
    assert not Verdict(strict_policy, judge(statistics, strict_policy)).holds


def test_a_policy_with_no_gate_judged_fails_unless_it_says_otherwise() -> None:
    """Every subgroup below the minimum size: nothing passed, so the policy does not hold."""
    policy = Policy(max_error_rate_gap=0.5)
    groups = {"female": (5, 1, 0), "male": (5, 0, 0)}
    statistics = compute_statistics(records(groups), min_group_size=10)
    verdict = Verdict(policy, judge(statistics, policy))
    assert verdict.results and verdict.nothing_judged and not verdict.holds
    lenient = Policy(max_error_rate_gap=0.5, fail_on_insufficient_data=False)
    assert Verdict(lenient, judge(statistics, lenient)).holds


def test_a_gate_never_passes_on_nothing_audited(
    tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """Every image unreadable: each gate is listed as insufficient data and the run exits 1."""
    root = tmp_path / "broken"
    root.mkdir()
    for name in ("a.png", "b.png"):
        (root / name).write_text("not an image")
    (root / "labels.csv").write_text("file,gender\na.png,female\nb.png,male\n")
    out = tmp_path / "run"
    code, output = audit(
        tiny_model(),
        root,
        out,
        "--fail-on",
        "flip_rate_gap > 0.2",
        "--fail-on",
        "error_rate_gap > 0.1",
    )
    assert code == 1, output
    stored = json.loads((out / "gate.json").read_text(encoding="utf-8"))
    assert stored["holds"] is False and stored["counts"] == {
        "pass": 0,
        "fail": 0,
        "insufficient data": 2,
    }
    assert {r["gate"] for r in stored["results"]} == {"error_rate_gap", "flip_rate_gap"}
    assert all(
        "no subgroup test to judge (0 image(s) audited)" in r["message"] for r in stored["results"]
    )
    assert "no gate could be judged, and a policy never passes on nothing" in " ".join(
        output.split()
    )
    code, stdout, _ = gate(out, "--fail-on", "flip_rate_gap > 0.2")
    assert code == 1, stdout


def test_no_gap_is_claimed_absent_when_no_test_could_run(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    model, data = tiny_model(), small_dataset(n=24)  # 12 per gender label, 8 per race label
    code, output = audit(model, data, out, "--min-group-size", "30")
    assert code == 0, output
    output = " ".join(output.split())
    assert "No subgroup gap could be tested: no grouping has two subgroups of at least 30" in output
    assert "No significant" not in output
    # At 10, only the gender label's tests can run.
    code, output = audit(model, data, out, "--min-group-size", "10", "--overwrite")
    assert code == 0, output
    output = " ".join(output.split())
    assert (
        "12 of the 18 tests could not run (fewer than two subgroups of at least 10 images to "
        "compare), by gender label × race label, race label." in output
    ), output


def test_junit_xml_names_each_gate_and_subgroup_with_the_figures(tmp_path: Path) -> None:
    groups = {"female": (200, 60, 0), "male": (200, 10, 0), "nonbinary": (4, 4, 0)}
    policy = Policy(max_error_rate_gap=0.05)
    verdict = Verdict(policy, judge(compute_statistics(records(groups)), policy))
    path = write_junit(verdict, tmp_path / "reports" / "audit.xml", "candidate")

    suite = next(iter(junitparser.JUnitXml.fromfile(str(path))))
    assert (suite.tests, suite.failures, suite.skipped) == (3, 1, 1)
    cases = {(case.classname, case.name): case for case in suite}
    failed = cases[("error_rate_gap.gender", "female")]
    assert not failed.is_passed and not failed.is_skipped
    message = failed.result[0].message
    assert "30.0 %" in message and "5.0 %" in message and "maximum 5.0 %" in message
    assert cases[("error_rate_gap.gender", "nonbinary")].is_skipped
    assert cases[("error_rate_gap.gender", "male")].is_passed


@pytest.mark.parametrize("strict", [None, True])
def test_junit_xml_says_why_equivalence_left_a_gate_unjudged(tmp_path: Path, strict: bool) -> None:
    """Skipped (or, when insufficient data fails the policy, a failure of that type), with the
    bound and the minimum detectable gap in the test case; the suite names what was required."""
    policy = Policy(**EQUIVALENT, max_flip_rate={"default": 0.1}, fail_on_insufficient_data=strict)
    statistics = compute_statistics(records(NULL_SMALL), min_group_size=10)
    path = write_junit(Verdict(policy, judge(statistics, policy)), tmp_path / "a.xml", "rc")

    suite = next(iter(junitparser.JUnitXml.fromfile(str(path))))
    assert {p.name: p.value for p in suite.properties()}["require"] == "equivalence"
    cases = {(case.classname, case.name): case for case in suite}
    unjudged = cases[("error_rate_gap.gender", "female")]
    (result,) = unjudged.result
    assert unjudged.is_skipped if strict is None else result.type == INSUFFICIENT
    why = "the data cannot rule out a gap of 10.5 points; a gap smaller than 16.6 points"
    assert why in result.message and why in result.text
    passed = cases[("flip_rate[flip].gender", "female")]  # 0 of 50 (0–7.1 %) below 10 %
    assert passed.is_passed and "the whole interval lies below the maximum" in passed.system_out


# --- the commands ------------------------------------------------------------------------------


@pytest.fixture
def tiny_run(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> Path:
    out = tmp_path / "run"
    code, output = audit(tiny_model(), small_dataset(n=24), out, "--probes", "flip,blackout")
    assert code == 0, output
    return out


def gate(run_dir: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["gate", str(run_dir), *extra])
    return result.exit_code, result.stdout, result.stderr


def test_gate_exit_codes_are_0_pass_1_fail_2_bad_input(tiny_run: Path, tmp_path: Path) -> None:
    # The untrained model gives every image the same class: one gender label is always wrong.
    error_gap = load_summary(tiny_run)["statistics"]["error_gaps"][0]
    assert error_gap["grouping"] == "gender" and error_gap["effect"] > 0.5
    assert error_gap["significant"]
    junit = tmp_path / "fail.xml"
    fails = gate(tiny_run, "--fail-on", "error_rate_gap > 0.5", "--junit-xml", str(junit), "--json")
    holds = gate(tiny_run, "--fail-on", "error_rate_gap > 1", "--json")
    assert fails[0] == 1 and json.loads(fails[1])["holds"] is False
    assert holds[0] == 0 and json.loads(holds[1])["holds"] is True
    assert next(iter(junitparser.JUnitXml.fromfile(str(junit)))).failures == 1
    assert gate(tiny_run, "--fail-on", "flip_rate > lots")[0] == 2
    assert gate(tmp_path / "no-such-run", "--fail-on", "flip_rate > 0.1")[0] == 2
    assert gate(tiny_run, "--policy", str(tmp_path / "missing.toml"))[0] == 2


def test_gate_json_reads_back_as_the_verdict_it_stores(tiny_run: Path) -> None:
    """The report reads gate.json as typed objects holding what the file holds, and says the
    verdict in the console's words; a file of another shape is refused, naming the key and the
    command that writes it again."""
    code, stdout, stderr = gate(tiny_run, "--fail-on", "error_rate_gap > 0.5", "--json")
    assert code == 1, stderr
    stored = json.loads((tiny_run / "gate.json").read_text(encoding="utf-8"))
    assert json.loads(stdout) == stored
    typed = StoredVerdict.from_json(stored)
    assert typed.holds is stored["holds"] is False
    assert typed.policy.source == stored["policy"]["source"] == "command line"
    assert [dataclasses.asdict(r) for r in typed.results] == stored["results"]
    assert len(typed.failed) == stored["counts"][FAIL] >= 1
    assert len(typed.insufficient) == stored["counts"][INSUFFICIENT]
    assert policy_text(typed) in " ".join(stderr.split())
    assert build_view(tiny_run).policy.text == policy_text(typed)  # type: ignore[union-attr]
    del stored["results"][0]["outcome"]
    (tiny_run / "gate.json").write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(RunDirError, match=r"results\[0\]\.outcome is missing; rerun `audit gate`"):
        build_view(tiny_run)


def test_gate_takes_require_on_the_command_line(tiny_run: Path) -> None:
    """Every image one class: one gender label is always wrong, a significant gap that fails
    under equivalence too; the other label's gate the data cannot settle with 12 images."""
    code, stdout, stderr = gate(
        tiny_run, "--fail-on", "error_rate_gap > 0.5", "--require", "equivalence", "--json"
    )
    verdict = json.loads(stdout)
    assert code == 1, stderr
    assert verdict["policy"]["require"] == "equivalence"
    gender = [r["outcome"] for r in verdict["results"] if r["grouping"] == "gender"]
    assert sorted(gender) == [FAIL, INSUFFICIENT]
    code, _, stderr = gate(tiny_run, "--fail-on", "error_rate_gap > 0.5", "--require", "proof")
    assert code == 2 and "'proof' is not one of" in stderr


@pytest.mark.parametrize(
    "words", [["run", "model.pt", "data"], ["gate", "runs/rc"], ["compare", "runs/a", "runs/b"]]
)
def test_every_gating_command_takes_each_require(words: list[str]) -> None:
    name, *arguments = words
    command = cli.get_command(None, name)  # type: ignore[arg-type]
    assert command is not None
    for require in REQUIRE:
        context = command.make_context(name, [*arguments, "--require", require])
        assert context.params["require"] == require


def test_output_to_a_ci_log_is_plain_text(tiny_run: Path) -> None:
    """No colour codes, cursor moves or spinners when the output is not a terminal."""
    code, _, stderr = gate(tiny_run, "--fail-on", "error_rate_gap > 0.5")
    assert code == 1
    assert "\x1b[" not in stderr and "\r" not in stderr
    assert "Policy FAILS" in stderr


def test_gate_names_with_brackets_print_as_written(tiny_run: Path, tmp_path: Path) -> None:
    """'flip_rate[blackout]' is a gate's name, not console markup to swallow."""
    policy = tmp_path / "audit.toml"
    policy.write_text("max_flip_rate = {blackout = 0.5}\nmin_group_size = 1000\n")
    code, _, stderr = gate(tiny_run, "--policy", str(policy))
    assert code == 1  # every subgroup is insufficient data: no gate judged, so it fails
    assert "flip_rate[blackout@" in " ".join(stderr.split())


def test_run_with_a_bad_policy_stops_before_the_audit(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    policy = tmp_path / "audit.toml"
    policy.write_text("max_flip_rate_gap = 'small'\n")
    out = tmp_path / "run"
    code, output = audit(tiny_model(), small_dataset(n=8), out, "--policy", str(policy))
    assert code == 2 and "max_flip_rate_gap must be a rate" in output
    assert not out.exists()


def test_two_seeded_runs_give_identical_figures(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    """Every figure of summary.json and every record agree; only the timing and paths differ."""
    model, data = tiny_model(), small_dataset(n=24)
    runs = []
    for name in ("first", "second"):
        extra = ("--seed", "7", "--method", "gradcam,lime", "--faithfulness-images", "6")
        code, output = audit(model, data, tmp_path / name, *extra)
        assert code == 0, output
        runs.append(tmp_path / name)
    first, second = (load_summary(run) for run in runs)
    for varying in ("created", "seconds"):
        first.pop(varying), second.pop(varying)
    first["config"].pop("out_dir"), second["config"].pop("out_dir")
    assert first == second
    pd.testing.assert_frame_equal(
        pd.read_parquet(runs[0] / "results.parquet"), pd.read_parquet(runs[1] / "results.parquet")
    )


# --- the demo's two models -----------------------------------------------------------------------


def failed_gates(verdict: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (r["gate"], r["grouping"], r["group"]) for r in verdict["results"] if r["outcome"] == FAIL
    }


@pytest.mark.slow
def test_the_demo_policy_holds_for_the_control_and_fails_the_biased_model(
    control_run: Path, biased_run: Path, tmp_path: Path
) -> None:
    policy = ("--policy", str(DEMO_POLICY), "--json")
    control_xml, biased_xml = tmp_path / "control.xml", tmp_path / "biased.xml"
    holds = gate(control_run, *policy, "--junit-xml", str(control_xml))
    fails = gate(biased_run, *policy, "--junit-xml", str(biased_xml))
    assert holds[0] == 0, holds[2]
    assert fails[0] == 1, fails[2]
    failed = failed_gates(json.loads(fails[1]))
    assert ("error_rate_gap", "gender", "female") in failed  # the tie-wearing women taken for men
    assert ("error_rate_gap", "gender", "male") not in failed
    control_suite = next(iter(junitparser.JUnitXml.fromfile(str(control_xml))))
    biased_suite = next(iter(junitparser.JUnitXml.fromfile(str(biased_xml))))
    assert control_suite.tests > 0 and control_suite.failures == 0
    assert biased_suite.failures == len(failed)
    failing_cases = {(c.classname, c.name) for c in biased_suite if c.result and not c.is_skipped}
    assert ("error_rate_gap.gender", "female") in failing_cases


def test_audit_gate_on_stored_results_agrees_with_audit_run_policy(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    """The untrained model's error-rate gap (one gender label always wrong) fails the gate the
    same way judged during `audit run` as afterwards by `audit gate` on the stored results."""
    out, junit = tmp_path / "run", tmp_path / "run.xml"
    policy = ("--fail-on", "error_rate_gap > 0.5")
    extra = ("--probes", "flip,blackout", *policy, "--junit-xml", str(junit))
    code, output = audit(tiny_model(), small_dataset(n=24), out, *extra)
    assert code == 1, output
    assert "Policy FAILS" in output
    from_run = json.loads((out / "gate.json").read_text(encoding="utf-8"))
    html = (out / "report.html").read_text(encoding="utf-8")  # rendered after gate.json
    first_screen = html[html.index('id="verdict"') : html.index('class="verdict ')]
    assert str(escape(policy_text(StoredVerdict.from_json(from_run)))) in first_screen
    code, stdout, stderr = gate(out, *policy, "--json")
    assert code == 1, stderr
    assert json.loads(stdout) == from_run
    assert next(iter(junitparser.JUnitXml.fromfile(str(junit)))).failures == len(
        failed_gates(from_run)
    )
