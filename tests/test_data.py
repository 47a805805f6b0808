"""The loader reads real photographs, both layouts and face geometry, and never guesses labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from auditor.data import box_from_landmarks, load_dataset
from auditor.faces import detect_face
from auditor.preprocess import read_image
from auditor.regions import face_masks


def test_real_photographs_load_with_their_odd_names(utkface: Path) -> None:
    data = load_dataset(utkface, ("female", "male"), label_column="gender")
    assert len(data.samples) == 600 and not data.skips
    assert data.group_columns == ("gender", "race")
    assert any(s.id.endswith(".jpg.chip.jpg") for s in data.samples)
    table = pd.read_csv(utkface / "labels.csv").set_index("file")
    for sample in data.samples[:50]:
        assert sample.label == table.loc[sample.id, "gender"]  # from labels.csv, not the name
        assert sample.groups == {
            "gender": table.loc[sample.id, "gender"],
            "race": table.loc[sample.id, "race"],
        }


def test_face_detector_finds_most_real_faces_and_hair_regions_fit(utkface: Path) -> None:
    data = load_dataset(utkface, ("female", "male"), label_column="gender")
    found = 0
    for sample in data.samples[:60]:
        pixels = read_image(sample.path, (128, 128)).pixels
        box = detect_face(pixels)
        if box is None:
            continue
        found += 1
        masks = face_masks(box, (128, 128))
        assert masks is not None
        hair, face = masks
        assert not (hair.mask & face.mask).any()
    assert (
        found >= 36
    )  # the cascade misses some tightly cropped faces: those become "not applicable"


def test_image_folder_layout_takes_labels_from_folders(tmp_path: Path) -> None:
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    data = load_dataset(tmp_path, ("cat", "dog"))
    assert sorted((s.id, s.label) for s in data.samples)[:2] == [
        ("cat/0.png", "cat"),
        ("cat/1.png", "cat"),
    ]
    assert len(data.samples) == 6 and data.group_columns == ()


def test_celeba_landmarks_give_a_face_box(tmp_path: Path) -> None:
    Image.new("RGB", (178, 218)).save(tmp_path / "000001.jpg")
    landmarks = {
        "lefteye_x": 69,
        "lefteye_y": 109,
        "righteye_x": 106,
        "righteye_y": 113,
        "nose_x": 77,
        "nose_y": 142,
        "leftmouth_x": 73,
        "leftmouth_y": 152,
        "rightmouth_x": 108,
        "rightmouth_y": 154,
    }
    pd.DataFrame([{"file": "000001.jpg", "label": "a", **landmarks}]).to_csv(
        tmp_path / "labels.csv", index=False
    )
    (sample,) = load_dataset(tmp_path, ("a", "b")).samples
    assert sample.face_box == box_from_landmarks(list(landmarks.values()))
    x0, y0, x1, y1 = sample.face_box
    assert x0 < 69 and x1 > 108 and y0 < 109 and y1 > 154


def test_read_image_matches_pil_bilinear_resize(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert("L").save(tmp_path / "grey.png")  # converted to RGB on read
    image = read_image(tmp_path / "grey.png", (32, 40))
    expected = np.asarray(
        Image.open(tmp_path / "grey.png").convert("RGB").resize((40, 32), Image.BILINEAR)
    )
    assert image.pixels.shape == (32, 40, 3) and image.original_size == (70, 50)
    assert np.array_equal(image.pixels, expected)
