"""An inpainted blackout removes what the model keys on without painting a new object.

A black square over the tie corrects the biased model's misled women, but a black square is an
object too: on the control model, which never learnt the tie, it still breaks predictions where
the model looks (shoulders, chest), which no random placement of it does. The inpaint fill makes
the region disappear, so it must correct the misled women at least as often as black does while
disturbing the control model less, and the control's excess over the placebo must then show no
gap between the gender labels: what the black fill showed there was the edit, not reliance,
and the report says so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from auditor.demo import DemoWorld
from auditor.records import PLACEBO
from auditor.run_summary import ExcessTest
from auditor.store import RunStore
from reports.findings import Finding, findings

pytestmark = pytest.mark.slow

BLACK, INPAINT = "blackout", "blackout(fill=inpaint)"


def _guided(world: DemoWorld, run_dir: Path) -> pd.DataFrame:
    """Grad-CAM-guided rows of a demo run, joined to the generator's ground truth: which
    images wear the tie (the audit itself never reads that column)."""
    records = pd.read_parquet(run_dir / "results.parquet")
    truth = pd.read_csv(world.audit_dir / "labels.csv", usecols=["file", "tie"])
    joined = records.merge(truth, left_on="image_id", right_on="file", validate="many_to_one")
    return joined[(joined["region_source"] != PLACEBO) & (joined["method"] == "gradcam")]


def _correction_rate(rows: pd.DataFrame, probe: str) -> float:
    """Among tie-wearing images the model gets wrong: how often the edit corrects them."""
    of_probe = rows[rows["probe"] == probe]
    misled = of_probe[(of_probe["tie"] == 1) & (of_probe["orig_pred"] != of_probe["label"])]
    assert len(misled) >= 20, "the biased model misleads enough tie-wearers to compare fills"
    return float((misled["direction"] == "correction").mean())


def _flip_rate(rows: pd.DataFrame, probe: str) -> float:
    return float(rows.loc[rows["probe"] == probe, "flipped"].mean())


def test_inpaint_corrects_the_tie_as_often_as_black_and_harms_the_control_less(
    demo_world: DemoWorld, biased_run: Path, control_run: Path
) -> None:
    biased, control = _guided(demo_world, biased_run), _guided(demo_world, control_run)
    assert _correction_rate(biased, INPAINT) >= _correction_rate(biased, BLACK)
    assert _flip_rate(control, INPAINT) < _flip_rate(control, BLACK) / 2


def _gender_excess(run_dir: Path, probe: str) -> ExcessTest:
    summary = RunStore.open(run_dir).summary()
    return next(
        t
        for t in summary.statistics.excess
        if t.grouping == "gender" and t.probe == probe and t.method == "gradcam"
    )


def test_the_inpainted_excess_finds_the_tie_and_no_gap_on_the_control(
    biased_run: Path, control_run: Path
) -> None:
    biased = _gender_excess(biased_run, INPAINT)
    assert biased.significant and biased.highest == "female"
    control = _gender_excess(control_run, INPAINT)
    assert not control.significant and control.p_adjusted is not None
    assert control.p_adjusted > 0.05
    # Margin-adjusted too: at equal confidence, corrected among the run's equal-confidence tests.
    assert control.adjusted_p_adjusted is not None and control.adjusted_p_adjusted > 0.05


def _excess_findings(run_dir: Path) -> list[Finding]:
    return [
        f
        for f in findings(RunStore.open(run_dir).summary())
        if f.kind in ("excess_flip", "paint_or_reliance", "painted_edit")
    ]


def test_a_black_fill_gap_its_inpainted_twin_lacks_is_reported_as_edit_harm(
    biased_run: Path, control_run: Path
) -> None:
    """On the control, the black square's excess gap is significant (the square is an object
    where the model looks) but the same regions inpainted show none: the finding says edit harm
    and names the twin where the paired test blames the paint (by gender label, at least), and
    that the two are not told apart where it cannot; no finding of the control claims reliance
    on its attributed regions. On the biased model, where the inpainted twin finds the tie too,
    reliance is what it says."""
    control = _excess_findings(control_run)
    assert not [f for f in control if f.kind == "excess_flip"], [f.text for f in control]
    black = [f for f in control if f.probe == BLACK]
    assert any(f.kind == "painted_edit" and f.grouping == "gender" for f in black), black
    for finding in black:
        if finding.kind == "paint_or_reliance":
            assert finding.text.startswith("Reliance or the paint's own effect, not told apart")
            continue
        assert finding.kind == "painted_edit", finding.text
        assert finding.text.startswith("Edit harm, not evidence of reliance")
        assert "inpainted from its surroundings" in finding.text
        assert "shows no significant difference on the same regions" in finding.text
        assert "could not reliably have been seen here)" in finding.text  # the twin's power
        # and the paired test that the paint's gap exceeds the twin's, which alone blames it
        assert ", and the paint's gap exceeds it by " in finding.text
    relied = [f for f in _excess_findings(biased_run) if f.probe == INPAINT]
    assert relied and all(f.kind == "excess_flip" for f in relied)
    assert all(f.text.startswith("The model relies on its attributed region") for f in relied)
