"""labels.csv at the input boundary: what the file as a whole gets wrong stops the run with one
line saying what to do; what one row gets wrong is that row's skip, with its reason; geometry
that is not a finite box is dropped, and the row is still audited."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from auditor.data import LANDMARK_COLUMNS, load_dataset
from auditor.errors import DatasetError
from auditor.records import MISSING_GROUP
from tests.conftest import audit, load_summary

CLASSES = ("female", "male")


def images(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(root / name)


def write_labels(root: Path, text: str | bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    (root / "labels.csv").write_bytes(data)
    return root


# --- the file as a whole: exit 2 with the fix -------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"   \n\n\t\r\n"])
def test_an_empty_or_blank_labels_csv_is_refused_saying_what_it_needs(
    tmp_path: Path, content: bytes
) -> None:
    root = write_labels(tmp_path / "d", content)
    with pytest.raises(DatasetError, match=r"labels\.csv is empty; save it as comma-separated"):
        load_dataset(root, CLASSES, label_column="gender")


@pytest.mark.parametrize(("mark", "name"), [("\t", "tab"), (";", "semicolon")])
def test_another_separator_is_named_with_the_fix(tmp_path: Path, mark: str, name: str) -> None:
    root = write_labels(tmp_path / "d", f"file{mark}gender\na.png{mark}male\n")
    with pytest.raises(DatasetError, match=rf"looks {name}-separated; save it as comma-separated"):
        load_dataset(root, CLASSES, label_column="gender")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("file,gender\nä.png,male\n".encode("latin-1"), r"is not UTF-8 \(byte 12 is 0xe4"),
        ("file,gender\n".encode("utf-16"), r"is UTF-16 \(it starts with its byte-order mark\)"),
    ],
)
def test_a_wrong_encoding_says_save_as_utf8(tmp_path: Path, content: bytes, says: str) -> None:
    root = write_labels(tmp_path / "d", content)
    with pytest.raises(DatasetError, match=rf"{says}.*save it as comma-separated UTF-8"):
        load_dataset(root, CLASSES, label_column="gender")


def test_a_byte_order_mark_and_crlf_lines_are_read(tmp_path: Path) -> None:
    root = write_labels(tmp_path / "d", b"\xef\xbb\xbffile,gender\r\na.png,male\r\n")
    images(root, ["a.png"])
    dataset = load_dataset(root, CLASSES, label_column="gender")
    assert [(s.id, s.label) for s in dataset.samples] == [("a.png", "male")]


def test_a_row_of_too_many_fields_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = write_labels(tmp_path / "d", "file,gender\na.png,male\nb.png,female,extra,more\n")
    with pytest.raises(DatasetError, match=r"cannot parse .*line 3.*save it as comma-separated"):
        load_dataset(root, CLASSES, label_column="gender")


# --- one row: a skip with its reason ----------------------------------------------------------


@pytest.mark.parametrize("missing", ["NaN", "nan", "NA", "N/A", "None", "null", "<NA>", " "])
def test_spellings_of_no_value_in_a_group_column_are_the_missing_group(
    tmp_path: Path, missing: str
) -> None:
    root = write_labels(tmp_path / "d", f"file,gender,race\na.png,male,{missing}\nb.png,male,B\n")
    images(root, ["a.png", "b.png"])
    dataset = load_dataset(root, CLASSES, label_column="gender")
    assert [s.groups["race"] for s in dataset.samples] == [MISSING_GROUP, "B"]


def test_the_same_image_by_two_names_is_audited_once_naming_the_first(tmp_path: Path) -> None:
    root = tmp_path / "d"
    images(root, ["img/a.png"])
    os.symlink(root / "img" / "a.png", root / "link.png")
    write_labels(
        root,
        "file,gender\nimg/a.png,male\n./img/a.png,male\nimg/../img/a.png,female\nlink.png,male\n",
    )
    dataset = load_dataset(root, CLASSES, label_column="gender")
    assert [s.id for s in dataset.samples] == ["img/a.png"]
    assert {s.id: s.reason for s in dataset.skips} == {
        "./img/a.png": "duplicate row for 'img/a.png' (the same image file)",
        "img/../img/a.png": "duplicate row for 'img/a.png' (the same image file) with another "
        "label ('female' here, 'male' there)",
        "link.png": "duplicate row for 'img/a.png' (the same image file)",
    }


def test_a_repeated_row_with_another_label_names_the_conflict(tmp_path: Path) -> None:
    root = write_labels(tmp_path / "d", "file,gender\na.png,male\na.png,female\n")
    images(root, ["a.png"])
    (skip,) = load_dataset(root, CLASSES, label_column="gender").skips
    assert (
        skip.reason
        == "duplicate row for this file with another label ('female' here, 'male' there)"
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad\x00name.png", "the file system cannot open this name"),
        ("x" * 300 + ".png", "the file system cannot open this name: File name too long"),
        ("folder.png", "not a regular file"),
    ],
)
def test_a_name_the_file_system_rejects_is_a_skip_not_a_crash(
    tmp_path: Path, name: str, reason: str
) -> None:
    root = tmp_path / "d"
    images(root, ["a.png"])
    (root / "folder.png").mkdir()
    pd.DataFrame({"file": ["a.png", name], "gender": ["male", "male"]}).to_csv(
        root / "labels.csv", index=False
    )
    dataset = load_dataset(root, CLASSES, label_column="gender")
    assert [s.id for s in dataset.samples] == ["a.png"]
    assert dataset.skips[0].reason.startswith(reason)


# --- geometry: dropped when it is not a finite box, the row still audited --------------------


@pytest.mark.parametrize(
    "face_box",
    ["nan,nan,nan,nan", "0,0,inf,10", "-inf,0,5,5", "1,2,3", "a,b,c,d", "5,5,1,1", "1e999,0,1,1"],
)
def test_a_face_box_that_is_not_a_finite_box_is_dropped_and_the_row_kept(
    tmp_path: Path, face_box: str
) -> None:
    root = write_labels(
        tmp_path / "d", f'file,gender,face_box,tie_box\na.png,male,"{face_box}","{face_box}"\n'
    )
    images(root, ["a.png"])
    (sample,) = load_dataset(root, CLASSES, label_column="gender").samples
    assert sample.face_box is None and sample.boxes == {}


def test_landmarks_that_are_not_finite_give_no_face(tmp_path: Path) -> None:
    columns = ",".join(LANDMARK_COLUMNS)
    root = write_labels(
        tmp_path / "d", f"file,gender,{columns}\na.png,male,1,1,5,1,3,3,nan,6,5,6\n"
    )
    images(root, ["a.png"])
    (sample,) = load_dataset(root, CLASSES, label_column="gender").samples
    assert sample.landmarks is None and sample.face_box is None


def test_bad_geometry_and_bad_names_never_stop_a_run(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """Every row is accounted for once: audited, or skipped with its reason."""
    root = small_dataset(n=12)
    table = pd.read_csv(root / "labels.csv")
    table.loc[0, "face_box"] = "nan,nan,nan,nan"
    table.loc[1, "face_box"] = "0,0,inf,inf"
    table.loc[2, "race"] = "NaN"
    extra = pd.DataFrame(
        [
            {"file": "bad\x00name.png", "gender": "male", "race": "A"},
            {"file": "./" + table.loc[3, "file"], "gender": "female", "race": "A"},
        ]
    )
    pd.concat([table, extra]).to_csv(root / "labels.csv", index=False)
    out = tmp_path / "run"
    code, output = audit(tiny_model(), root, out, "--min-group-size", "2")
    assert code == 0, output
    dataset = load_summary(out)["dataset"]
    assert (dataset["rows"], dataset["images_audited"], dataset["images_skipped"]) == (14, 12, 2)
    results = pd.read_parquet(out / "results.parquet")
    whole_image = results[results["probe"].isna()]
    assert len(whole_image) == 2 and whole_image["skip_reason"].notna().all()
    assert "NaN" not in set(results["group_race"].dropna())
