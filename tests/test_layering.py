"""The import contract: data flows one way, and what reads a stored run needs no model.

- ``probes`` are image operations: they import nothing of ``auditor`` or ``reports``;
- ``reports`` read stored runs: they import no engine module (model loading, attribution,
  inference, the pipeline);
- the readers (report, gate, compare, hypothesis report) and the run store import no torch,
  so ``audit report``, ``gate`` and ``compare`` start without it;
- the summary reader (``auditor.run_summary``), which all of them use, needs only the
  standard library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = (
    "auditor.pipeline",
    "auditor.plan",
    "auditor.step",
    "auditor.executors",
    "auditor.attribution",
    "auditor.models",
    "auditor.blackbox",
    "auditor.rescore",
    "auditor.cost",
    "auditor.preprocess",
    "auditor.user_code",
    "auditor.demo",
    "auditor.hypothesis.engine",
    "torch",
)
READERS = (
    "reports",
    "reports.view",
    "reports.cues",
    "reports.comparison",
    "reports.hypothesis",
    "auditor.hypothesis.document",
    "auditor.policy",
    "auditor.compare",
    "auditor.cues_store",
    "auditor.records",
    "auditor.run_summary",
    "auditor.store",
    "auditor.summary",
)


def _imports(package: str) -> list[tuple[Path, str]]:
    """(file, imported module) for every import statement of every file of ``package``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append((path, node.module))
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_probes_import_nothing_of_the_engine_or_the_reports() -> None:
    bad = [(p.name, m) for p, m in _imports("probes") if _within(m, ("auditor", "reports"))]
    assert not bad


def test_reports_import_no_engine_module() -> None:
    bad = [(p.name, m) for p, m in _imports("reports") if _within(m, ENGINE)]
    assert not bad


@pytest.mark.parametrize("module", READERS)
def test_readers_of_a_run_load_without_torch(module: str) -> None:
    check = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, f"importing {module} imports torch"


def test_the_summary_reader_needs_only_the_standard_library() -> None:
    """Every reader parses summary.json through it, so it must cost them nothing to import."""
    heavy = ("torch", "numpy", "pandas", "scipy", "statsmodels", "matplotlib")
    check = f"import sys, auditor.run_summary; sys.exit(any(m in sys.modules for m in {heavy}))"
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, "auditor.run_summary imports more than the standard library"
