"""Every figure README.md quotes from the demo is the one a fresh `audit demo` gives.

A newcomer runs README's first command and compares. So each quoted figure is recomputed here
from the runs that `audit demo` (the ``demo_command`` fixture) writes, and from the hypothesis
and comparison commands README shows on them; a README that drifts from the tool fails here
with the sentence it should now say.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import auditor.demo
from auditor.cli import cli
from auditor.hypothesis.document import read_hypothesis
from auditor.run_summary import ExcessTest, GapTest, RunSummary
from auditor.store import RunStore
from reports.findings import findings, pct
from tests.conftest import DemoCommand

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
BLACKOUT_SPEC = Path(auditor.demo.__file__).with_name("hypotheses") / (
    "tie-attribution-blackout.toml"
)


def _flat(text: str) -> str:
    """Text as a reader compares it: table rules and line breaks gone, spaces single, and
    durations (which differ on every machine) masked."""
    text = re.sub(r"[\u2500-\u257f]", " ", text)  # box drawing: the console's table rules
    text = re.sub(r"\b\d+(\.\d+)? s\b", "<time>", text)
    return " ".join(text.split())


def _readme() -> str:
    return _flat(README.read_text(encoding="utf-8"))


def _summary(demo: DemoCommand, model: str) -> RunSummary:
    return RunStore.open(demo.out_dir / model).summary()


def _error_gap(summary: RunSummary, grouping: str = "gender") -> GapTest:
    return next(t for t in summary.statistics.error_gaps if t.grouping == grouping)


def _excess(summary: RunSummary, probe: str, method: str = "gradcam") -> ExcessTest:
    return next(
        t
        for t in summary.statistics.excess
        if t.grouping == "gender" and t.probe == probe and t.method == method
    )


def _error(test: GapTest, group: str) -> str:
    return pct(next(g.rate.rate for g in test.groups if g.group == group))


def _points(rate: float | None) -> str:
    assert rate is not None
    return f"{100 * rate:.0f}"


def _console_excerpt() -> list[str]:
    """The README's sample console output, in the pieces between its elisions ("…", "...")."""
    block = README.read_text(encoding="utf-8").split("A sample of the console output")[1]
    excerpt = block.split("```")[1]
    pieces = re.split(r"…|\.\.\.", excerpt)
    return [_flat(piece) for piece in pieces if _flat(piece)]


def test_the_console_excerpt_is_what_audit_demo_prints(demo_command: DemoCommand) -> None:
    printed = _flat(demo_command.output)
    for piece in _console_excerpt():
        assert piece in printed, (
            f"README's excerpt piece:\n{piece}\nis not in what `audit demo` printed:\n"
            f"{demo_command.output}"
        )


def test_the_demo_story_quotes_the_demo_runs(demo_command: DemoCommand) -> None:
    biased, control = _summary(demo_command, "biased"), _summary(demo_command, "control")
    biased_errors, control_errors = _error_gap(biased), _error_gap(control)
    assert control_errors.p_adjusted is not None
    control_blackout = _excess(control, "blackout")
    placebo = sorted(g.placebo_rate for g in control_blackout.groups if g.placebo_rate is not None)
    excess = {g.group: g.excess for g in control_blackout.groups}
    biased_patch = _excess(biased, "white_patch")
    assert biased_patch.highest == "female"
    expected = [
        f"error rate {_error(biased_errors, 'female')} vs {_error(biased_errors, 'male')}",
        f"({_error(control_errors, 'female')} vs {_error(control_errors, 'male')}, "
        f"p = {control_errors.p_adjusted:.2g} after Holm)",
        f"the same edit placed at random flips {pct(placebo[-1])} or {pct(placebo[0])}",
        f'{_points(excess["male"])} points for "male" vs {_points(excess["female"])} for "female"',
        f'(white patch: +{_points(biased_patch.effect)} points for "female")',
    ]
    black = [f for f in findings(control) if f.probe == "blackout" and f.grouping == "gender"]
    opening = "Edit harm, not evidence of reliance"
    assert black and all(f.text.startswith(opening) for f in black), [f.text for f in black]
    expected.append(f'its black-square finding opens "{opening}"')
    (harm,) = [h for h in control.statistics.edit_harm if h.painted == control_blackout.id]
    expected.append(f"the black square's gap exceeds the inpainted one's by {_points(harm.effect)}")
    readme = _readme()
    for sentence in expected:
        assert sentence in readme, f"README should quote: {sentence}"


def test_the_hypothesis_example_quotes_its_run(demo_command: DemoCommand, tmp_path: Path) -> None:
    demo = demo_command.out_dir
    args = [str(BLACKOUT_SPEC), str(demo / "models" / "biased.pt"), str(demo / "world" / "audit")]
    result = CliRunner().invoke(
        cli, ["hypothesis", *args, "--label-column", "gender", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    figures = read_hypothesis(tmp_path).verdict
    sentence = (
        f"this one gives {figures.hypothesis.k} of {figures.trials} corrected vs "
        f"{figures.control.k} of {figures.trials} for the control on the biased model"
    )
    assert sentence in _readme(), f"README should quote: {sentence}"


def test_the_comparison_example_is_what_audit_compare_prints(
    demo_command: DemoCommand, tmp_path: Path
) -> None:
    demo = demo_command.out_dir
    result = CliRunner().invoke(
        cli, ["compare", str(demo / "control"), str(demo / "biased"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    block = README.read_text(encoding="utf-8").split("On the demo (A = control, B = biased)")[1]
    quoted = _flat(block.split("```")[1])
    assert quoted in _flat(result.output), f"`audit compare` printed:\n{result.output}"
