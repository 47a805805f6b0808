"""Render the view model into one self-contained HTML file (inline CSS, SVG and images)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from reports.images import DEFAULT_REPORT_IMAGES, ReportImages
from reports.view import build_view

REPORT_FILE = "report.html"


def _environment() -> Environment:
    # Autoescape on: file names, labels and group values are written by strangers.
    return Environment(
        loader=PackageLoader("reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(
    run_dir: Path, images: ReportImages = DEFAULT_REPORT_IMAGES, path: Path | None = None
) -> Path:
    """Write the report of the run's stored results to ``path`` (``run_dir/report.html`` unless
    given, replaced if it exists); return the path written.

    ``images``: ``full``, ``blurred`` (faces unrecognisable) or ``none`` (no raster image at all);
    see :mod:`reports.images`.
    """
    view = build_view(run_dir, images)
    html = _environment().get_template("report.html.j2").render(view=view)
    path = path or run_dir / REPORT_FILE
    path.write_text(html, encoding="utf-8")
    return path
