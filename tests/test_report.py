"""The report stands alone, escapes what strangers wrote, and re-renders from stored results."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from markupsafe import escape

from auditor.cli import cli
from auditor.run_summary import GapTest, GroupRate, Rate, StoredVerdict
from auditor.store import RunStore
from auditor.summary import SCHEMA_PATH
from reports.findings import HEADLINES, Finding, findings, headlines, pct, policy_text, verdict
from reports.view import build_view
from tests.conftest import audit, load_summary

EVIL = "<script>alert(1)</script>"


@pytest.fixture
def evil_run(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> Path:
    root = small_dataset(n=12)
    table = pd.read_csv(root / "labels.csv")
    evil_path = root / f"img/{EVIL}.png"  # "/" cannot be in a name: this nests a folder
    evil_path.parent.mkdir(parents=True)
    (root / table.loc[0, "file"]).rename(evil_path)
    table.loc[0, "file"] = f"img/{EVIL}.png"
    table.loc[1, "race"] = '<b onmouseover="x()">B</b>'
    table.to_csv(root / "labels.csv", index=False)
    out = tmp_path / "run"
    code, output = audit(tiny_model(), root, out, "--min-group-size", "1")
    assert code == 0, output
    return out


class _Elements(HTMLParser):
    """Collects the tags, attribute names and scripts the browser would actually build."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def test_names_and_group_values_render_as_text(evil_run: Path) -> None:
    html = (evil_run / "report.html").read_text(encoding="utf-8")
    elements = _Elements()
    elements.feed(html)
    (script,) = elements.scripts  # the report's own, and nothing a stranger wrote
    assert "Sortable and filterable tables" in script and "alert" not in script
    assert "b" not in elements.tags
    assert not {a for a in elements.attributes if a.startswith("on")}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b onmouseover=" in html


def test_report_is_self_contained(evil_run: Path) -> None:
    html = (evil_run / "report.html").read_text(encoding="utf-8")
    external = re.findall(r"""(?:src|href)\s*=\s*["'](?!data:|#)([^"']+)""", html)
    assert external == []
    assert "data:image/jpeg;base64," in html  # gallery thumbnails, inline
    assert "data:image/png;base64," in html  # mean maps, inline


def test_summary_validates_against_the_shipped_schema(evil_run: Path) -> None:
    import json

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.validate(load_summary(evil_run), schema)


@pytest.mark.slow
def test_demo_summaries_validate_against_the_schema(biased_run: Path, control_run: Path) -> None:
    import json

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    for run_dir in (biased_run, control_run):
        jsonschema.validate(load_summary(run_dir), schema)


def test_report_command_rerenders_without_the_model(evil_run: Path) -> None:
    report = evil_run / "report.html"
    before = report.read_text(encoding="utf-8")
    report.unlink()
    result = CliRunner().invoke(cli, ["report", str(evil_run)])
    assert result.exit_code == 0, result.output
    assert report.read_text(encoding="utf-8") == before


def test_report_command_on_a_wrong_directory_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no summary.json" in result.output


def test_the_gallery_is_capped_and_every_subgroup_keeps_its_most_affected_images(
    evil_run: Path,
) -> None:
    """However many images a run stores, the page holds at most MAX_GALLERY_FIGURES, taken in
    turn from every probe arm and subgroup, best first."""
    import json

    from reports.view import MAX_GALLERY_FIGURES, build_view

    path = evil_run / "gallery.json"
    template = json.loads(path.read_text(encoding="utf-8"))[0]
    stored = [  # 120 arms × subgroups, 5 images each, best first as the audit stores them
        {
            **template,
            "probe": probe,
            "groups": {"gender": gender, "race": f"r{race}"},
            "image_id": f"rank-{rank}",
        }
        for probe in ("blackout@gradcam", "flip")
        for gender in ("female", "male")
        for race in range(30)
        for rank in range(5)
    ]
    path.write_text(json.dumps(stored), encoding="utf-8")
    gallery = build_view(evil_run).gallery
    assert gallery.stored == 600 and len(gallery.figures) == MAX_GALLERY_FIGURES == 3 * 120
    kept: dict[tuple[str, str, str], set[str]] = {}
    for figure in gallery.figures:
        key = (figure.probe, figure.groups["gender"], figure.groups["race"])
        kept.setdefault(key, set()).add(figure.image_id)
    assert len(kept) == 120
    assert all(ids == {"rank-0", "rank-1", "rank-2"} for ids in kept.values())


@pytest.mark.parametrize(("alpha", "level"), [("0.05", "95 %"), ("0.1", "90 %")])
def test_intervals_are_labelled_by_the_level_they_were_computed_at(
    small_dataset: Callable[..., Path],
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    alpha: str,
    level: str,
) -> None:
    """Wilson and Newcombe intervals are at 1 − α; the report said "95 %" whatever α was.
    (The faithfulness bootstrap stays at 95 %, and says so.)"""
    out = tmp_path / "run"
    code, output = audit(
        tiny_model(), small_dataset(n=16), out, "--alpha", alpha, "--probes", "flip"
    )
    assert code == 0, output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f"error rate ({level} CI)" in html and f"Wilson</abbr> {level} intervals" in html
    wrong = "90 %" if level == "95 %" else "95 %"
    assert f"({wrong} CI)" not in html
    rate = load_summary(out)["statistics"]["overall_error"]
    z = {"95 %": 1.959964, "90 %": 1.644854}[level]  # the Wilson interval's own width
    k, n = rate["k"], rate["n"]
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * (k * (n - k) / n + z * z / 4) ** 0.5
    assert abs(rate["ci_low"] - (centre - half)) < 1e-5


@pytest.mark.parametrize(
    ("groups", "scope"), [(2, ""), (3, " for a difference among all 3 tested subgroups")]
)
def test_a_gap_finding_says_when_its_p_is_the_test_across_all_subgroups(
    groups: int, scope: str
) -> None:
    """The finding names the highest and the lowest subgroup, but with more than two its p is
    the omnibus test's across all of them: the sentence says so."""
    from reports.findings import _gap_finding

    rates = [
        GroupRate(name, Rate(100, k, k / 100, None, None), True)
        for name, k in zip(("A", "B", "C")[:groups], (40, 10, 20), strict=False)
    ]
    test = GapTest(
        "error_rate/race", "error_rate", "race", None, None, None, tuple(rates), "chi-square",
        30.0, 1e-6, 0.3, (0.2, 0.4), "A", "B", 1e-5, True, None, 0.091, 0.079,
    )  # fmt: skip
    from types import SimpleNamespace

    summary = SimpleNamespace(statistics=SimpleNamespace(adjusted=()))  # no --adjust-for
    text = _gap_finding(test, summary).text
    assert text.endswith(
        f"p < 0.001{scope} after Holm correction (chi-square); a gap smaller than 9.1 points "
        "could not reliably have been seen here."
    )


def quiet_test(grouping: str, min_detectable_gap: float | None) -> GapTest:
    """A gap test that found nothing: 3 points between two subgroups of 200, p = 0.4; or, with
    no minimum detectable gap, one that could not run (one subgroup of 5)."""
    tested = min_detectable_gap is not None
    rates = (
        GroupRate("A", Rate(200 if tested else 5, 26, 0.13, None, None), tested),
        GroupRate("B", Rate(200, 20, 0.1, None, None), True),
    )
    return GapTest(
        id=f"error_rate/{grouping}", kind="error_rate", grouping=grouping, probe=None,
        region_source=None, method=None, groups=rates,
        test="chi-square" if tested else "not testable", statistic=None,
        p_value=0.4 if tested else None, effect=0.03 if tested else None, effect_ci=None,
        highest=None, lowest=None, p_adjusted=0.4 if tested else None, significant=False,
        monte_carlo_se=None, min_detectable_gap=min_detectable_gap,
        equivalence_bound=0.09 if tested else None,
    )  # fmt: skip


def test_every_gap_table_and_no_gap_line_says_how_large_a_gap_could_go_unseen() -> None:
    from reports.view import _gap_table, _quiet_line

    tested, untested = quiet_test("gender", 0.091), quiet_test("race", None)
    assert _gap_table(tested, "errors", "error rate", "95 %").note == (
        "chi-square: p = 0.4, Holm-adjusted p = 0.4; a gap smaller than 9.1 points could not "
        "reliably have been seen here (80 % power, between the two smallest subgroups in the "
        "test)"
    )
    assert _quiet_line(tested, 10) == (
        "Error rate by gender label: no significant difference (p = 0.4 after Holm correction; "
        "largest gap 3.0 %); a gap smaller than 9.1 points could not reliably have been seen "
        "here."
    )
    # Not tested: no claim about what it could have seen, and no "no significant difference".
    assert "could not" not in _gap_table(untested, "errors", "error rate", "95 %").note
    assert _quiet_line(untested, 10) == (
        "Error rate by race label: not tested (fewer than two subgroups of at least 10 images)."
    )


def test_a_verdict_of_no_gap_says_what_even_the_most_sensitive_test_could_miss() -> None:
    from types import SimpleNamespace

    from reports.findings import verdict

    tests = [quiet_test("gender", 0.091), quiet_test("gender×race", 0.2)]
    summary = SimpleNamespace(
        dataset=SimpleNamespace(images_audited=400, rows=400, group_columns=("gender", "race")),
        statistics=SimpleNamespace(
            alpha=0.05, min_group_size=10, error_gaps=tests, flip_gaps=[], excess=[]
        ),
    )
    assert verdict(summary, []) == (
        "No significant subgroup gap found (α = 0.05, Holm-corrected over every test of the "
        "run): even for the most sensitive test (error rate by gender label), a gap smaller "
        "than 9.1 points could not reliably have been seen here."
    )


def test_the_run_card_gives_the_measured_region_area_beside_its_cap(evil_run: Path) -> None:
    """The cap is the top share of a map; the region kept from it is often smaller, and the
    card says by how much, from the stored records."""
    records = pd.read_parquet(evil_run / "results.parquet")
    guided = records[
        records["skip_reason"].isna() & (records["region_source"] == "attribution")
    ].drop_duplicates(["image_id", "method"])
    areas = 100 * guided["region_area"]
    card = dict(build_view(evil_run).run_card)
    assert card["Region area"] == (
        f"at most 10 % of the image (--region-area); measured {areas.mean():.1f} % on average "
        f"({areas.min():.1f}–{areas.max():.1f} %, {len(guided)} regions)"
    )
    summary = RunStore.open(evil_run).summary()
    title = build_view(evil_run).title
    assert title == f"Audit of tiny.pt on {summary.dataset.images_audited} images of data/"


def test_a_fisher_test_larger_than_2x2_shows_no_statistic_and_its_monte_carlo_error() -> None:
    """Its "statistic" is the observed table's probability (2.6e-10 reads as a measure), so the
    appendix leaves it out; a Monte Carlo p carries its standard error everywhere it is shown."""
    from dataclasses import replace

    from reports.view import _gap_table, _statistic

    base = quiet_test("gender", 0.091)
    monte_carlo = replace(
        base, test="fisher-exact (monte carlo)", statistic=2.6e-10, monte_carlo_se=0.0015
    )
    assert _statistic(monte_carlo) is None
    assert _statistic(replace(base, test="fisher-exact", statistic=3.2)) == 3.2
    assert _statistic(replace(base, statistic=5.1)) == 5.1
    note = _gap_table(monte_carlo, "errors", "error rate", "95 %").note
    assert note.startswith("fisher-exact (monte carlo): p = 0.4 (Monte Carlo SE 0.0015), ")


@pytest.mark.slow
def test_flip_directions_in_the_summary_equal_a_recount_of_the_results(biased_run: Path) -> None:
    """Corrections and breaks per arm, region source and subgroup, recounted row by row from
    results.parquet: over every image of an arm, and over the images with both its edits."""
    table = pq.read_table(biased_run / "results.parquet").to_pylist()
    rows = [r for r in table if r["skip_reason"] is None and r["probe"] is not None]
    groupings = {
        "all": [],
        "gender": ["gender"],
        "race": ["race"],
        "gender×race": ["gender", "race"],
    }
    sources: dict[tuple[str, str | None, str], set[str]] = defaultdict(set)
    for r in rows:
        sources[(r["probe"], r["method"], r["image_id"])].add(r["region_source"])
    expected: Counter[tuple[object, ...]] = Counter()
    for r in rows:
        edits = sources[(r["probe"], r["method"], r["image_id"])]
        for paired in (False, True) if "placebo" in edits and len(edits) == 2 else (False,):
            for name, columns in groupings.items():
                group = "×".join(r[f"group_{c}"] for c in columns) if columns else "all"
                key = (r["probe"], r["method"], r["region_source"], paired, name, group)
                expected[(*key, "n")] += 1
                expected[(*key, "flips")] += int(r["flipped"])
                expected[(*key, "corrections")] += r["direction"] == "correction"
                expected[(*key, "breaks")] += r["direction"] == "break"
    stored: Counter[tuple[object, ...]] = Counter()
    for d in RunStore.open(biased_run).summary().flip_directions:
        key = (d.probe, d.method, d.region_source, d.paired, d.grouping, d.group)
        for count in ("n", "flips", "corrections", "breaks"):
            stored[(*key, count)] = getattr(d, count)
    assert stored == expected
    for direction in ("corrections", "breaks"):  # the biased model's edits go both ways
        assert any(k[-1] == direction and v for k, v in expected.items())
    assert any(k[3] for k in expected)  # and the paired arms are there


def test_a_gated_run_writes_its_verdict_before_its_report_shows_it(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """`audit run --policy` stores gate.json before it renders the report, so the report's
    first screen gives the verdict in the console's words; a run without one shows none."""
    out = tmp_path / "run"
    code, output = audit(
        tiny_model(),
        small_dataset(n=16),
        out,
        "--probes",
        "flip",
        "--fail-on",
        "error_rate_gap > 0.5",
    )
    judged = StoredVerdict.from_json(json.loads((out / "gate.json").read_text(encoding="utf-8")))
    assert code == (0 if judged.holds else 1), output
    html = (out / "report.html").read_text(encoding="utf-8")
    first_screen = html[html.index('id="verdict"') : html.index('class="verdict ')]
    assert str(escape(policy_text(judged))) in first_screen
    assert policy_text(judged) in " ".join(output.split())  # the console says the same
    failed_groups: dict[str, list[str]] = {}  # each failed gate and grouping named once
    for failed in judged.failed:
        named = f"{failed.gate} for {failed.grouping} label"
        failed_groups.setdefault(named, []).append(f"'{failed.group}'")
    for named, groups in failed_groups.items():
        assert first_screen.count(str(escape(f"{named} {', '.join(groups)}"))) == 1
    (out / "gate.json").unlink()
    assert build_view(out).policy is None


def test_the_first_screen_names_many_failures_of_one_gate_in_one_short_phrase(
    small_run: Path,
) -> None:
    """Seven subgroups failing one gate and grouping, two another, and two more gates and
    groupings: the first screen names each of the first three once, with its first four groups
    and how many more, and counts the phrase it left for the policy section."""
    policy = {"source": "/a/long/path/to/policy/audit.toml", "require": "significance"}
    failures = [("error_rate_gap", "gender×race", f"g{i}") for i in range(7)] + [
        ("flip_rate[flip]", "gender", g) for g in ("female", "male")
    ]
    failures += [("error_rate_gap", "gender", "female"), ("flip_rate[flip]", "gender×race", "g0")]
    results = [
        {"gate": gate, "grouping": grouping, "group": group, "outcome": "fail", "value": 0.3}
        | {"maximum": 0.1, "message": "figures"}
        for gate, grouping, group in failures
    ]
    verdict_json = {"holds": False, "policy": policy, "results": results}
    (small_run / "gate.json").write_text(json.dumps(verdict_json), encoding="utf-8")
    shown = build_view(small_run).policy
    assert shown is not None
    assert shown.text.endswith("(policy: audit.toml).")
    assert shown.failed == [
        "error_rate_gap for gender label × race label 'g0', 'g1', 'g2', 'g3' and 3 more",
        "flip_rate[flip] for gender label 'female', 'male'",
        "error_rate_gap for gender label 'female'",
    ]
    assert shown.more_failed == 1


def _finding(kind: str, effect: float, probe: str | None = None) -> Finding:
    grouping = None if kind == "guided_vs_placebo" else "gender"
    return Finding(kind, kind, effect, 0.01, f"{kind}/{probe}", probe=probe, grouping=grouping)  # type: ignore[arg-type]


def test_findings_are_ranked_by_harm_before_effect() -> None:
    """An error-rate gap of 2 points leads a flip-rate gap of 50: being wrong more often for a
    subgroup harms it; reliance comes next, then guided vs placebo, then edit sensitivity."""
    from reports.findings import _rank

    found = sorted(
        [
            _finding("flip_rate", 0.5, "flip"),
            _finding("guided_vs_placebo", 0.4, "blackout"),
            _finding("excess_flip", 0.1, "blackout"),
            _finding("error_rate", 0.02),
            _finding("excess_flip", 0.2, "white_patch"),
            _finding("guided_vs_placebo", 0.3, "white_patch"),
        ],
        key=_rank,
    )
    kinds = ["error_rate", "excess_flip", "excess_flip", "guided_vs_placebo", "guided_vs_placebo"]
    assert [f.kind for f in found] == [*kinds, "flip_rate"]
    assert [f.effect for f in found[1:5]] == [0.2, 0.1, 0.4, 0.3]  # within a kind, by effect
    assert headlines(found) == found[:HEADLINES] and HEADLINES == 5


# A flip finding's first count says what its two words mean.
DIRECTIONS = re.compile(r"(\d+) corrections?: wrong → right, (\d+) breaks?: right → wrong")


@pytest.mark.slow
def test_the_verdict_differs_with_the_evidence_and_flip_findings_say_their_direction(
    biased_run: Path, control_run: Path
) -> None:
    """The biased model is wrong more often for women with a tie; the control model is not, and
    what its edits show is never called reliance: its black square's own effect differs (the
    same regions inpainted show no gap): the two verdicts say so. Every flip finding gives its
    corrections and breaks, and the guided-vs-placebo ones equal a recount of the records."""
    biased, control = (RunStore.open(r).summary() for r in (biased_run, control_run))
    biased_says, control_says = (verdict(run, findings(run)) for run in (biased, control))
    assert biased_says.startswith(
        "Error-rate gap found: the model is wrong more often for gender label 'female' ("
    )
    assert "reliance on the attributed regions also differs, by gender label" in biased_says
    assert control_says.startswith(
        "No error-rate gap found (the most sensitive error-rate test, by gender label: a gap "
        "smaller than"
    )
    # Whatever else the control's edits show, none of it is called reliance outright.
    assert "reliance on the attributed regions" not in control_says, control_says
    assert "the painted edits' own effect (beyond what the same regions erased show)" in (
        control_says
    )
    for run_dir, summary in ((biased_run, biased), (control_run, control)):
        records = pd.read_parquet(run_dir / "results.parquet")
        records = records[records["skip_reason"].isna() & records["probe"].notna()]
        for finding in findings(summary):
            if finding.kind == "error_rate":
                continue
            counts = DIRECTIONS.search(finding.text)
            assert counts, finding.text
            if finding.kind == "guided_vs_placebo":
                test = next(t for t in summary.statistics.paired if t.id == finding.test_id)
                method = (
                    records["method"].isna()
                    if test.method is None
                    else records["method"] == test.method
                )
                arm = records[(records["probe"] == test.probe) & method]
                both = arm.groupby("image_id")["region_source"].transform("nunique") == 2
                guided = arm[both & (arm["region_source"] == test.region_source)]
                assert len(guided) == test.n_pairs
                assert [int(c) for c in counts.groups()] == [
                    int((guided["direction"] == "correction").sum()),
                    int((guided["direction"] == "break").sum()),
                ]


def test_a_figure_that_rounds_to_zero_has_no_sign() -> None:
    assert pct(-0.0003) == "0.0 %" and pct(-0.0) == "0 %"
    assert pct(-0.05) == "-5.0 %" and pct(0.0003) == "0.0 %"
