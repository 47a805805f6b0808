"""`audit report RUN_DIR` re-renders a stored run; it never replaces a report silently.

The report `audit run` wrote (blurred by default) stays unless --overwrite; another rendering, say
with --report-images none for a wider audience, goes to --out PATH.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from auditor.cli import cli


def report(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["report", *args])
    return result.exit_code, result.output


def test_the_report_in_the_run_is_kept_unless_overwritten(small_run: Path) -> None:
    page = small_run / "report.html"
    blurred = page.read_text(encoding="utf-8")
    assert "data:image/jpeg" in blurred

    code, output = report(str(small_run), "--report-images", "none")
    assert code == 2
    assert output.strip().count("\n") == 0, "one line"
    assert f"{page} already exists" in output.replace("\n", "")
    assert "--out PATH" in output and "--overwrite" in output
    assert page.read_text(encoding="utf-8") == blurred

    code, output = report(str(small_run), "--report-images", "none", "--overwrite")
    assert code == 0, output
    assert "data:image" not in page.read_text(encoding="utf-8")


def test_out_writes_another_rendering_and_keeps_the_run_s_report(small_run: Path) -> None:
    page = small_run / "report.html"
    blurred = page.read_text(encoding="utf-8")
    elsewhere = small_run.parent / "shared" / "report-no-images.html"  # its folder is made

    code, output = report(str(small_run), "--report-images", "none", "--out", str(elsewhere))
    assert code == 0, output
    assert str(elsewhere) in output.replace("\n", "")
    assert page.read_text(encoding="utf-8") == blurred
    assert "This report holds no images" in elsewhere.read_text(encoding="utf-8")

    # A path named with --out is the user's choice: written again, it is replaced.
    code, output = report(str(small_run), "--report-images", "full", "--out", str(elsewhere))
    assert code == 0, output
    assert "Images are shown as audited" in elsewhere.read_text(encoding="utf-8")
