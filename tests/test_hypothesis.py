"""`audit hypothesis`: a researcher's claim, run on every matching image against a control.

Specs are validated with messages that name the bad key; the image filter is parsed, never run
as code; the verdict's statistics agree with an independent computation and a published worked
example; an image that cannot take an edit is reported, not dropped; and every example shipped
with the package gives the verdict it states on the demo world.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import auditor.demo
from auditor.cli import cli
from auditor.demo import DemoWorld
from auditor.errors import ConfigError, RunDirError
from auditor.executors import Execution
from auditor.hypothesis import RunOptions, decide, load_spec, run_hypothesis
from auditor.hypothesis.document import read_hypothesis
from auditor.hypothesis.step import TrialStep
from auditor.hypothesis.verdict import min_trials
from auditor.hypothesis.where import parse_where, typed
from auditor.plan import PlannedBatch

SHIPPED = sorted((Path(auditor.demo.__file__).parent / "hypotheses").glob("*.toml"))

VALID: dict[str, Any] = {
    "name": "test",
    "images": {"where": 'gender == "female"'},
    "region": {"kind": "attribution", "area": 0.1},
    "probe": {"name": "blackout"},
    "success": {"kind": "becomes_label"},
    "control": {"kind": "random_region"},
}


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    """Write ``spec`` (top-level keys, then one table per dict value) as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in spec.items() if not isinstance(v, dict)]
    for table, values in spec.items():
        if isinstance(values, dict):
            lines += [f"[{table}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def changed(**sections: Any) -> dict[str, Any]:
    """VALID with whole sections or top-level keys replaced; None removes one."""
    spec = {**VALID, **sections}
    return {k: v for k, v in spec.items() if v is not None}


# --- the spec ------------------------------------------------------------------------------


def test_a_valid_spec_reads_with_its_defaults(tmp_path: Path) -> None:
    """Unstated keys take documented defaults: seed 0, alpha 0.05, no expectation, the model's
    own attribution method (resolved when the model is known)."""
    spec = load_spec(write_spec(tmp_path / "s.toml", VALID))
    assert (spec.seed, spec.alpha, spec.expect) == (0, 0.05, None)
    assert spec.edit.region.kind == "attribution" and spec.edit.region.method is None
    assert spec.where is not None and spec.where.columns == {"gender"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (changed(region=None), "the [region] table is missing"),
        (changed(region={"kind": "blob"}), "[region] kind is 'blob'"),
        (changed(region={"kind": "attribution", "arae": 0.1}), "did you mean 'area'"),
        (changed(region={"kind": "attribution", "area": 0.9}), "[region] area must be a number"),
        (changed(region={"kind": "attribution", "method": "gradkam"}), "did you mean 'gradcam'"),
        (changed(region={"kind": "box", "area": 0.1}), "unknown key 'area' for kind 'box'"),
        (changed(region={"kind": "box", "box": [0.5, 0, 0.2, 1]}), "[region] box must be"),
        (changed(region={"kind": "box_column", "column": "tie"}), "[region] column must name"),
        (changed(region={"kind": "face_region", "name": "ear"}), "[region] name is 'ear'"),
        (changed(probe={"name": "blackoot"}), "did you mean 'blackout'"),
        (changed(probe={"name": "flip"}), "edits the whole image"),
        (changed(region={"kind": "whole_image"}), "edits a region"),
        (changed(success={"kind": "probability_drop", "at_least": 0.2}), "[success] class is"),
        (
            changed(success={"kind": "probability_drop", "class": "male", "at_least": 1.5}),
            "[success] at_least must be a number between 0 and 1",
        ),
        (
            changed(region={"kind": "whole_image"}, probe={"name": "flip"}),
            "'random_region' needs a hypothesis region",
        ),
        (
            changed(control={"kind": "spec", "path": "nowhere.toml"}),
            "[control] path 'nowhere.toml' does not exist",
        ),
        (changed(control={"kind": "spec", "path": "s.toml"}), "points at this spec itself"),
        (changed(expect="yes"), "expect is 'yes'"),
        (changed(alhpa=0.05), "did you mean 'alpha'"),
        (changed(alpha=0), "alpha must be a number between 0 and 1"),
        (changed(seed=-1), "seed must be a non-negative integer"),
        (changed(images={"where": "gender =="}), "[images] where is not a valid expression"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_key(
    tmp_path: Path, spec: dict[str, Any], message: str
) -> None:
    """Every bad key or value raises a ConfigError (exit 2 in the CLI) naming the file and the
    key, and, for a misspelling, the closest allowed name."""
    path = write_spec(tmp_path / "s.toml", spec)
    with pytest.raises(ConfigError) as error:
        load_spec(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_a_spec_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("name = 'unterminated\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_spec(path)


def test_a_spec_control_contributes_only_its_edit(tmp_path: Path) -> None:
    """A control spec needs only [region] and [probe]; its path is relative to the spec."""
    (tmp_path / "controls").mkdir()
    write_spec(
        tmp_path / "controls" / "corner.toml",
        {"region": {"kind": "box", "box": [0, 0, 0.1, 0.1]}, "probe": {"name": "white_patch"}},
    )
    spec = load_spec(
        write_spec(
            tmp_path / "s.toml", changed(control={"kind": "spec", "path": "controls/corner.toml"})
        )
    )
    assert spec.control.edit is not None
    assert spec.control.edit.probe == "white_patch"
    assert spec.control.edit.region.box == (0.0, 0.0, 0.1, 0.1)


# --- the image filter ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "__import__('pathlib').Path('PWNED').touch()",
        "gender.upper() == 'FEMALE'",
        "gender == open('PWNED', 'w').name",
        "(lambda: 1)() == 1",
        "gender[0] == 'f'",
        "__class__ == 'x'",
        "[x for x in gender] == []",
        "gender",
        "tie == 1 if True else 0",
        '["female"] == gender',
        'gender is "female"',
        'gender in ["female"] == tie',
    ],
)
def test_the_filter_refuses_anything_but_comparisons(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls, attributes, subscripts, lambdas, comprehensions and dunder names are refused when
    the spec is read, before anything is evaluated: the file they would create never appears."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"\[images\] where"):
        parse_where(where)
    assert not (tmp_path / "PWNED").exists()


@pytest.fixture
def table() -> pd.DataFrame:
    """labels.csv as read (all text), typed as the filter sees it, plus a prediction column."""
    raw = pd.DataFrame(
        {
            "gender": ["female", "female", "male", "male", "female"],
            "race": ["A", "B", "C", "A", ""],
            "tie": ["1", "0", "1", "", "1"],
        }
    )
    return typed(raw).assign(pred=["male", "female", "male", "male", "female"])


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ('gender == "female" and pred == "male"', [True, False, False, False, False]),
        ("tie == 1", [True, False, True, False, True]),
        ('not tie == 1 or race in ["B", "C"]', [False, True, True, True, False]),
        ("0 < tie <= 1 and race != 'A'", [False, False, True, False, True]),
        ('race not in ("A",)', [False, True, True, False, True]),
    ],
)
def test_the_filter_selects_as_pandas_would(
    table: pd.DataFrame, where: str, expected: list[bool]
) -> None:
    """Numbers compare as numbers; an empty cell matches no comparison but a negated one."""
    assert parse_where(where).select(table).tolist() == expected


def test_an_unknown_column_lists_the_columns(table: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match=r"unknown column.*'gnder'.*columns: gender, race, tie"):
        parse_where('gnder == "female"').select(table)


def test_text_compared_with_a_number_is_refused(table: pd.DataFrame) -> None:
    """`tie == "1"` on a column of numbers would quietly select nothing; it is an error."""
    with pytest.raises(ConfigError, match="compares text with numbers"):
        parse_where('tie == "1"').select(table)


# --- the verdict ---------------------------------------------------------------------------


def _outcomes(both: int, hypothesis_only: int, control_only: int, neither: int) -> tuple:
    hypothesis = [True] * both + [True] * hypothesis_only + [False] * (control_only + neither)
    control = [True] * both + [False] * hypothesis_only + [True] * control_only + [False] * neither
    return hypothesis, control


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def test_the_verdict_agrees_with_an_independent_computation() -> None:
    """Rates and Wilson intervals, the exact one-sided McNemar p (the binomial tail of the
    discordant pairs) and the effect, recomputed from their formulas."""
    verdict = decide(*_outcomes(3, 9, 2, 6), alpha=0.05)
    tail = sum(math.comb(11, k) for k in range(9, 12)) / 2**11
    assert verdict.trials == 20
    assert (verdict.both, verdict.hypothesis_only, verdict.control_only, verdict.neither) == (
        3, 9, 2, 6,
    )  # fmt: skip
    assert verdict.hypothesis.k == 12 and verdict.control.k == 5
    assert (verdict.hypothesis.ci_low, verdict.hypothesis.ci_high) == pytest.approx(_wilson(12, 20))
    assert verdict.p_value == pytest.approx(tail)
    assert verdict.effect == pytest.approx(7 / 20)
    assert verdict.verdict == "supported"  # p = 0.033 < 0.05
    assert verdict.effect_ci is not None and verdict.effect_ci[0] < 0.35 < verdict.effect_ci[1]


def test_a_control_that_beats_the_edit_is_no_support() -> None:
    """The test is one-sided: a control that succeeds more often gives p near 1."""
    verdict = decide(*_outcomes(0, 1, 12, 7), alpha=0.05)
    assert verdict.verdict == "not supported"
    assert verdict.p_value is not None and verdict.p_value > 0.99
    assert verdict.effect is not None and verdict.effect < 0


def test_no_discordant_pair_gives_p_one() -> None:
    verdict = decide(*_outcomes(4, 0, 0, 6), alpha=0.05)
    assert verdict.p_value == 1.0 and verdict.verdict == "not supported"


def test_too_few_trials_is_insufficient_data() -> None:
    """With n trials even a perfect result gives p = 0.5**n; below log2(1/alpha) trials no
    result can be significant, so the verdict says so instead of "not supported"."""
    assert [min_trials(a) for a in (0.05, 0.01, 0.5)] == [5, 7, 2]
    assert decide(*_outcomes(0, 4, 0, 0), alpha=0.05).verdict == "insufficient data"
    assert decide(*_outcomes(0, 5, 0, 0), alpha=0.05).verdict == "supported"
    assert decide([], [], alpha=0.05).verdict == "insufficient data"


# --- the engine, through the CLI -----------------------------------------------------------


@pytest.fixture
def boxed_dataset(small_dataset: Callable[..., Path]) -> Path:
    """The small synthetic dataset with a ``tie_box`` on the first 8 of 24 rows only."""
    root = small_dataset(n=24)
    frame = pd.read_csv(root / "labels.csv")
    frame["tie_box"] = [("10,40,30,60" if i < 8 else "") for i in range(len(frame))]
    frame.to_csv(root / "labels.csv", index=False)
    return root


def _run(spec: Path, model: Path, data: Path, out: Path, *extra: str) -> tuple[int, str]:
    args = ["hypothesis", str(spec), str(model), str(data), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--label-column", "gender", *extra])
    return result.exit_code, result.output


BOX_SPEC = changed(
    images=None,
    region={"kind": "box_column", "column": "tie_box"},
    success={"kind": "prediction_changes"},
)


def test_an_image_without_a_region_is_reported_not_dropped(
    boxed_dataset: Path, tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """Every selected image gets a row in trials.parquet; those that could not take the edit
    carry the reason there, in hypothesis.json (counted and listed) and on the page."""
    spec = write_spec(tmp_path / "box.toml", BOX_SPEC)
    code, output = _run(spec, tiny_model(), boxed_dataset, tmp_path / "out")
    assert code == 0, output
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    document = json.loads((tmp_path / "out" / "hypothesis.json").read_text())
    reason = "hypothesis region: no usable tie_box in labels.csv for this image"
    assert len(trials) == 24
    assert (trials["skip_reason"] == reason).sum() == 16
    assert trials.loc[trials["skip_reason"].isna(), "hypothesis_success"].notna().all()
    assert document["selection"] == {
        **document["selection"],
        "selected": 24,
        "trials": 8,
        "skipped": 16,
        "skips_by_reason": {reason: 16},
    }
    assert len(document["selection"]["skipped_images"]) == 16
    read_back = read_hypothesis(tmp_path / "out")  # what the page reads: the same figures
    assert (read_back.selection.selected, read_back.verdict.trials) == (24, 8)
    assert read_back.selection.skipped_images[0].reason == reason
    assert read_back.verdict.verdict == document["verdict"]["verdict"]
    assert len(document["model"]["sha256"]) == 64
    assert len(document["dataset"]["labels_csv_sha256"]) == 64
    page = (tmp_path / "out" / "hypothesis.html").read_text()
    assert reason in page and document["verdict"]["verdict"] in page.lower()


def test_results_do_not_depend_on_the_batch(
    boxed_dataset: Path, tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """Random control regions are seeded per image: batch size 1 and 32 give the same rows."""
    spec = write_spec(tmp_path / "box.toml", BOX_SPEC)
    model = tiny_model()
    frames = []
    for size in ("1", "32"):
        code, output = _run(spec, model, boxed_dataset, tmp_path / size, "--batch-size", size)
        assert code == 0, output
        frames.append(pd.read_parquet(tmp_path / size / "trials.parquet"))
    pd.testing.assert_frame_equal(frames[0], frames[1], rtol=1e-5)
    assert frames[0]["control_x0"].notna().sum() == 8


def test_a_hypothesis_run_resumes_and_refuses_to_clobber(
    boxed_dataset: Path,
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hypothesis is stored batch by batch like an audit: a run stopped after two batches
    resumes with only the rest and ends with the uninterrupted run's trials and verdict; a
    directory holding a run is refused without --resume or --overwrite."""
    spec_path = write_spec(tmp_path / "box.toml", {**BOX_SPEC, "images": {"where": "p_male >= 0"}})
    model = tiny_model()
    code, output = _run(spec_path, model, boxed_dataset, tmp_path / "whole", "--batch-size", "4")
    assert code == 0, output
    code, output = _run(spec_path, model, boxed_dataset, tmp_path / "whole", "--batch-size", "4")
    assert code == 2 and "--resume" in output and "--overwrite" in output

    options = RunOptions(
        model_path=model,
        dataset_dir=boxed_dataset,
        out_dir=tmp_path / "cut",
        label_column="gender",
        batch_size=4,
    )
    real_step = TrialStep.__call__
    calls: list[str] = []

    def two_then_crash(step: TrialStep, batch: PlannedBatch) -> Any:
        if len(calls) == 2:
            raise RuntimeError("killed")
        calls.append(batch.batch_id)
        return real_step(step, batch)

    monkeypatch.setattr(TrialStep, "__call__", two_then_crash)
    with pytest.raises(RuntimeError, match="killed"):
        run_hypothesis(load_spec(spec_path), options)
    assert not (tmp_path / "cut" / "manifest.json").exists()
    calls.clear()
    monkeypatch.setattr(
        TrialStep, "__call__", lambda s, b: calls.append(b.batch_id) or real_step(s, b)
    )
    result = run_hypothesis(load_spec(spec_path), options, Execution(resume=True))
    assert len(calls) == 4  # 24 images in batches of 4: the 2 stored are not run again
    resumed = pd.read_parquet(tmp_path / "cut" / "trials.parquet")
    whole = pd.read_parquet(tmp_path / "whole" / "trials.parquet")
    pd.testing.assert_frame_equal(resumed, whole)
    assert list(resumed["image_id"]) == sorted(resumed["image_id"])
    document = json.loads((tmp_path / "whole" / "hypothesis.json").read_text())
    assert result.verdict == document["verdict"]["verdict"]


def test_a_hypothesis_run_is_read_only_when_sealed_and_of_this_schema(
    boxed_dataset: Path, tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "box.toml", BOX_SPEC)
    out = tmp_path / "out"
    code, output = _run(spec, tiny_model(), boxed_dataset, out)
    assert code == 0, output
    document = json.loads((out / "hypothesis.json").read_text(encoding="utf-8"))
    (out / "hypothesis.json").write_text(json.dumps({**document, "schema_version": 0}))
    with pytest.raises(RunDirError, match=r"hypothesis schema 0, this auditor reads hypo"):
        read_hypothesis(out)
    (out / "manifest.json").unlink()
    with pytest.raises(RunDirError, match=r"unfinished run .* `audit hypothesis \.\.\. --resume`"):
        read_hypothesis(out)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_hypothesis_on_ray_with_two_workers_gives_the_local_trials(
    boxed_dataset: Path, tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """The trials (attribution-placed edits against seeded random controls) and the verdict do
    not depend on where the batches ran."""
    import ray  # the README's test command and .ci/run install the [ray] extra

    spec = write_spec(tmp_path / "s.toml", changed(images={"where": "p_male >= 0"}))
    model = tiny_model()
    runs = {"local": ("--engine", "local"), "ray": ("--engine", "ray", "--workers", "2")}
    for name, flags in runs.items():
        code, output = _run(
            spec, model, boxed_dataset, tmp_path / name, "--batch-size", "4", *flags
        )
        assert code == 0, output
    local, remote = (read_hypothesis(tmp_path / name) for name in runs)
    assert local.verdict == remote.verdict and local.selection == remote.selection
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "local" / "trials.parquet"),
        pd.read_parquet(tmp_path / "ray" / "trials.parquet"),
    )
    ray.shutdown()


def test_an_unmet_expectation_exits_1(
    boxed_dataset: Path, tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """With 4 images boxed no result can reach p < 0.05, so the verdict is 'insufficient
    data'; a spec expecting 'supported' exits 1 and the console says why."""
    frame = pd.read_csv(boxed_dataset / "labels.csv")
    frame.loc[4:, "tie_box"] = np.nan
    frame.to_csv(boxed_dataset / "labels.csv", index=False)
    spec = write_spec(tmp_path / "box.toml", {**BOX_SPEC, "expect": "supported"})
    code, output = _run(spec, tiny_model(), boxed_dataset, tmp_path / "out")
    assert code == 1, output
    assert "Insufficient data" in output and "expects 'supported'" in output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (changed(images={"where": 'colour == "red"'}), "unknown column(s) 'colour'"),
        (
            changed(success={"kind": "probability_drop", "class": "cat", "at_least": 0.1}),
            "[success] class 'cat' is not a class of the model",
        ),
        (changed(region={"kind": "box_column", "column": "hat_box"}), "column 'hat_box' is not"),
        (changed(region={"kind": "attribution", "area": 2}), "[region] area must be"),
    ],
)
def test_a_spec_that_does_not_fit_the_data_exits_2(
    boxed_dataset: Path,
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    spec: dict[str, Any],
    message: str,
) -> None:
    code, output = _run(
        write_spec(tmp_path / "s.toml", spec), tiny_model(), boxed_dataset, tmp_path / "out"
    )
    assert code == 2, output
    assert message in " ".join(output.split())


# --- the shipped examples on the demo world ------------------------------------------------


def test_every_shipped_example_states_its_expected_verdict() -> None:
    assert len(SHIPPED) >= 4
    for path in SHIPPED:
        assert load_spec(path).expect is not None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("spec", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_shipped_example_gives_its_expected_verdict(
    spec: Path, demo_world: DemoWorld, tmp_path: Path
) -> None:
    """Each example under auditor/demo/hypotheses/ runs on the biased demo model, exits 0
    (the verdict is the one it expects) and writes a page that leads with that verdict."""
    code, output = _run(spec, demo_world.biased_model, demo_world.audit_dir, tmp_path)
    document = json.loads((tmp_path / "hypothesis.json").read_text())
    expected = load_spec(spec).expect
    assert code == 0, output
    assert document["verdict"]["verdict"] == expected
    assert document["expectation_met"] is True
    page = (tmp_path / "hypothesis.html").read_text()
    assert f'<p class="verdict {expected.replace(" ", "-")}">{expected.capitalize()}' in page
