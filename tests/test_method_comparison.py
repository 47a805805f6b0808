"""Several attribution methods side by side on the planted-bias demo: which map to trust."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditor.data import load_dataset
from auditor.demo import DemoWorld
from auditor.localisation import Geometry, align_box
from auditor.preprocess import read_image
from auditor.regions import scale_box
from auditor.store import RunStore
from tests.conftest import BIASED_METHODS, load_summary

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", BIASED_METHODS)
@pytest.mark.parametrize("metric", ["deletion_auc", "insertion_auc"])
def test_each_gradient_cam_beats_a_random_map(biased_run: Path, method: str, metric: str) -> None:
    """Deletion AUC lower and insertion AUC higher than a random map's, intervals apart."""
    rows = load_summary(biased_run)["attribution"]["faithfulness"]
    row = next(r for r in rows if r["method"] == method and r["metric"] == metric)
    assert row["beats_random"]
    if metric == "deletion_auc":
        assert row["method_ci"][1] < row["random_ci"][0]
    else:
        assert row["method_ci"][0] > row["random_ci"][1]


def test_mean_map_of_misled_women_peaks_on_the_tie(demo_world: DemoWorld, biased_run: Path) -> None:
    """Averaged in the canonical face frame, Grad-CAM on the women the model took for men looks
    at the necktie: the peak lies inside the aligned tie box of most of those images."""
    mean = RunStore.open(biased_run).mean_maps()[("gradcam", "gender", "female", "error")]
    peak_y, peak_x = np.unravel_index(np.argmax(mean), mean.shape)

    truth = pd.read_csv(demo_world.audit_dir / "labels.csv").set_index("file")
    results = pd.read_parquet(biased_run / "results.parquet")
    results = results[results["skip_reason"].isna()].drop_duplicates("image_id")
    misled = results[(results["label"] == "female") & (results["orig_pred"] == "male")]
    samples = {
        s.id: s
        for s in load_dataset(
            demo_world.audit_dir, ("female", "male"), label_column="gender"
        ).samples
    }
    inside = []
    for image_id in misled["image_id"]:
        sample = samples[image_id]
        if not sample.boxes.get("tie"):
            continue
        image = read_image(sample.path, (96, 96))
        assert sample.face_box is not None
        geometry = Geometry(face_box=scale_box(sample.face_box, image.original_size, (96, 96)))
        box = align_box(scale_box(sample.boxes["tie"], image.original_size, (96, 96)), geometry)
        assert box is not None
        inside.append(box[0] <= peak_x <= box[2] and box[1] <= peak_y <= box[3])
    assert int(truth.loc[misled["image_id"], "tie"].sum()) >= 20
    assert np.mean(inside) > 0.8


def test_report_compares_the_methods(biased_run: Path) -> None:
    html = (biased_run / "report.html").read_text(encoding="utf-8")
    section = html[html.index('id="methods"') : html.index('id="gallery"')]
    for method in BIASED_METHODS:
        assert f"<td>{method}</td>" in section.replace("&#43;", "+")
    assert "Faithfulness of each method" in section
    assert "Where gradcam looks" in section
    assert section.count('alt="mean attribution map') >= 3 * 2
