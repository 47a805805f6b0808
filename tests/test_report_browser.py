"""The demo's report as a reader's browser shows it: headless Chromium, offline, no errors.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it) and is driven by
Playwright, told to use that binary. Without it the test skips locally and fails in CI, where
it must run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditor.cli import cli
from auditor.demo import DEMO_POLICY
from reports.html import REPORT_FILE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        # Only off CI (CI fails above): the issue asks that a developer without Chromium can
        # still run the suite; the browser is a system package, not something pip can bring.
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.mark.slow
def test_the_report_opens_offline_without_errors_and_its_tables_sort(
    browser, biased_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:  # type: ignore[no-untyped-def]
    page_url = (biased_run / REPORT_FILE).resolve().as_uri()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(page_url, wait_until="load")

    outside = [u for u in requests if u != page_url and not u.startswith("data:")]
    assert outside == [], "the report fetched something"
    assert problems == []

    first_screen = page.locator("ol.headlines").inner_text()
    assert "The model's error rate differs by gender label" in first_screen
    assert "for 'female'" in first_screen  # the women the planted tie misleads
    assert "Blacking out the attribution region" in first_screen
    assert page.locator("ol.headlines").is_visible()

    table = page.locator("table.sortable", has_text="Error rate by gender label × race label").last
    header = table.locator("thead th").nth(2)  # n
    header.locator("button").click()
    assert header.get_attribute("aria-sort") == "ascending"
    sizes = [int(t) for t in table.locator("tbody tr td:nth-child(3)").all_inner_texts()]
    assert sizes == sorted(sizes) and sizes != [int(t) for t in _unsorted(biased_run)]
    header.locator("button").click()
    sizes = [int(t) for t in table.locator("tbody tr td:nth-child(3)").all_inner_texts()]
    assert sizes == sorted(sizes, reverse=True)

    figures = page.locator(".gallery figure")
    total = figures.count()
    page.select_option(".controls select[data-filter='g0']", "female")
    shown = page.locator(".gallery figure:not([hidden])")
    assert 0 < shown.count() < total
    assert all("gender female" in t for t in shown.locator("figcaption").all_inner_texts())
    assert problems == []

    shot = tmp_path_factory.mktemp("screenshots") / "report.png"
    page.goto(page_url)
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    page.close()


# The first screen a reader sees: the viewport at load, before any scrolling.
FIRST_SCREEN = {"width": 1280, "height": 800}


@pytest.mark.slow
def test_the_first_screen_shows_the_policy_verdict_and_leads_with_the_error_gap(
    browser, biased_run: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The biased model judged by the demo's policy: the verdict ("Policy FAILS", its failed
    gates named) is in the viewport at load, and so is the error-rate gap for the gender label,
    among the first two findings."""
    run_dir = shutil.copytree(biased_run, tmp_path / "gated")  # the session's run stays as it is
    gated = CliRunner().invoke(cli, ["gate", str(run_dir), "--policy", str(DEMO_POLICY)])
    assert gated.exit_code == 1, gated.output  # the demo's policy fails the biased model
    # Rendered again, now with the gate's verdict on it.
    rendered = CliRunner().invoke(cli, ["report", str(run_dir), "--overwrite"])
    assert rendered.exit_code == 0, rendered.output
    page = browser.new_page(viewport=FIRST_SCREEN)
    page.goto((run_dir / REPORT_FILE).resolve().as_uri(), wait_until="load")

    policy = page.locator("p.policy")
    assert policy.inner_text().startswith("Policy FAILS: ")
    assert "error_rate_gap for gender label 'female'" in policy.inner_text()
    assert _on_first_screen(policy, whole=True)
    first_two = page.locator("ol.headlines > li").all()[:2]
    errors = [li for li in first_two if li.inner_text().startswith("The model's error rate")]
    assert len(errors) == 1 and "by gender label" in errors[0].inner_text()
    assert _on_first_screen(errors[0])
    page.close()


def _on_first_screen(element, whole: bool = False) -> bool:  # type: ignore[no-untyped-def]
    """Whether the element begins inside the viewport at load (its top above the fold), or
    lies wholly inside it."""
    box = element.bounding_box()
    if box is None or box["height"] <= 0 or box["y"] < 0:
        return False
    end = box["y"] + (box["height"] if whole else 0)
    return end < FIRST_SCREEN["height"]


def _unsorted(run_dir: Path) -> list[str]:
    """The n column of the gender × race error table as the page lists it before sorting."""
    import json

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    test = next(t for t in summary["statistics"]["error_gaps"] if t["grouping"] == "gender×race")
    return [str(g["rate"]["n"]) for g in test["groups"]]
