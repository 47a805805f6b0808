"""Every figure README.md quotes from the demo is the one a fresh `audit demo` gives, up to
the difference that another CPU makes.

A newcomer runs README's first command and compares. So each quoted figure is recomputed here
from the runs that `audit demo` (the ``demo_command`` fixture) writes, and from the hypothesis
and comparison commands README shows on them; a README that drifts from the tool fails here
with the sentence it should now say.

The demo trains its models on the CPU, and the trained weights are not bit-identical across
instruction sets (oneDNN's AVX2 and AVX-512 kernels sum in different orders, and training
amplifies the difference), so README says its figures come from one machine. Here the words of
each quoted sentence must match exactly, each figure within a few units of the fresh run's
(:func:`_close`), and each p-value on the same side of α.
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
INPAINT = "blackout(fill=inpaint)"
BLACKOUT_SPEC = Path(auditor.demo.__file__).with_name("hypotheses") / (
    "tie-attribution-blackout.toml"
)


def _flat(text: str) -> str:
    """Text as a reader compares it: table rules and line breaks gone, spaces single, durations
    (which differ on every machine) masked, and counts in one grammatical number ("1 break"
    reads as "1 breaks"), so that a count that moves does not change the words."""
    text = re.sub(r"[\u2500-\u257f]", " ", text)  # box drawing: the console's table rules
    text = re.sub(r"\b\d+(\.\d+)? s\b", "<time>", text)
    text = re.sub(r"\b(\d+) (correction|break|finding)s?\b", r"\1 \2s", text)
    return " ".join(text.split())


NUMBER = r"[+\-]?\d[\d,]*(?:\.\d+)?"
P_VALUE = rf"p [<=] {NUMBER}"
ALPHA = 0.05


def _value(figure: str) -> float:
    return float(figure.replace(",", ""))


def _close(quoted: float, fresh: float) -> bool:
    """Within 5 units (percent, points, counts) or 30 % of the larger: what retraining on
    another CPU moves the demo's figures by, while a story that no longer holds (a gap halved,
    a rate that doubled) fails."""
    return abs(quoted - fresh) <= max(5.0, 0.3 * max(abs(quoted), abs(fresh)))


def _significant(p_value: str) -> bool:
    """ "p < 0.001" or "p = 0.202": below the run's α or not."""
    return _value(p_value.split()[-1]) < ALPHA or "<" in p_value


def _pattern(sentence: str) -> tuple[re.Pattern[str], list[str]]:
    """``sentence`` as a pattern that any figures match, and its own figures in order."""
    parts = re.split(rf"({P_VALUE}|{NUMBER})", sentence)
    regex, figures = "", []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            regex += re.escape(part)
        else:
            regex += f"({P_VALUE})" if part.startswith("p ") else f"({NUMBER})"
            figures.append(part)
    return re.compile(regex), figures


def _agrees(ours: str, theirs: str) -> bool:
    if ours.startswith("p "):
        return _significant(ours) == _significant(theirs)
    return _close(_value(ours), _value(theirs))


def _quoted(sentence: str, text: str) -> bool:
    """Whether ``text`` holds ``sentence`` with the same words and figures that agree."""
    pattern, figures = _pattern(_flat(sentence))
    return any(
        all(_agrees(ours, theirs) for ours, theirs in zip(figures, match.groups(), strict=True))
        for match in pattern.finditer(_flat(text))
    )


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
        assert _quoted(piece, printed), (
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
    control_inpaint, biased_inpaint = (_excess(run, INPAINT) for run in (control, biased))
    assert not control_inpaint.significant and biased_inpaint.highest == "female"
    expected += [
        f"the control's gap between the labels is {_points(control_inpaint.effect)} points and "
        "not significant",
        f'while the biased model\'s runs the other way, higher for "female" '
        f"({_points(biased_inpaint.effect)} points)",
    ]
    black = [f for f in findings(control) if f.probe == "blackout" and f.grouping == "gender"]
    opening = "Edit harm, not evidence of reliance"
    assert black and all(f.text.startswith(opening) for f in black), [f.text for f in black]
    expected.append(f'its black-square finding opens "{opening}"')
    (harm,) = [h for h in control.statistics.edit_harm if h.painted == control_blackout.id]
    expected.append(f"the black square's gap exceeds the inpainted one's by {_points(harm.effect)}")
    readme = _readme()
    for sentence in expected:
        assert _quoted(sentence, readme), f"README should quote: {sentence}"


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
    assert _quoted(sentence, _readme()), f"README should quote: {sentence}"


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
    assert _quoted(quoted, _flat(result.output)), f"`audit compare` printed:\n{result.output}"


def test_a_quote_holds_for_the_same_words_with_figures_a_few_points_off() -> None:
    sentence = "error rate 18 % vs 0.3 %, p < 0.001 after Holm"
    assert _quoted(sentence, "so: error rate 16 % vs 0.7 %, p = 0.0129 after Holm, and")
    assert not _quoted(sentence, "error rate 9 % vs 0.3 %, p < 0.001 after Holm")  # halved
    assert not _quoted(sentence, "error rate 18 % vs 0.3 %, p = 0.2 after Holm")  # not significant
    assert not _quoted(sentence, "error rate 18 % vs 0.3 %, p < 0.001 before Holm")  # other words
    assert _quoted("(1 correction, 2 breaks)", "(3 corrections, 1 break)")
