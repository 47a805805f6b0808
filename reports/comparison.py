"""The comparison page: comparison.json → view model → one self-contained HTML file.

Works on the stored comparison.json only (read back as :class:`auditor.compare.StoredComparison`),
so the console headline and the page say the same thing and either can be re-rendered without
the runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from auditor.compare import ComparisonRow, RunIdentity, StoredComparison, read_comparison
from auditor.stats import INTERSECTION
from auditor.store import ALL
from reports.findings import grouping_text, p_text, pct
from reports.html import _environment
from reports.view import Table

COMPARISON_HTML = "comparison.html"


@dataclass
class ComparisonView:
    title: str
    sides: list[tuple[str, str]]  # ("A", what A is), ("B", what B is)
    verdict: str
    worse: bool  # some difference is significant
    findings: list[str]
    tables: list[Table]
    maps: Table
    run_card: list[tuple[str, str]]
    ci_level: str
    alpha: float
    min_group_size: int


def render_comparison(out_dir: Path) -> Path:
    """Write ``out_dir/comparison.html`` from ``out_dir/comparison.json``; return its path."""
    view = build_view(read_comparison(out_dir))
    html = _environment().get_template("comparison.html.j2").render(view=view)
    path = out_dir / COMPARISON_HTML
    path.write_text(html, encoding="utf-8")
    return path


def build_view(data: StoredComparison) -> ComparisonView:
    a, b = data.a, data.b
    return ComparisonView(
        title=f"{_model_name(b)} (B) compared with {_model_name(a)} (A)",
        sides=[("A", _side_text(a)), ("B", _side_text(b))],
        verdict=_unbreakable(verdict(data)),
        worse=any(r.significant for r in data.rows),
        findings=[_unbreakable(f) for f in findings(data)],
        tables=[_unbreakable_table(_grouping_table(data, g)) for g in data.groupings],
        maps=_maps_table(data),
        run_card=_run_card(data),
        ci_level=_unbreakable(_ci_level(data.alpha)),
        alpha=data.alpha,
        min_group_size=data.min_group_size,
    )


def headline(data: StoredComparison, shown: int = 10) -> list[str]:
    """What the console says: who A and B are, the verdict, then the ``shown`` largest
    significant differences (the page lists them all)."""
    sides = f"A = {_side_text(data.a)}; B = {_side_text(data.b)}"
    found = findings(data)
    more = [f"… and {len(found) - shown} more in comparison.html."] if len(found) > shown else []
    return [f"{sides}. {data.images} images compared. {verdict(data)}", *found[:shown], *more]


def verdict(data: StoredComparison) -> str:
    """One sentence: is either model worse, over how many tests, and what went untested."""
    rows = data.rows
    tested = sum(r.p_value is not None for r in rows)
    worse_b = sum(r.significant and r.worse == "B" for r in rows)
    worse_a = sum(r.significant and r.worse == "A" for r in rows)
    scope = f"α = {data.alpha}, Holm-corrected over {tested} test(s)"
    if worse_a or worse_b:
        text = (
            f"B is significantly worse than A in {worse_b} comparison(s) and better in "
            f"{worse_a} ({scope})."
        )
    elif tested:
        text = f"No significant difference between A and B ({scope})."
    else:
        text = (
            "No significant difference between A and B: in every subgroup large enough to test, "
            "each image had the same outcome in both runs."
        )
    insufficient = sum(r.insufficient for r in rows)
    if insufficient:
        text += (
            f" {insufficient} subgroup rate(s) rest on fewer than {data.min_group_size} "
            "images valid in both runs and were not tested (insufficient data)."
        )
    return text


def findings(data: StoredComparison) -> list[str]:
    """Every significant difference as a sentence: error rates first (what users meet), then
    flip rates (why), each largest first."""
    rows = sorted(
        (r for r in data.rows if r.significant),
        key=lambda r: (r.metric != "error_rate", -abs(r.difference), r.p_adjusted or 0.0),
    )
    return [_finding(r, data) for r in rows]


def _finding(row: ComparisonRow, data: StoredComparison) -> str:
    worse, better = ("B", "A") if row.worse == "B" else ("A", "B")
    rates = {"A": row.rate_a, "B": row.rate_b}
    if row.arm is None:  # the error rate; a flip rate is an arm's
        lead = f"{worse} errs more than {better}"
    else:
        edit = _arm_text(row.arm, data)
        lead = f"{edit} changes {worse}'s prediction more often than {better}'s"
    return (
        f"{lead} for {who_text(row.grouping, row.group)}: {pct(rates[worse])} vs "
        f"{pct(rates[better])}, {p_text(row.p_adjusted)} after Holm (B − A "
        f"{_signed(row.difference)}, {_ci_level(data.alpha)} CI {_ci(row.ci)}; "
        f"{row.n} images)."
    )


def who_text(grouping: str, group: str) -> str:
    """ "images whose gender label is 'female'": groups are labels that others assigned."""
    if grouping == ALL:
        return "all images"
    columns, values = grouping.split(INTERSECTION), group.split(INTERSECTION)
    if len(columns) != len(values):  # a group value that itself contains the separator
        return f"images whose {grouping_text(grouping)} is '{group}'"
    parts = [f"{c} label is '{v}'" for c, v in zip(columns, values, strict=True)]
    return "images whose " + " and ".join(parts)


def _arm_text(arm_name: str, data: StoredComparison) -> str:
    """ "Blacking out the attribution region (gradcam)": the edit in words, with its method."""
    probe, _, method = arm_name.partition("@")
    text = data.probes.get(probe, probe) + (f" ({method})" if method else "")
    return text[0].upper() + text[1:]


def _signed(value: float) -> str:
    """ "+3.0 %", "-1.2 %"; a difference that rounds to zero is unsigned ("0.0 %", never
    "-0.0 %"), since its sign is not shown to be either."""
    magnitude = pct(abs(value))
    if float(magnitude.removesuffix(" %")) == 0:
        return magnitude
    return ("+" if value > 0 else "-") + magnitude


def _unbreakable(text: str) -> str:
    """``text`` with every number kept on one line with its "%" (a no-break space between):
    the page's narrow figure columns would otherwise wrap "3.0 %" after the number."""
    return text.replace(" %", "\u00a0%")


def _unbreakable_table(table: Table) -> Table:
    return dataclasses.replace(
        table,
        columns=[_unbreakable(c) for c in table.columns],
        rows=[[_unbreakable(cell) for cell in row] for row in table.rows],
    )


def _ci(ci: tuple[float, float]) -> str:
    return f"{_signed(ci[0])} to {_signed(ci[1])}"


def _ci_level(alpha: float) -> str:
    return f"{100 * (1 - alpha):g} %"


def _model_name(side: RunIdentity) -> str:
    return Path(side.model_path).name


def _side_text(side: RunIdentity) -> str:
    return f"{_model_name(side)} (run {side.run_dir})"


def _result(row: ComparisonRow, min_group_size: int) -> str:
    if row.insufficient:
        return f"insufficient data (n < {min_group_size})"
    if row.significant:
        return f"{row.worse} worse"
    return "no significant difference" if row.worse else "no difference"


def _grouping_table(data: StoredComparison, grouping: str) -> Table:
    rows = [
        [
            "error rate" if r.metric == "error_rate" else f"flip rate: {r.arm}",
            "all images" if grouping == ALL else r.group,
            str(r.n),
            pct(r.rate_a),
            pct(r.rate_b),
            f"{_signed(r.difference)} ({_ci(r.ci)})",
            f"{r.a_only} / {r.b_only}",
            "—" if r.insufficient else p_text(r.p_value),
            "—" if r.insufficient else p_text(r.p_adjusted),
            _result(r, data.min_group_size),
        ]
        for r in data.rows
        if r.grouping == grouping
    ]
    return Table(
        "All images" if grouping == ALL else f"By {grouping_text(grouping)}",
        [
            "Rate",
            "Group",
            "Images",
            "A",
            "B",
            f"B − A ({_ci_level(data.alpha)} CI)",
            "Only A / only B",
            "Exact McNemar",
            "Holm-adjusted",
            "Result",
        ],
        rows,
        note="Only A / only B: images where the error (or the flip) happened in that run only; "
        "the test uses these discordant images. Intervals are per row, not adjusted for "
        "multiplicity: the result rests on the Holm-adjusted p-value.",
    )


def _maps_table(data: StoredComparison) -> Table:
    return Table(
        "How differently A and B look at the same images: Jensen–Shannon divergence between "
        "their aligned mean maps",
        ["Method", "Images", "n (A / B)", "JS divergence"],
        [
            [
                m.method,
                who_text(m.grouping, m.group),
                f"{m.n_a} / {m.n_b}",
                "insufficient data" if m.js_divergence is None else f"{m.js_divergence:.3f}",
            ]
            for m in data.maps
        ],
        note="In bits: 0 when the mean maps are the same, 1 when they share no "
        "mass. Each side is that run's mean over its own valid images of the subgroup; maps are "
        "compared only for methods both runs used.",
    )


def _run_card(data: StoredComparison) -> list[tuple[str, str]]:
    card = []
    for name, side in (("A", data.a), ("B", data.b)):
        card += [
            (f"{name}: model", f"{side.model_path} (SHA-256 {side.model_sha256})"),
            (f"{name}: run", f"{side.run_dir} (auditor {side.tool_version})"),
            (f"{name}: attribution methods", ", ".join(side.methods)),
        ]
    card += [
        ("Dataset", data.a.dataset_root),
        ("labels.csv SHA-256", data.a.labels_csv_sha256 or "(ImageFolder layout, no labels.csv)"),
        (
            "Label column / group columns",
            f"{data.label_column} / {', '.join(data.group_columns) or '(none)'}",
        ),
        ("Images compared", f"{data.images} (valid in both runs)"),
    ]
    for name, only in (("A", data.only_a), ("B", data.only_b)):
        card.append(
            (
                f"Only in {name}",
                f"{len(only.images)} image(s); arms: {', '.join(only.arms) or 'none'}",
            )
        )
    card += [
        ("α / minimum group size", f"{data.alpha} / {data.min_group_size}"),
        ("Created", f"{data.created} by auditor {data.tool.version}"),
    ]
    return card
