"""A dataset says what its labels stand for: labels.schema.json, a Frictionless Table Schema of
labels.csv, describes the label and group columns and their values; a run keeps what it says.

The demo world writes one, so that its race labels 'A', 'B', 'C' are explained: they are the
skin-tone ranges its synthetic portraits are drawn in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from auditor.data import COLUMN_SCHEMA_FILE, load_dataset
from auditor.demo.world import CLASSES, Split, generate_split, label_schema
from auditor.store import RunStore
from tests.conftest import audit


def test_the_demo_split_says_its_race_labels_are_the_skin_tones_it_draws(tmp_path: Path) -> None:
    """The description is checked against the pixels: the faces of 'A' are the lightest and
    those of 'C' the darkest, as the schema says."""
    generate_split(Split("tones", 45, p_tie_female=0.5, p_tie_male=0.5), tmp_path, seed=0)
    dataset = load_dataset(tmp_path, CLASSES, label_column="gender")
    race = dataset.column_descriptions["race"]
    assert "skin tone" in race.description
    assert [race.values[g].split(" skin tone")[0] for g in "ABC"] == ["light", "medium", "dark"]
    assert "gender label" in dataset.column_descriptions["gender"].description

    table = pd.read_csv(tmp_path / "labels.csv")
    brightness: dict[str, list[float]] = {"A": [], "B": [], "C": []}
    for row in table.itertuples():
        x0, y0, _, y1 = map(int, row.face_box.split(","))
        pixels = np.asarray(Image.open(tmp_path / row.file).convert("L"), dtype=float)
        cheek = pixels[(y0 + y1) // 2 + 2 : (y0 + y1) // 2 + 6, x0 + 3 : x0 + 7]  # below the eyes
        brightness[row.race].append(float(cheek.mean()))
    means = [np.mean(brightness[g]) for g in "ABC"]
    assert means[0] > means[1] > means[2], means


def test_a_run_keeps_what_the_dataset_says_of_its_columns(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    data = small_dataset(n=12)
    schema = label_schema()
    schema["fields"].append({"name": "unused", "description": "not a column of this audit"})
    (data / COLUMN_SCHEMA_FILE).write_text(json.dumps(schema), encoding="utf-8")
    out = tmp_path / "run"
    code, output = audit(tiny_model(), data, out, "--min-group-size", "1")
    assert code == 0, output
    stored = RunStore.open(out).summary().dataset.column_descriptions
    assert set(stored) == {"gender", "race"}
    assert stored["race"].values["C"].startswith("dark skin tone")
    assert stored["gender"].values == {}  # its categories are plain values: nothing to explain


def test_a_dataset_without_a_schema_describes_nothing(
    small_dataset: Callable[..., Path],
) -> None:
    dataset = load_dataset(small_dataset(n=3), CLASSES, label_column="gender")
    assert dataset.column_descriptions == {}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param("{fields: []}", "is not UTF-8 JSON", id="not-json"),
        pytest.param('{"columns": []}', "has no 'fields' list", id="no-fields"),
        pytest.param('{"fields": [{"description": "x"}]}', "fields[0] has no 'name'", id="no-name"),
        pytest.param(
            '{"fields": [{"name": "race", "description": 3}]}',
            "fields[0].description is not a string",
            id="description-not-text",
        ),
        pytest.param(
            '{"fields": [{"name": "race", "categories": {"A": "light"}}]}',
            "fields[0].categories is not a list",
            id="categories-not-a-list",
        ),
        pytest.param(
            '{"fields": [{"name": "race", "categories": [{"label": "light"}]}]}',
            "fields[0].categories[0] needs a string or integer 'value'",
            id="category-without-value",
        ),
    ],
)
def test_a_schema_that_is_not_a_table_schema_stops_the_run_and_says_where(
    small_dataset: Callable[..., Path],
    tiny_model: Callable[..., Path],
    tmp_path: Path,
    text: str,
    names: str,
) -> None:
    data = small_dataset(n=3)
    (data / COLUMN_SCHEMA_FILE).write_text(text, encoding="utf-8")
    code, output = audit(tiny_model(), data, tmp_path / "run")
    assert code == 2, output
    flat = output.replace("\n", "")
    assert str(data / COLUMN_SCHEMA_FILE) in flat and names in flat and "Table Schema" in flat
