"""Developer sessions: ``nox -s tests``, ``lint``, ``fuzz``, ``demo``, ``bench``.

Sessions reuse the project's ``.venv`` when nox runs from it (``--no-venv``/``-R``) or build their
own; either way the package is installed, not imported from the checkout.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _install(session: nox.Session, *groups: str) -> None:
    session.install("-e", ".[onnx,ray]")
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (posargs go to pytest)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """The Hypothesis suite of the input boundary at ten times CI's examples, freshly seeded."""
    _install(session, "test")
    session.run(
        "pytest", "tests/test_fuzz_inputs.py", "--hypothesis-profile=fuzz", *session.posargs
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy on the packages."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """Build the synthetic world, train its two models and audit both (README gives timings)."""
    _install(session)
    session.run("audit", "demo", "--out", "runs/demo", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Audit throughput vs plain forward passes, maps/s per attribution method, a custom CNN
    audited four ways (model.py, .pt2, TorchScript, ONNX), the size and render time of the
    report for 10,000 audited images, the run store's start-up time and peak memory, each
    probe's cost per image (its region, its control and its edit) and cue discovery's cost."""
    _install(session)
    session.install("onnx")  # the source benchmark exports its network to ONNX
    session.run("python", "tests/benchmarks/bench_audit.py", *session.posargs)
    session.run("python", "tests/benchmarks/bench_sources.py", *session.posargs)
    session.run("python", "tests/benchmarks/bench_report.py", *session.posargs)
    session.run("python", "tests/benchmarks/bench_store.py", *session.posargs)
    session.run("python", "tests/benchmarks/bench_probes.py", *session.posargs)
    session.run("python", "tests/benchmarks/bench_cues.py", *session.posargs)
