"""Inline SVG plots (matplotlib's SVG backend: no files, no network, text kept as text)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from auditor.run_summary import Rate

# Okabe & Ito's palette, distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True)
class FlipRatePoint:
    """One subgroup's (``label``) flip rate under one probe arm."""

    label: str
    probe: str
    rate: Rate


def flip_rate_plot(points: list[FlipRatePoint], probes: list[str], level: str) -> str:
    """Flip rate with its ``level`` interval per subgroup (y) and probe (colour): an SVG string.

    A subgroup without images keeps its row, empty.
    """
    labels = list(dict.fromkeys(p.label for p in points))
    if not labels:
        return ""
    with _plain_text():
        return _flip_rate_plot(points, probes, labels, level)


def _flip_rate_plot(
    points: list[FlipRatePoint], probes: list[str], labels: list[str], level: str
) -> str:
    height = 0.38 * len(labels) * max(1, len(probes)) ** 0.5 + 1.2
    fig, ax = _pyplot().subplots(figsize=(7.5, height))
    step = 0.8 / max(len(probes), 1)
    handles = []
    for i, probe in enumerate(probes):
        mine = [(p.label, bounds) for p in points if p.probe == probe and (bounds := _bounds(p))]
        ys = [labels.index(label) + (i - (len(probes) - 1) / 2) * step for label, _ in mine]
        xs = [100 * rate for _, (rate, _, _) in mine]
        # max(0, ·): at k = 0 or k = n the interval's end equals the rate up to rounding.
        err = [
            [max(0.0, 100 * (rate - low)) for _, (rate, low, _) in mine],
            [max(0.0, 100 * (high - rate)) for _, (rate, _, high) in mine],
        ]
        handles.append(
            ax.errorbar(xs, ys, xerr=err, fmt="o", ms=4, capsize=2, color=PALETTE[i % len(PALETTE)])
        )
    ax.set_yticks(range(len(labels)), [_literal(label) for label in labels])
    ax.invert_yaxis()
    ax.set_xlabel(f"predictions changed by the edit (%), with {level} Wilson interval")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", alpha=0.3)
    # Handles and labels given explicitly: a probe whose name starts with "_" keeps its entry.
    ax.legend(handles, [_literal(p) for p in probes], loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    return _svg(fig)


def _bounds(point: FlipRatePoint) -> tuple[float, float, float] | None:
    """The rate and its interval's ends; None for a subgroup without images (all three None)."""
    rate = point.rate
    if rate.rate is None or rate.ci_low is None or rate.ci_high is None:
        return None
    return rate.rate, rate.ci_low, rate.ci_high


CORRECTION_COLOUR, BREAK_COLOUR = PALETTE[0], PALETTE[5]  # blue and vermillion


@dataclass(frozen=True)
class DirectionCount:
    """Of a subgroup's (``label``) ``n`` edited images under one probe arm, how many the edit
    corrected and how many it broke."""

    label: str
    probe: str
    n: int
    corrections: int
    breaks: int


def corrections_breaks_plot(rows: list[DirectionCount], probes: list[str]) -> str:
    """Per probe (one panel each): the share of each subgroup's images whose prediction the edit
    corrected (wrong → right) and broke (right → wrong), stacked: an SVG string."""
    labels = list(dict.fromkeys(r.label for r in rows))
    shown = [p for p in probes if any(r.probe == p for r in rows)]
    if not labels or not shown:
        return ""
    with _plain_text():
        return _corrections_breaks_plot(rows, labels, shown)


def _corrections_breaks_plot(
    rows: list[DirectionCount], labels: list[str], shown: list[str]
) -> str:
    columns = min(3, len(shown))
    lines = -(-len(shown) // columns)
    fig, axes = _pyplot().subplots(
        lines,
        columns,
        figsize=(7.5, (0.28 * len(labels) + 0.9) * lines),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for ax, probe in zip(axes.flat, shown, strict=False):
        mine = {r.label: r for r in rows if r.probe == probe}
        counts = [mine.get(label) for label in labels]
        corrected = [0.0 if c is None else _percent(c.corrections, c.n) for c in counts]
        broken = [0.0 if c is None else _percent(c.breaks, c.n) for c in counts]
        ys = range(len(labels))
        ax.barh(ys, corrected, color=CORRECTION_COLOUR, label="corrected")
        ax.barh(ys, broken, left=corrected, color=BREAK_COLOUR, label="broken")
        ax.set_title(_literal(probe), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    axes[0][0].set_yticks(range(len(labels)), [_literal(label) for label in labels])
    axes[0][0].invert_yaxis()
    fig.supxlabel("% of the subgroup's images", fontsize=8)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", fontsize=8, frameon=False, ncols=2)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _svg(fig)


def _percent(count: int, n: int) -> float:
    return 100 * count / n if n else 0.0


def _literal(text: str) -> str:
    """``text`` as matplotlib draws it literally: every ``$`` escaped, so that no part of a
    subgroup's, class's or probe's name is read as mathtext (which draws ``a$b$c`` as maths and
    raises on ``$\\frac{$``). Every string a user wrote passes through here on its way to a plot;
    :func:`_plain_text` turns off the other interpreter, TeX."""
    return text.replace("$", r"\$")


@contextmanager
def _plain_text() -> Iterator[None]:
    """Draw with TeX off whatever the user's matplotlibrc says (TeX would read ``#``, ``%``,
    ``&``, ``_``, ``^``, ``{`` … in names as markup, and needs a LaTeX installation).

    A name in a script the layout font lacks is only measured with it: the SVG keeps the text
    as text (``svg.fonttype`` none), which the browser draws in its own fonts, so matplotlib's
    "Glyph … missing from font" warning says nothing about the page and is silenced.
    """
    import matplotlib

    with matplotlib.rc_context({"text.usetex": False}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Glyph \d+ .*missing from font", UserWarning)
        yield


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported when a plot is drawn (it takes about
    half a second, which readers that draw nothing should not wait for)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _svg(fig: Any) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "auditor"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})  # reproducible output
    _pyplot().close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]
