"""The documentation's examples run: its policy reads, its workflow's commands parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from auditor.cli import cli
from auditor.policy import load_policy

CI_DOC = Path(__file__).resolve().parents[1] / "docs" / "ci.md"


def fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", CI_DOC.read_text(encoding="utf-8"), re.S)


def workflow_commands() -> list[list[str]]:
    """Every ``audit`` command line of the workflow's run steps, split as a shell would."""
    first, *more = fenced("yaml")
    steps = yaml.safe_load(first)["jobs"]["audit"]["steps"]
    steps += yaml.safe_load("\n".join(line[6:] for line in more[0].splitlines()))
    runs = [step["run"] for step in steps if "run" in step]
    return [shlex.split(run) for run in runs if run.startswith("audit ")]


def test_the_documented_policy_is_a_valid_policy_for_run_and_compare(tmp_path: Path) -> None:
    (body,) = fenced("toml")
    path = tmp_path / "audit.toml"
    path.write_text(body, encoding="utf-8")
    policy = load_policy(path)
    assert policy is not None and policy.gates("run") and policy.gates("compare")


@pytest.mark.parametrize("words", workflow_commands(), ids=lambda words: words[1])
def test_each_documented_audit_command_parses(words: list[str]) -> None:
    """Option names and values are those the CLI takes (paths need not exist to parse)."""
    program, name, *arguments = words
    assert program == "audit"
    command = cli.get_command(None, name)  # type: ignore[arg-type]
    assert command is not None, name
    command.make_context(name, arguments)


def test_the_workflow_uploads_the_report_even_when_the_gate_fails() -> None:
    steps = yaml.safe_load(fenced("yaml")[0])["jobs"]["audit"]["steps"]
    (upload,) = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload["if"] == "always()" and "audit-run/report.html" in upload["with"]["path"]


README = CI_DOC.parents[1] / "README.md"


def readme_run_commands() -> list[list[str]]:
    """The ``audit run`` commands quoted inline in the README's "Bring your own model" table."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Bring your own model") : text.index("## Inputs")]
    return [shlex.split(c) for c in re.findall(r"`(audit run [^`]+)`", section)]


def test_the_readme_names_each_model_route() -> None:
    commands = readme_run_commands()
    assert {"--arch", "--predict"} <= {word for words in commands for word in words}
    assert {Path(words[2]).suffix for words in commands} >= {".pt", ".pt2", ".ts", ".onnx"}


@pytest.mark.parametrize("words", readme_run_commands(), ids=lambda words: words[2])
def test_each_model_route_command_in_the_readme_parses(words: list[str]) -> None:
    program, name, *arguments = words
    assert (program, name) == ("audit", "run")
    command = cli.get_command(None, name)  # type: ignore[arg-type]
    assert command is not None
    command.make_context(name, arguments)
