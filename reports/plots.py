"""Inline SVG plots (matplotlib's SVG backend: no files, no network, text kept as text)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt

# Okabe & Ito's palette, distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def flip_rate_plot(rows: list[dict[str, Any]], probes: list[str]) -> str:
    """Flip rate with 95 % CI per subgroup (y) and probe (colour): an SVG string.

    ``rows``: dicts with ``label`` (subgroup), ``probe``, ``rate``, ``ci_low``, ``ci_high``.
    """
    labels = list(dict.fromkeys(r["label"] for r in rows))
    if not labels:
        return ""
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(labels) * max(1, len(probes)) ** 0.5 + 1.2))
    step = 0.8 / max(len(probes), 1)
    for i, probe in enumerate(probes):
        mine = [r for r in rows if r["probe"] == probe and r["rate"] is not None]
        ys = [labels.index(r["label"]) + (i - (len(probes) - 1) / 2) * step for r in mine]
        xs = [100 * r["rate"] for r in mine]
        # max(0, ·): at k = 0 or k = n the interval's end equals the rate up to rounding.
        err = [
            [max(0.0, 100 * (r["rate"] - r["ci_low"])) for r in mine],
            [max(0.0, 100 * (r["ci_high"] - r["rate"])) for r in mine],
        ]
        ax.errorbar(
            xs, ys, xerr=err, fmt="o", ms=4, capsize=2, color=PALETTE[i % len(PALETTE)], label=probe
        )
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("predictions changed by the edit (%), with 95 % Wilson interval")
    ax.set_xlim(0, 100)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "auditor"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})  # reproducible output
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]
