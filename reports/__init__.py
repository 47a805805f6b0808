"""The HTML audit report, rendered from a stored run directory.

``render_report`` is imported on first use, so that ``reports.images`` (which the CLI reads for
its ``--report-images`` choices) comes without pandas and the view model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reports.html import render_report

__all__ = ["render_report"]


def __getattr__(name: str) -> Any:
    if name == "render_report":
        from reports.html import render_report

        return render_report
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
