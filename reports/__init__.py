"""The HTML audit report, rendered from a stored run directory."""

from reports.html import render_report

__all__ = ["render_report"]
