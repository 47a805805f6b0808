"""The audit must find the necktie planted in the biased model, and must not flag the control."""

from __future__ import annotations

import json
from pathlib import Path

import junitparser
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from markupsafe import escape
from PIL import Image
from torchvision import transforms

from auditor.demo import DemoWorld
from auditor.junit import write_junit
from auditor.policy import Policy, judge_run
from auditor.store import RunStore
from reports.findings import HEADLINES, findings, headlines
from tests.conftest import BIASED_METHODS, DemoCommand, load_summary

pytestmark = pytest.mark.slow


def _gender_gaps(summary: dict) -> list[dict]:
    stats = summary["statistics"]
    return [t for t in [*stats["error_gaps"], *stats["flip_gaps"]] if t["grouping"] == "gender"]


def _paired(summary: dict, probe: str) -> dict:
    return next(t for t in summary["statistics"]["paired"] if t["probe"] == probe)


def test_guided_blackout_beats_placebo_on_biased_model(biased_run: Path) -> None:
    blackout = _paired(load_summary(biased_run), "blackout")
    assert blackout["guided"]["rate"] > blackout["placebo"]["rate"]
    assert blackout["p_adjusted"] < 0.01


def test_gender_gap_is_significant_on_biased_model(biased_run: Path) -> None:
    significant = [t for t in _gender_gaps(load_summary(biased_run)) if t["significant"]]
    assert significant, "the planted necktie cue should open a gender-label gap"
    error = next(t for t in significant if t["kind"] == "error_rate")
    assert error["highest"] == "female"  # women wearing a tie are taken for men
    assert error["p_adjusted"] < 0.01


def test_control_model_shows_no_gender_gap_in_error_rate(control_run: Path) -> None:
    error = next(t for t in _gender_gaps(load_summary(control_run)) if t["kind"] == "error_rate")
    assert error["p_adjusted"] > 0.05
    assert not error["significant"]


def _blackout_gender_gap(summary: dict) -> dict:
    return next(t for t in _gender_gaps(summary) if t["probe"] == "blackout")


def test_cue_driven_flip_gap_appears_only_with_the_cue(biased_run: Path, control_run: Path) -> None:
    """Blackout corrects tie-wearing women, so the biased model's women flip more often; the
    control model, which never learned the tie, shows no such gap."""
    biased = _blackout_gender_gap(load_summary(biased_run))
    assert biased["significant"] and biased["highest"] == "female"
    control = _blackout_gender_gap(load_summary(control_run))
    assert not (control["significant"] and control["highest"] == "female")


def _excess_gaps(summary: dict, probe: str) -> list[dict]:
    return [
        t
        for t in summary["statistics"]["excess"]
        if t["grouping"] == "gender" and t["probe"] == probe
    ]


def test_the_biased_model_relies_on_its_regions_more_for_women(biased_run: Path) -> None:
    """Guided minus placebo on the same images: the tie's edits correct misled women, which
    no edit elsewhere does, so the excess flip rate is higher for the female label under every
    region probe and method, and significantly so, after Holm over a run that also tests every
    probe's control, for at least one region probe of each method. Which probe reaches
    significance moves with the trained weights (they differ with the CPU's instruction set):
    the black square also breaks men's predictions where the model looks, which narrows its gap,
    and its inpainted twin or the white patch then carries it."""
    summary = load_summary(biased_run)
    probes = ("blackout", "blackout(fill=inpaint)", "white_patch")
    excess = [t for probe in probes for t in _excess_gaps(summary, probe)]
    assert len(excess) == len(probes) * len(BIASED_METHODS)
    assert all(t["highest"] == "female" and t["effect"] > 0 for t in excess)
    for method in BIASED_METHODS:
        found = [t for t in excess if t["method"] == method and t["significant"]]
        assert found, f"no region probe's excess gap is significant for {method}"
        assert all(t["effect_ci"][0] > 0 for t in found)


def test_the_control_white_patch_excess_is_no_gap_at_any_confidence(control_run: Path) -> None:
    (white_patch,) = _excess_gaps(load_summary(control_run), "white_patch")
    assert not white_patch["significant"] and white_patch["p_value"] > 0.05
    assert white_patch["adjusted_p_value"] > 0.05
    assert white_patch["effect_ci"][0] < 0 < white_patch["effect_ci"][1]


def test_no_headline_presents_a_raw_flip_gap_as_reliance(
    biased_run: Path, control_run: Path
) -> None:
    """Region probes speak through their excess over the placebo; the probes without one (the
    mirror flip, the hair crop) say their gap is edit sensitivity."""
    for run_dir in (biased_run, control_run):
        for finding in headlines(findings(RunStore.open(run_dir).summary())):
            if finding.kind == "flip_rate":
                assert finding.probe in ("flip", "hair_crop"), finding.text
                assert finding.text.startswith("Edit sensitivity, not evidence of reliance")


def test_an_equivalence_gate_fails_the_biased_model_and_junit_says_which(
    biased_run: Path, control_run: Path, tmp_path: Path
) -> None:
    """``require = "equivalence"`` on the error-rate gap: the biased model fails for the
    female label (its 17-point gap is shown, not only unruled-out), the control's 600 images
    cannot prove a gap below 5 points either way and leave it "insufficient data"."""
    policy = Policy(max_error_rate_gap=0.05, require="equivalence", groupings=("gender",))
    biased = judge_run(biased_run, policy)
    outcomes = {r.group: r.outcome for r in biased.results}
    assert outcomes["female"] == "fail" and not biased.holds
    path = write_junit(biased, tmp_path / "junit.xml", "biased")
    cases = {case.name: case for case in next(iter(junitparser.JUnitXml.fromfile(str(path))))}
    assert not cases["female"].is_passed and not cases["female"].is_skipped
    control = judge_run(control_run, policy)
    assert {r.outcome for r in control.results} <= {"pass", "insufficient data"}


def test_report_states_the_planted_effect_on_its_first_screen(biased_run: Path) -> None:
    """The first screen holds the planted effect's findings, found by what they are (kind,
    probe, groups, direction), not by which of the near-equal methods' sentences leads; the
    error-rate gap, the harm itself, leads, and the verdict names it."""
    summary = load_summary(biased_run)
    first = headlines(findings(RunStore.open(biased_run).summary()))
    error = [f for f in first if f.kind == "error_rate" and f.grouping == "gender"]
    assert [(f.highest, f.lowest) for f in error] == [("female", "male")]  # women misled by ties
    assert first[0] == error[0]
    blackout = [f for f in first if f.kind == "guided_vs_placebo" and f.probe == "blackout"]
    assert len(blackout) == 1
    paired = next(t for t in summary["statistics"]["paired"] if t["id"] == blackout[0].test_id)
    assert paired["guided"]["rate"] > paired["placebo"]["rate"]
    html = (biased_run / "report.html").read_text(encoding="utf-8")
    verdict = html[html.index('id="verdict"') : html.index('class="findings headlines"')]
    assert (
        str(escape("Error-rate gap found: the model is wrong more often for gender label 'female'"))
        in verdict
    )
    start = html.index('class="findings headlines"')
    first_screen = html[start : html.index("</ol>", start)]
    for finding in (*error, *blackout):
        assert str(escape(finding.text)) in first_screen
    assert first_screen.count("<li>") == len(first) <= HEADLINES  # one per kind and probe


def test_control_report_says_no_error_gap(control_run: Path) -> None:
    html = (control_run / "report.html").read_text(encoding="utf-8")
    findings = html[html.index('id="verdict"') : html.index('id="errors"')]
    assert "Error rate by gender label: no significant difference" in findings
    assert "error rate differs by gender label" not in findings
    verdict = findings[: findings.index('class="findings headlines"')]
    assert "No error-rate gap found" in verdict and "Error-rate gap found" not in verdict


@pytest.mark.parametrize("method", BIASED_METHODS)
def test_attribution_region_finds_the_tie_on_misled_women(
    demo_world: DemoWorld, biased_run: Path, method: str
) -> None:
    """Where the biased model took a tie-wearing woman for a man, each CAM's region covers the
    tie, and blacking it out corrects the prediction."""
    truth = pd.read_csv(demo_world.audit_dir / "labels.csv")
    results = pd.read_parquet(biased_run / "results.parquet")
    guided = results[
        (results["probe"] == "blackout")
        & (results["region_source"] == "attribution")
        & (results["method"] == method)
    ]
    misled = guided.merge(truth, left_on="image_id", right_on="file")
    misled = misled[
        (misled["gender"] == "female") & (misled["tie"] == 1) & (misled["orig_pred"] == "male")
    ]
    assert len(misled) >= 20

    def overlaps(row: pd.Series) -> bool:
        x0, y0, x1, y1 = map(int, row["tie_box"].split(","))
        return (
            row["region_x0"] < x1
            and x0 < row["region_x1"]
            and row["region_y0"] < y1
            and y0 < row["region_y1"]
        )

    share = misled.apply(overlaps, axis=1).mean()
    assert share > 0.8
    corrected = (misled["direction"] == "correction").mean()
    assert corrected > 0.5


def test_original_predictions_equal_an_independent_forward_pass(
    demo_world: DemoWorld, biased_run: Path
) -> None:
    """No preprocessing drift: torchvision's transforms on the raw files give the same outputs."""
    meta = json.loads(demo_world.biased_model.with_suffix(".json").read_text())
    model = timm.create_model(meta["arch"], num_classes=2)
    model.load_state_dict(torch.load(demo_world.biased_model, weights_only=True))
    model.eval()
    preprocess = transforms.Compose(
        [
            transforms.Resize(
                tuple(meta["input_size"]), interpolation=transforms.InterpolationMode.BILINEAR
            ),
            transforms.ToTensor(),
            transforms.Normalize(meta["mean"], meta["std"]),
        ]
    )
    results = pd.read_parquet(biased_run / "results.parquet")
    per_image = (
        results[results["skip_reason"].isna()].drop_duplicates("image_id").set_index("image_id")
    )
    files = sorted(per_image.index)
    batch = torch.stack(
        [preprocess(Image.open(demo_world.audit_dir / f).convert("RGB")) for f in files]
    )
    with torch.no_grad():
        expected = torch.softmax(model(batch), dim=1).numpy()
    recorded = np.stack(per_image.loc[files, "orig_probs"].to_numpy())
    np.testing.assert_allclose(recorded, expected, atol=1e-6)
    assert list(per_image.loc[files, "orig_pred"]) == [
        meta["classes"][i] for i in expected.argmax(1)
    ]


def test_demo_command_audits_both_models(demo_command: DemoCommand) -> None:
    """README command 1 after the install: `audit demo` (reusing the session's trained world)."""
    out = demo_command.out_dir
    for name in ("biased", "control"):
        assert (out / name / "report.html").is_file()
        assert (out / name / "results.parquet").is_file()
    holds = {
        name: json.loads((out / name / "gate.json").read_text(encoding="utf-8"))["holds"]
        for name in ("biased", "control")
    }
    assert holds == {"biased": False, "control": True}  # judged by the demo's policy
    assert "Blacking out the attribution region (gradcam) changes" in " ".join(
        demo_command.output.split()
    )


BLACK_BOX = '''
import numpy as np
import timm
import torch

_network = timm.create_model("test_resnet", num_classes=2)
_network.load_state_dict(torch.load({weights!r}, weights_only=True))
_network.eval()


def predict(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> P(female), P(male): all a hosted model would tell an auditor."""
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        return torch.softmax(_network(x), dim=1).numpy()
'''


def test_black_box_audit_finds_the_planted_cue(demo_world: DemoWorld, tmp_path: Path) -> None:
    """The biased model seen only through a prediction function (the Gender Shades setting):
    RISE places the regions, and the audit finds what the Grad-CAM audit finds."""
    from auditor.attribution import AttributionOptions
    from auditor.config import AuditConfig
    from auditor.pipeline import run_audit

    function = tmp_path / "hosted.py"
    function.write_text(BLACK_BOX.format(weights=str(demo_world.biased_model)))
    config = AuditConfig(
        model_path=None,
        predict=f"{function}:predict",
        dataset_dir=demo_world.audit_dir,
        out_dir=tmp_path / "run",
        label_column="gender",
        meta_overrides={"classes": "female,male", "input_size": "96"},
        probes=("blackout",),
        faithfulness_images=0,
        cues=False,
        attribution=AttributionOptions(rise_masks=64),
    )
    summary = load_summary(run_audit(config))
    assert summary["model"]["kind"] == "function"
    blackout = _paired(summary, "blackout")
    assert blackout["method"] == "rise"
    assert blackout["guided"]["rate"] > blackout["placebo"]["rate"]
    assert blackout["p_adjusted"] < 0.01
    error = next(t for t in _gender_gaps(summary) if t["kind"] == "error_rate")
    assert error["significant"] and error["highest"] == "female"
