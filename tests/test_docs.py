"""The documentation's examples run: its policy reads, its workflow's commands parse, the wheel
its workflow builds holds what the tool needs, and every ``audit`` command it names exists."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from auditor.cli import cli
from auditor.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
CI_DOC = ROOT / "docs" / "ci.md"


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


README = ROOT / "README.md"


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


# The workflow's install step, and the wheel it builds.

TOP_LEVEL_PACKAGES = ("auditor", "probes", "reports")
# Files the tool opens at run time besides its modules; each pattern matches in the checkout.
RUNTIME_DATA = (
    "reports/templates/*.j2",
    "auditor/schemas/*.json",
    "auditor/demo/audit.toml",
    "auditor/demo/hypotheses/*.toml",
    "auditor/demo/hypotheses/controls/*.toml",
)


def install_commands() -> list[list[str]]:
    """The lines of the workflow's "Install auditor" step, split as a shell would."""
    steps = yaml.safe_load(fenced("yaml")[0])["jobs"]["audit"]["steps"]
    (install,) = [step for step in steps if step.get("name") == "Install auditor"]
    return [shlex.split(line) for line in install["run"].splitlines() if line.strip()]


def pip_command(verb: str) -> list[str]:
    (words,) = [words for words in install_commands() if words[:4] == ["python", "-m", "pip", verb]]
    return words[4:]


@pytest.fixture(scope="module")
def documented_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built by the workflow's own commands, in a workspace holding a copy of this
    checkout where the workflow checks auditor out (so no build/ or egg-info lands here), with
    this venv's pip; without build isolation, as nothing may be fetched here."""
    steps = yaml.safe_load(fenced("yaml")[0])["jobs"]["audit"]["steps"]
    (checkout,) = [step for step in steps if step.get("name") == "Check out auditor"]
    workspace = tmp_path_factory.mktemp("workspace")
    shutil.copytree(
        ROOT,
        workspace / checkout["with"]["path"],
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            ".nox",
            ".hypothesis",
            "runs",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".*cache",
        ),
    )
    build = [sys.executable, "-m", "pip", "wheel", *pip_command("wheel")]
    assert "--no-deps" in build
    subprocess.run(
        [*build, "--no-build-isolation", "--no-index"],
        cwd=workspace,
        check=True,
        capture_output=True,
    )
    (installed,) = pip_command("install")
    (wheel,) = workspace.glob(installed)  # the install step finds the one wheel built
    with zipfile.ZipFile(wheel) as archive:
        yield archive


def test_the_documented_wheel_holds_every_file_of_the_three_packages(
    documented_wheel: zipfile.ZipFile,
) -> None:
    """Modules and data alike: a subpackage or template left out of the package config would
    only show once installed from the wheel, never in an editable checkout."""
    checkout = {
        path.relative_to(ROOT).as_posix()
        for package in TOP_LEVEL_PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert checkout - set(documented_wheel.namelist()) == set()


@pytest.mark.parametrize("pattern", RUNTIME_DATA)
def test_the_documented_wheel_holds_the_data_the_tool_reads(
    documented_wheel: zipfile.ZipFile, pattern: str
) -> None:
    wanted = {path.relative_to(ROOT).as_posix() for path in ROOT.glob(pattern)}
    assert wanted, f"{pattern} matches nothing in the checkout"
    assert wanted <= set(documented_wheel.namelist())


def test_the_documented_wheel_installs_the_audit_command(
    documented_wheel: zipfile.ZipFile,
) -> None:
    (entry_points,) = [n for n in documented_wheel.namelist() if n.endswith("entry_points.txt")]
    scripts = documented_wheel.read(entry_points).decode()
    assert re.search(r"^audit = auditor\.cli:main$", scripts, re.M)


# Every `audit ...` the README and docs/ name exists, with the options it uses.

DOCS = (README, *sorted((ROOT / "docs").glob("*.md")))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SHELL_SEPARATOR = re.compile(r"&&|\|\||;")


def _yaml_runs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                yield value
            else:
                yield from _yaml_runs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _yaml_runs(item)


def _command_lines(text: str) -> Iterator[str]:
    """Shell lines of the fenced blocks (a YAML block's ``run:`` values), and code spans."""
    for language, body in FENCE.findall(text):
        if language in ("yaml", "yml"):
            for run in _yaml_runs(yaml.safe_load(textwrap.dedent(body))):
                yield from run.splitlines()
        elif language in ("", "sh", "bash", "shell", "console"):
            yield from body.replace("\\\n", " ").splitlines()
    yield from re.findall(r"`([^`\n]+)`", FENCE.sub("", text))


def documented_invocations() -> list[tuple[str, str]]:
    """(document, command) for every ``audit`` (or ``.venv/bin/audit``) command in the docs."""
    found = []
    for doc in DOCS:
        for line in _command_lines(doc.read_text(encoding="utf-8")):
            for segment in SHELL_SEPARATOR.split(line):
                words = segment.split()
                if len(words) > 1 and Path(words[0]).name == "audit":
                    found.append((doc.relative_to(ROOT).as_posix(), segment.strip()))
    return found


def _option_names(command: click.Command) -> set[str]:
    context = click.Context(command)
    params = [*command.params, command.get_help_option(context)]
    return {name for param in params if param for name in (*param.opts, *param.secondary_opts)}


def _options_used(words: list[str]) -> list[str]:
    """``--name`` of ``--name=value`` and of ``[--name VALUE]`` (a usage line's optional part)."""
    return [word.strip("[]").split("=")[0] for word in words if word.lstrip("[").startswith("-")]


def test_the_docs_name_audit_commands() -> None:
    """The scan below finds the commands it is meant to check (else it would pass on none)."""
    named = {shlex.split(command, comments=True)[1] for _, command in documented_invocations()}
    assert {"run", "demo", "gate", "compare", "report", "hypothesis"} <= named


@pytest.mark.parametrize(("doc", "command"), documented_invocations())
def test_each_documented_audit_command_and_option_exists(doc: str, command: str) -> None:
    """Placeholders (``...``, ``RUN_DIR``) may stand for arguments, never for a command name."""
    words = shlex.split(command, comments=True)[1:]
    group_options = []
    while words and words[0].startswith("-"):
        group_options.append(words.pop(0))
    assert set(group_options) <= _option_names(cli), f"{doc}: {command}"
    if not words or words[0] == "...":
        return
    name, *arguments = words
    subcommand = cli.get_command(click.Context(cli), name)
    assert subcommand is not None, f"{doc}: no command 'audit {name}'"
    unknown = set(_options_used(arguments)) - _option_names(subcommand)
    assert unknown == set(), f"{doc}: 'audit {name}' has no {sorted(unknown)}"


def listed_commands() -> list[str]:
    """The command names under "Commands:" in ``audit --help``."""
    result = CliRunner().invoke(cli, ["--help"], prog_name="audit")
    assert result.exit_code == 0, result.output
    listing = result.output.split("Commands:\n", 1)[1]
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def test_audit_help_lists_every_command() -> None:
    assert set(listed_commands()) == set(cli.list_commands(click.Context(cli)))


@pytest.mark.parametrize("name", listed_commands())
def test_each_listed_command_has_its_own_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"], prog_name="audit")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: audit {name} "), result.output


def _nox_sessions() -> set[str]:
    """Functions of noxfile.py decorated with ``@nox.session`` (read, not run: nox is a dev tool,
    not a test dependency)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("nox.session" in ast.unparse(decorator) for decorator in node.decorator_list)
    }


def test_the_readme_installs_nox_and_names_its_sessions() -> None:
    text = README.read_text(encoding="utf-8")
    assert "pip install nox" in text
    named = {
        session
        for sessions in re.findall(r"nox -s ((?:[\w-]+ ?)+)", text)
        for session in sessions.split()
    }
    assert named and named <= _nox_sessions()
