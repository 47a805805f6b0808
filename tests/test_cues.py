"""Cue discovery finds what a model keys on from the run's own data (issue 13).

On the demo world the biased model's first cue must be the tie, found without the generator's
``tie`` / ``tie_box`` columns (audited from a copy of labels.csv without them), and its removal
must correct the errors it explains beyond a random region's; the control model's cues must
not pass that test. A second world with another planted cue, a coloured badge in the
background, shows that nothing is tuned to ties; its images are larger than the model's input,
so the stored boxes must be in the files' pixels.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import escape
from PIL import Image

from auditor.config import AuditConfig
from auditor.cues import colour_texture, make_embedder, specificity, write_cues
from auditor.cues_store import (
    CUES_FILE,
    CUES_SUMMARY_FILE,
    Cue,
    CueMember,
    CueOccurrence,
    StoredCues,
)
from auditor.demo import DemoWorld
from auditor.demo.train import train_model
from auditor.demo.world import draw_portrait
from auditor.models import ModelMeta, load_function
from auditor.pipeline import run_audit
from auditor.run_summary import JsonShapeError
from reports.cues import cue_section
from tests.conftest import audit

ROOT = Path(__file__).resolve().parents[1]
GENERATOR_COLUMNS = ("tie", "tie_box")  # the demo's ground truth, which the audit must not see
BADGE_COLOURS = ((250, 220, 0), (0, 230, 230), (240, 0, 200), (120, 250, 0))
MODEL_SIDE, FILE_SIDE = 96, 128  # the badge world's model input, and its audited files' size
LEAN = ("--probes", "blackout", "--faithfulness-images", "0")  # a quick run with regions


Box = tuple[float, float, float, float]


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _box(cell: object) -> Box | None:
    if not isinstance(cell, str) or not cell:
        return None
    x0, y0, x1, y1 = (float(v) for v in cell.split(","))
    return (x0, y0, x1, y1)


def _overlap_share(members: list[CueMember], truth: dict[str, Box | None]) -> float:
    """The share of ``members`` whose box overlaps the generator's box of its image."""
    hits = [
        (box := truth[m.image_id]) is not None and _overlaps((m.x0, m.y0, m.x1, m.y1), box)
        for m in members
    ]
    return sum(hits) / len(hits)


def _lean_audit(model: Path, data: Path, out: Path) -> Path:
    """An audit with only what cue discovery needs: Grad-CAM regions and the blackout probe."""
    config = AuditConfig(
        model_path=model,
        dataset_dir=data,
        out_dir=out,
        label_column="gender",
        methods=("gradcam",),
        probes=("blackout",),
        faithfulness_images=0,
        seed=0,
    )
    return run_audit(config)


@pytest.fixture(scope="module")
def withheld(demo_world: DemoWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's audit split with labels.csv less the generator's tie columns."""
    root = tmp_path_factory.mktemp("withheld")
    shutil.copytree(demo_world.audit_dir / "images", root / "images")
    labels = pd.read_csv(demo_world.audit_dir / "labels.csv")
    labels.drop(columns=list(GENERATOR_COLUMNS)).to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def biased_cues(
    demo_world: DemoWorld, withheld: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _lean_audit(demo_world.biased_model, withheld, tmp_path_factory.mktemp("b-cues"))


@pytest.fixture(scope="module")
def control_cues(
    demo_world: DemoWorld, withheld: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _lean_audit(demo_world.control_model, withheld, tmp_path_factory.mktemp("c-cues"))


def _tie_boxes(demo_world: DemoWorld) -> dict[str, Box | None]:
    labels = pd.read_csv(demo_world.audit_dir / "labels.csv")
    return {row.file: _box(row.tie_box) for row in labels.itertuples()}


def _first_cue_covers(stored: StoredCues, region: str, truth: dict[str, Box | None]) -> Cue:
    """The run's first cue: specific to a subgroup, in the named face region, and for at least
    80 % of its members (and of its misclassified ones) over the planted object's box."""
    first = stored.summary.cues[0]
    assert first.specific and first.position.region == region
    members = stored.of_cue(first.id)
    assert _overlap_share([m for m in members if m.misclassified], truth) >= 0.8
    assert _overlap_share(members, truth) >= 0.8
    return first


@pytest.mark.slow
def test_the_biased_models_first_cue_is_the_tie_which_it_relies_on(
    demo_world: DemoWorld, withheld: Path, biased_cues: Path
) -> None:
    assert not set(GENERATOR_COLUMNS) & set(pd.read_csv(withheld / "labels.csv").columns)
    stored = StoredCues.read(biased_cues)
    assert stored is not None
    first = _first_cue_covers(stored, "neck_collar", _tie_boxes(demo_world))
    assert {r.edit for r in first.reliance} == {"blackout", "blackout(fill=inpaint)"}
    for test in first.reliance:
        assert test.significant and test.p_adjusted is not None
        assert test.p_adjusted < stored.summary.alpha
        assert test.corrected > test.placebo_corrected
    section = cue_section(biased_cues, "blurred")
    assert section is not None
    sentence = section.cues[0].sentence
    assert sentence.startswith("Cue 1 — a region at the neck or collar, in ")
    assert "misclassified images labelled 'female'" in sentence
    assert "for a random region (exact McNemar, p < 0.001 after Holm)" in sentence


@pytest.mark.slow
def test_no_cue_of_the_control_model_passes_the_reliance_test(control_cues: Path) -> None:
    stored = StoredCues.read(control_cues)
    assert stored is not None
    assert not any(r.significant for cue in stored.summary.cues for r in cue.reliance)


def _plant_badge_world(root: Path, n: int, side: int, p_female: float, p_male: float, seed: int):
    """Demo portraits with a planted cue of another kind: a badge (a white disc with a coloured
    centre) drawn in the background above the right shoulder, worn with the given probability
    per gender label. labels.csv has the badge's box (ground truth for the test, never audited
    as such: it is named ``badge_truth``, not ``*_box``)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        gender = ("female", "male")[i % 2]
        portrait = draw_portrait(rng, gender, "ABC"[int(rng.integers(3))], tie=False, size=side)
        pixels, truth = portrait.pixels.copy(), ""
        if rng.random() < (p_female if gender == "female" else p_male):
            scale, radius = side / MODEL_SIDE, 7 * side / MODEL_SIDE
            cx, cy = (82 + rng.normal(0, 2)) * scale, (16 + rng.normal(0, 2)) * scale
            colour = BADGE_COLOURS[int(rng.integers(len(BADGE_COLOURS)))]
            centre = (round(cx), round(cy))
            cv2.circle(pixels, centre, round(radius), (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(pixels, centre, round(0.6 * radius), colour, -1, cv2.LINE_AA)
            truth = ",".join(
                f"{v:.1f}" for v in (cx - radius, cy - radius, cx + radius, cy + radius)
            )
        file = f"images/{i:04d}.png"
        Image.fromarray(pixels).save(root / file)
        rows.append(
            {
                "file": file,
                "gender": gender,
                "race": "ABC"[i % 3],
                "face_box": ",".join(map(str, portrait.face_box)),
                "badge_truth": truth,
            }
        )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


@pytest.fixture(scope="module")
def badge_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on 400 portraits where only female-labelled people wear the badge (half
    of them), audited on 240 larger portraits where both labels wear it equally often."""
    root = tmp_path_factory.mktemp("badge")
    started = time.monotonic()
    _plant_badge_world(root / "train", 400, MODEL_SIDE, p_female=0.5, p_male=0.0, seed=1)
    train_model(root / "train", root / "badge.pt", seed=0)
    trained = time.monotonic()
    _plant_badge_world(root / "audit", 240, FILE_SIDE, p_female=0.5, p_male=0.5, seed=2)
    run = _lean_audit(root / "badge.pt", root / "audit", root / "run")
    print(f"badge world: trained in {trained - started:.0f} s, audited in "
          f"{time.monotonic() - trained:.0f} s")  # fmt: skip
    return run


def _badge_boxes(run: Path) -> dict[str, Box | None]:
    labels = pd.read_csv(run.parent / "audit" / "labels.csv", keep_default_na=False)
    return {row.file: _box(row.badge_truth) for row in labels.itertuples()}


@pytest.mark.slow
def test_the_first_cue_of_a_world_with_a_planted_badge_is_the_badge(badge_run: Path) -> None:
    stored = StoredCues.read(badge_run)
    assert stored is not None
    first = _first_cue_covers(stored, "background", _badge_boxes(badge_run))
    blackout = next(r for r in first.reliance if r.edit == "blackout")
    assert blackout.significant and blackout.corrected > blackout.placebo_corrected


@pytest.mark.slow
def test_cue_boxes_are_in_the_image_files_pixels(badge_run: Path) -> None:
    """The files are 128 px, the model sees 96 px: every stored box is its region's box in
    results.parquet scaled to the file and widened to whole pixels."""
    stored = StoredCues.read(badge_run)
    assert stored is not None and stored.members
    records = pd.read_parquet(badge_run / "results.parquet")
    guided = records[
        (records["region_source"] == "attribution") & (records["method"] == "gradcam")
    ].set_index("image_id")
    scale = FILE_SIDE / MODEL_SIDE
    for member in stored.members:
        row = guided.loc[member.image_id]
        expected = (
            math.floor(row.region_x0 * scale),
            math.floor(row.region_y0 * scale),
            math.ceil(row.region_x1 * scale),
            math.ceil(row.region_y1 * scale),
        )
        assert (member.x0, member.y0, member.x1, member.y1) == expected
        assert 0 <= member.x0 < member.x1 <= FILE_SIDE and 0 <= member.y0 < member.y1 <= FILE_SIDE
    assert max(m.x1 for m in stored.members) > MODEL_SIDE  # not the model's pixels


@pytest.mark.slow
def test_cues_round_trip_through_the_typed_reader(badge_run: Path, tmp_path: Path) -> None:
    stored = StoredCues.read(badge_run)
    assert stored is not None
    table = pd.read_parquet(badge_run / CUES_FILE)
    assert list(table.columns) == [f.name for f in dataclasses.fields(CueMember)]
    assert [CueMember(**row) for row in table.to_dict("records")] == list(stored.members)
    write_cues(tmp_path, stored.summary, list(stored.members))
    assert StoredCues.read(tmp_path) == stored
    data = json.loads((tmp_path / CUES_SUMMARY_FILE).read_text(encoding="utf-8"))
    del data["cues"][0]["position"]["region"]
    (tmp_path / CUES_SUMMARY_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(JsonShapeError, match=r"cues\[0\]\.position\.region is missing"):
        StoredCues.read(tmp_path)


@pytest.mark.slow
def test_the_cue_section_blurs_its_montage_unless_asked_and_escapes_text(badge_run: Path) -> None:
    blurred, full, none = (cue_section(badge_run, mode) for mode in ("blurred", "full", "none"))
    assert blurred is not None and full is not None and none is not None
    assert blurred.cues[0].montage and full.cues[0].montage
    assert blurred.cues[0].montage.startswith("data:image/jpeg;base64,")
    assert blurred.cues[0].montage != full.cues[0].montage
    assert none.cues[0].montage is None
    environment = Environment(
        loader=PackageLoader("reports", "templates"), autoescape=select_autoescape(default=True)
    )
    hostile = dataclasses.replace(blurred, note="<script>alert(1)</script>")
    html = environment.get_template("cues.html.j2").render(view=SimpleNamespace(cues=hostile))
    assert "What the model keys on" in html and str(escape(blurred.cues[0].sentence)) in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_run_without_cues_writes_none_and_a_default_run_seals_them(
    tiny_model, small_dataset, tmp_path: Path
) -> None:
    model, data = tiny_model(), small_dataset(n=24)
    code, output = audit(model, data, tmp_path / "off", "--no-cues", *LEAN)
    assert code == 0, output
    assert not (tmp_path / "off" / CUES_SUMMARY_FILE).exists()
    assert cue_section(tmp_path / "off", "blurred") is None
    code, output = audit(model, data, tmp_path / "on", *LEAN)
    assert code == 0, output
    manifest = json.loads((tmp_path / "on" / "manifest.json").read_text(encoding="utf-8"))
    assert {CUES_FILE, CUES_SUMMARY_FILE} <= set(manifest["files"])
    stored = StoredCues.read(tmp_path / "on")
    records = pd.read_parquet(tmp_path / "on" / "results.parquet")
    with_region = records[
        (records["region_source"] == "attribution") & records["region_x0"].notna()
    ]
    assert stored is not None and stored.summary.images == with_region["image_id"].nunique()


def test_a_cluster_as_common_among_correct_predictions_is_not_specific() -> None:
    """Specific: more frequent among one subgroup's errors than among its correct predictions
    (one-sided Fisher exact, Bonferroni over the subgroups screened)."""
    everywhere = [
        CueOccurrence("all", "all", errors=15, error_members=14, correct=585, correct_members=556),
        CueOccurrence("gender", "female", 9, 9, 291, 263),
        CueOccurrence("gender", "male", 6, 5, 294, 293),
    ]
    p_value, _ = specificity(everywhere)
    assert p_value > 0.05
    one_group = [
        CueOccurrence("all", "all", errors=54, error_members=40, correct=546, correct_members=64),
        CueOccurrence("gender", "female", 53, 40, 247, 0),
        CueOccurrence("gender", "male", 1, 0, 299, 64),
    ]
    p_value, where = specificity(one_group)
    assert (where.grouping, where.group) == ("gender", "female")
    from scipy.stats import fisher_exact

    alone = fisher_exact([[40, 13], [0, 247]], alternative="greater").pvalue
    assert p_value == pytest.approx(3 * alone)


def test_a_black_box_is_described_by_colour_and_texture(tmp_path: Path) -> None:
    module = tmp_path / "box.py"
    module.write_text(
        "import numpy as np\n"
        "def predict(images):\n"
        "    return np.tile([0.5, 0.5], (len(images), 1))\n",
        encoding="utf-8",
    )
    meta = ModelMeta(("a", "b"), (32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    embed, descriptor = make_embedder(load_function(f"{module}:predict", meta))
    assert descriptor.startswith("colour and texture")
    red, blue = np.zeros((1, 20, 20, 3), np.uint8), np.zeros((1, 20, 20, 3), np.uint8)
    red[..., 0], blue[..., 2] = 220, 220
    stripes = red.copy()
    stripes[:, ::4] = 0
    described = embed(np.concatenate([red, blue, stripes]))
    assert np.allclose(described[0], colour_texture(red)[0])
    assert not np.allclose(described[0], described[1])  # colour
    assert not np.allclose(described[0], described[2])  # texture


@pytest.mark.parametrize("module", ["auditor.cues_store", "reports.cues"])
def test_readers_of_cues_load_without_torch(module: str) -> None:
    check = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True)
    assert result.returncode == 0, f"importing {module} imports torch"
