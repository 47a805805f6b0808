"""Stored run → view model: every number computed and formatted here, none in the template."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from auditor.gallery import GALLERY_FILE
from auditor.records import BREAK, CORRECTION, PLACEBO, read_records
from auditor.stats import group_labels, groupings
from auditor.summary import read_summary
from reports.findings import Finding, findings, grouping_text, p_text, pct, rate_text, verdict
from reports.plots import flip_rate_plot


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class ProbeSection:
    name: str
    description: str
    tables: list[Table]


@dataclass
class ReportView:
    title: str
    verdict: str
    significant: bool
    findings: list[Finding]
    quiet_tests: list[str]
    run_card: list[tuple[str, str]]
    skips: Table
    error_tables: list[Table]
    probe_sections: list[ProbeSection]
    paired: Table
    plot_svg: str
    gallery: list[dict[str, Any]]
    appendix: Table
    label_column: str
    group_columns: list[str]
    alpha: float
    method: str
    region_area: float


def build_view(run_dir: Path) -> ReportView:
    summary = read_summary(run_dir)
    records = read_records(run_dir)
    gallery_path = run_dir / GALLERY_FILE
    gallery = json.loads(gallery_path.read_text(encoding="utf-8")) if gallery_path.is_file() else []
    stats = summary["statistics"]
    found = findings(summary)
    return ReportView(
        title=(
            f"Audit of {Path(summary['model']['path']).name} "
            f"on {Path(summary['dataset']['root']).name}"
        ),
        verdict=verdict(summary),
        significant=any(f.kind != "guided_vs_placebo" for f in found),
        findings=found,
        quiet_tests=_quiet(summary),
        run_card=_run_card(summary),
        skips=_skips(summary),
        error_tables=[_gap_table(t, "errors", "error rate") for t in stats["error_gaps"]],
        probe_sections=_probe_sections(summary, records),
        paired=_paired(stats["paired"]),
        plot_svg=_plot(summary),
        gallery=gallery,
        appendix=_appendix(stats),
        label_column=summary["dataset"]["label_column"],
        group_columns=summary["dataset"]["group_columns"],
        alpha=stats["alpha"],
        method=summary["attribution"]["method"],
        region_area=summary["config"]["region_area"],
    )


def _quiet(summary: dict[str, Any]) -> list[str]:
    """One line per grouping with no significant gap, so silence is stated, not implied."""
    out = []
    for test in summary["statistics"]["error_gaps"]:
        if not test["significant"]:
            out.append(
                f"Error rate by {grouping_text(test['grouping'])}: no significant difference "
                f"({p_text(test['p_adjusted'])} after Holm correction; "
                f"largest gap {pct(test['effect'])})."
            )
    return out


def _run_card(summary: dict[str, Any]) -> list[tuple[str, str]]:
    model, data, config = summary["model"], summary["dataset"], summary["config"]
    versions = ", ".join(f"{k} {v}" for k, v in summary["versions"].items())
    return [
        ("Model file", f"{model['path']} ({model['kind']})"),
        ("Model SHA-256", model["sha256"]),
        (
            "Classes (output order)",
            ", ".join(model["classes"]) + (" — single-logit head" if model["single_logit"] else ""),
        ),
        (
            "Input",
            f"{model['input_size'][0]}×{model['input_size'][1]}, "
            f"mean {model['mean']}, std {model['std']}",
        ),
        ("Dataset", data["root"]),
        ("labels.csv SHA-256", data["labels_csv_sha256"] or "(ImageFolder layout, no labels.csv)"),
        (
            "Label column / group columns",
            f"{data['label_column']} / {', '.join(data['group_columns']) or '(none)'}",
        ),
        (
            "Images",
            f"{data['rows']} rows, {data['images_audited']} audited, "
            f"{data['images_skipped']} skipped",
        ),
        (
            "Attribution",
            f"{summary['attribution']['method']} for the {summary['attribution']['target']} class, "
            f"layer {summary['attribution']['target_layer'] or '(input pixels)'}",
        ),
        ("Region area", f"{100 * config['region_area']:.0f} % of the image"),
        ("Probes", ", ".join(config["probes"])),
        (
            "Seed / α / minimum group size",
            f"{config['seed']} / {config['alpha']} / {config['min_group_size']}",
        ),
        (
            "Created",
            f"{summary['created']} in {summary['seconds']:.0f} s "
            f"by auditor {summary['tool']['version']}",
        ),
        ("Versions", versions),
    ]


def _skips(summary: dict[str, Any]) -> Table:
    rows = [
        [s["probe"], s["reason"], str(s["count"])] for s in summary["dataset"]["skips_by_reason"]
    ]
    listed = summary["dataset"]["skipped"]
    note = "; ".join(f"{s['image_id']}: {s['reason']}" for s in listed if s["probe"] is None)
    return Table(
        "Rows and edits that could not be used",
        ["Probe", "Reason", "Count"],
        rows,
        note=f"Skipped images: {note}" if note else "",
    )


def _gap_table(test: dict[str, Any], event: str, what: str) -> Table:
    rows = [
        [
            g["group"],
            str(g["rate"]["n"]),
            str(g["rate"]["k"]),
            rate_text(g["rate"]),
            "yes" if g["tested"] else "too few",
        ]
        for g in test["groups"]
    ]
    note = (
        f"{test['test']}: {p_text(test['p_value'])}, Holm-adjusted {p_text(test['p_adjusted'])}"
        + (" — significant" if test["significant"] else "")
    )
    return Table(
        f"{what.capitalize()} by {grouping_text(test['grouping'])}",
        ["Group", "n", event, f"{what} (95 % CI)", "In test"],
        rows,
        note,
    )


def _probe_sections(summary: dict[str, Any], records: pd.DataFrame) -> list[ProbeSection]:
    stats = summary["statistics"]
    valid = records[records["skip_reason"].isna() & records["probe"].notna()]
    group_columns = summary["dataset"]["group_columns"]
    sections = []
    for probe in summary["probes"]:
        tables = []
        for test in (t for t in stats["flip_gaps"] if t["probe"] == probe["name"]):
            placebo = {
                g["group"]: g["rate"]
                for g in stats["placebo_by_group"].get(f"{probe['name']}/{test['grouping']}", [])
            }
            columns = next(c for name, c in groupings(group_columns) if name == test["grouping"])
            frame = valid[
                (valid["probe"] == probe["name"])
                & (valid["region_source"] == test["region_source"])
            ]
            directions = frame.groupby([group_labels(frame, columns), frame["direction"]]).size()
            table = _gap_table(test, "changed", "flip rate")
            table.columns = [
                *table.columns[:4],
                "corrections",
                "breaks",
                "placebo flip rate",
                table.columns[4],
            ]
            for row, group in zip(table.rows, test["groups"], strict=True):
                name = group["group"]
                row[4:4] = [
                    str(directions.get((name, CORRECTION), 0)),
                    str(directions.get((name, BREAK), 0)),
                    rate_text(placebo[name]) if name in placebo else "—",
                ]
            tables.append(table)
        sections.append(ProbeSection(probe["name"], probe["description"], tables))
    return sections


def _paired(paired: list[dict[str, Any]]) -> Table:
    rows = [
        [
            t["probe"],
            str(t["n_pairs"]),
            rate_text(t["guided"]),
            rate_text(t["placebo"]),
            f"{t['guided_only']} / {t['placebo_only']}",
            p_text(t["p_value"]),
            p_text(t["p_adjusted"]),
        ]
        for t in paired
    ]
    return Table(
        "Guided edit vs the same edit on a random region of the same size",
        [
            "Probe",
            "Images",
            "Guided flip rate",
            "Placebo flip rate",
            "Only guided / only placebo flipped",
            "Exact McNemar",
            "Holm-adjusted",
        ],
        rows,
    )


def _plot(summary: dict[str, Any]) -> str:
    stats = summary["statistics"]
    singles = set(summary["dataset"]["group_columns"])
    rows = [
        {"label": f"{grouping_text(t['grouping'])}: {g['group']}", "probe": t["probe"], **g["rate"]}
        for t in stats["flip_gaps"]
        if t["grouping"] in singles
        for g in t["groups"]
    ]
    rows += [
        {"label": "all images", "probe": key.split("/")[0], **rate}
        for key, rate in stats["flip_overall"].items()
        if not key.endswith("/" + PLACEBO)
    ]
    probes = [p["name"] for p in summary["probes"]]
    return flip_rate_plot(sorted(rows, key=lambda r: r["label"] != "all images"), probes)


def _appendix(stats: dict[str, Any]) -> Table:
    rows = []
    for test in [*stats["error_gaps"], *stats["flip_gaps"], *stats["paired"]]:
        statistic = test.get("statistic")
        rows.append(
            [
                test["id"],
                test["test"],
                "—" if statistic is None else f"{statistic:.4g}",
                "—" if test["p_value"] is None else f"{test['p_value']:.3g}",
                "—" if test["p_adjusted"] is None else f"{test['p_adjusted']:.3g}",
                "yes" if test["significant"] else "no",
            ]
        )
    return Table(
        "Every test of the run",
        ["Test id", "Test", "Statistic", "p", "Holm-adjusted p", "Significant"],
        rows,
    )
