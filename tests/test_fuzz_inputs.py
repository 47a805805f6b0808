"""Property-based tests of the whole input boundary (Hypothesis): generated labels.csv files,
metadata and images, each run through the real loader or CLI. For every example: exit code 0
or 2 only, never 3; every input row accounted for exactly once (audited, or skipped with its
reason); no NaN in any stored figure; the report renders and escapes every string.

Profiles (tests/conftest.py): ``ci`` (the default: derandomised, bounded to a few minutes) and
``fuzz`` (``nox -s fuzz``: many more examples, random seeds) for local runs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from click.testing import CliRunner
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from auditor.cli import cli
from auditor.data import load_dataset
from auditor.errors import DatasetError
from tests.test_input_images import animated_gif, png_header_only

CLASSES = ("female", "male")
HOSTILE = "<script>alert(1)</script>"  # must never reach the report unescaped
SIZE = 32
# The profile's example count is for cheap examples; whole audits take a fraction of it.
EXAMPLES = settings.default.max_examples
# Whole audits take seconds each: a failure is reported as drawn (every draw is printed),
# not shrunk for minutes.
WITHOUT_SHRINKING = (Phase.explicit, Phase.reuse, Phase.generate)

# --- strategies -------------------------------------------------------------------------------

texts = st.one_of(
    st.sampled_from(
        ["", " ", "NaN", "NA", "None", "null", HOSTILE, "$x$", "[/]", "[bold]a", "a,b", 'q"uote',
         "line\nbreak", "tab\there", "é", "日本", "\u202eevil", "\x00nul", "../x", "%s%n"]
    ),
    st.text(max_size=12),
)  # fmt: skip
boxes = st.one_of(
    st.just(""),
    st.sampled_from(["nan,nan,nan,nan", "0,0,inf,5", "1,2,3", "a,b,c,d", "5,5,1,1", "0,0,16,16"]),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=4, max_size=4).map(
        lambda v: ",".join(map(str, v))
    ),
)
IMAGE_KINDS = (
    "rgb", "rgb", "rgb", "grey", "rgba", "palette", "cmyk", "16-bit", "float", "1x1", "truncated",
    "zero-byte", "text", "wrong-extension", "directory", "missing", "animated", "bomb",
)  # fmt: skip


@st.composite
def rows(draw: st.DrawFn, images: int) -> list[dict[str, str]]:
    """labels.csv rows naming the ``images`` files (some twice, some by other names), with
    generated labels, groups and geometry."""
    names = [f"img/{i}.png" for i in range(images)]
    file_names = st.one_of(
        st.sampled_from(names),
        st.sampled_from(names).map(lambda n: "./" + n),
        st.sampled_from(["../outside.png", "/etc/passwd", "img", "", "img/none.png"]),
        texts,
    )
    count = draw(st.integers(min_value=0, max_value=8))
    listed = [*names[: draw(st.integers(0, images))], *draw(st.lists(file_names, max_size=count))]
    return [
        {
            "file": name,
            "gender": draw(st.one_of(st.sampled_from(CLASSES), texts)),
            "race": draw(texts),
            "face_box": draw(boxes),
            "tie_box": draw(boxes),
        }
        for name in listed
    ]


def to_csv(table: list[dict[str, str]], columns: list[str], dialect: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", **dialect)
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


@st.composite
def labels_files(draw: st.DrawFn, images: int) -> tuple[bytes, int | None]:
    """labels.csv bytes, and the number of data rows when the file is well formed (comma,
    UTF-8, properly quoted), else None: such a file may be refused, never crash the loader."""
    table = draw(rows(images))
    columns = ["file", "gender", "race", "face_box", "tie_box"]
    columns = draw(st.permutations(columns))[: draw(st.integers(1, len(columns)))]
    delimiter = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    dialect = {"delimiter": delimiter, "lineterminator": terminator, "quoting": csv.QUOTE_MINIMAL}
    text = to_csv(table, columns, dialect)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace")
    well_formed = delimiter == "," and encoding.startswith("utf-8") and "file" in columns
    if draw(st.booleans()) and data:  # damage: a cut-off file, or stray bytes
        data = data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=8))
        well_formed = False
    multiline = any("\n" in v or "\r" in v or "\x00" in v for r in table for v in r.values())
    return data, len(table) if well_formed and not multiline else None


def write_image(path: Path, kind: str, rng: np.random.Generator) -> None:
    """One image of ``kind``: ordinary, unusual but valid, or broken."""
    pixels = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    if kind == "directory":
        path.mkdir()
    elif kind == "missing":
        return
    elif kind in ("zero-byte", "text"):
        path.write_bytes(b"" if kind == "zero-byte" else b"not an image at all")
    elif kind == "truncated":
        Image.fromarray(pixels).save(path, format="PNG")
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "wrong-extension":
        Image.fromarray(pixels).save(path, format="JPEG")
    elif kind == "16-bit":
        Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(path, format="PNG")
    elif kind == "float":
        Image.fromarray(pixels[..., 0].astype(np.float32) / 255).save(
            path.with_suffix(".tif"), format="TIFF"
        )
        path.with_suffix(".tif").rename(path)
    elif kind == "animated":
        animated_gif(path)
    elif kind == "bomb":
        png_header_only(path, 20_000, 20_000)
    elif kind == "1x1":
        Image.fromarray(pixels[:1, :1]).save(path, format="PNG")
    else:
        image = Image.fromarray(pixels)
        mode = {"grey": "L", "rgba": "RGBA", "palette": "P", "cmyk": "CMYK"}.get(kind, "RGB")
        fmt = "JPEG" if kind == "cmyk" else "PNG"
        image.convert(mode).save(path, format=fmt)


# --- the loader: any labels.csv is a dataset or one clear error ------------------------------


@given(labels_files(images=3))
def test_any_labels_csv_is_loaded_or_refused_with_a_dataset_error(
    generated: tuple[bytes, int | None],
) -> None:
    data, expected_rows = generated
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "img").mkdir()
        for i in range(3):
            write_image(root / "img" / f"{i}.png", "rgb", np.random.default_rng(i))
        (root / "labels.csv").write_bytes(data)
        try:
            dataset = load_dataset(root, CLASSES, label_column="gender")
        except DatasetError as exc:
            assert str(exc) and "\n" not in str(exc).strip()
            assert expected_rows is None or "gender" in str(exc) or "file" in str(exc)
            return
        accounted = len(dataset.samples) + len(dataset.skips)
        if expected_rows is not None:
            assert accounted == expected_rows
        assert all(skip.reason for skip in dataset.skips)
        assert len({s.path.resolve() for s in dataset.samples}) == len(dataset.samples)
        assert all(s.path.resolve().is_relative_to(root.resolve()) for s in dataset.samples)
        for sample in dataset.samples:
            for box in [sample.face_box, *sample.boxes.values()]:
                assert box is None or all(math.isfinite(v) for v in box)


# --- the whole audit: generated datasets of good and broken images ----------------------------


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=2).eval()
    path = tmp_path_factory.mktemp("fuzz-model") / "tiny.pt"
    torch.save(model.state_dict(), path)
    meta = {
        "arch": "test_resnet", "classes": list(CLASSES), "input_size": SIZE,
        "mean": [0.5] * 3, "std": [0.25] * 3,
    }  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def _no_nan(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"summary.json holds {constant}")

    return json.loads(text, parse_constant=refuse)


@settings(max_examples=max(1, EXAMPLES // 8), phases=WITHOUT_SHRINKING)
@given(
    kinds=st.lists(st.sampled_from(IMAGE_KINDS), min_size=1, max_size=6),
    table=st.data(),
)
def test_any_dataset_audits_with_every_row_accounted_for(
    fuzz_model: Path, kinds: list[str], table: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        (root / "img").mkdir(parents=True)
        for i, kind in enumerate(kinds):
            write_image(root / "img" / f"{i}.png", kind, np.random.default_rng(i))
        listed = table.draw(rows(len(kinds)))
        columns = ["file", "gender", "race", "face_box", "tie_box"]
        (root / "labels.csv").write_text(to_csv(listed, columns, {}), encoding="utf-8")
        out = Path(folder) / "run"
        args = [
            "run", str(fuzz_model), str(root), "--out", str(out), "--label-column", "gender",
            "--probes", "blackout,flip", "--method", "saliency", "--faithfulness-images", "0",
            "--fail-on", "flip_rate_gap > 0.5",
        ]  # fmt: skip
        result = CliRunner().invoke(cli, args)
        event(f"exit {result.exit_code}")
        assert result.exit_code in (0, 1, 2), result.output
        if result.exit_code == 2:
            assert "internal error" not in result.output
            return
        summary = _no_nan((out / "summary.json").read_text(encoding="utf-8"))
        readable = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
        results = pd.read_parquet(out / "results.parquet")
        skips = results[results["probe"].isna()]
        audited = results.loc[results["probe"].notna(), "image_id"].nunique()
        assert audited + len(skips) == len(readable) == summary["dataset"]["rows"]
        assert skips["skip_reason"].map(bool).all()
        assert summary["dataset"]["images_audited"] == audited
        if not audited:  # a gate never passes on nothing
            assert result.exit_code == 1
        html = (out / "report.html").read_text(encoding="utf-8")
        assert HOSTILE not in html


# --- metadata: any sidecar JSON loads or is refused with one line ---------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True), texts,
)  # fmt: skip
json_values = st.one_of(
    json_scalars,
    st.lists(json_scalars, max_size=4),
    st.lists(st.lists(json_scalars, max_size=3), max_size=3),
    st.dictionaries(texts, json_scalars, max_size=3),
)
# Per key, values that load (mixed in so that some examples audit) beside generated ones.
VALID_METADATA = {
    "arch": ["test_resnet"],
    "classes": [["female", "male"], ["male", "female"]],
    "input_size": [SIZE, [SIZE, SIZE], f"{SIZE}", [3, SIZE, SIZE], f"{SIZE}x{SIZE}"],
    "mean": [[0.5, 0.5, 0.5], [0, 0, 0]],
    "std": [[0.25, 0.25, 0.25], [1, 1, 1]],
    "target_layer": ["layer4", "stages.3"],
    "arch_kwargs": [{}],
}
metadata_values = {
    key: st.one_of(st.sampled_from(valid), json_values) for key, valid in VALID_METADATA.items()
}


@settings(max_examples=max(1, EXAMPLES // 4), phases=WITHOUT_SHRINKING)
@given(
    changed=st.fixed_dictionaries({}, optional=metadata_values),
    flag=st.one_of(st.none(), st.tuples(st.sampled_from(["--input-size", "--mean"]), texts)),
)
def test_any_metadata_loads_or_exits_2_in_one_line(
    fuzz_model: Path, changed: dict[str, Any], flag: tuple[str, str] | None
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "model.pt"
        model.write_bytes(fuzz_model.read_bytes())
        meta = json.loads(fuzz_model.with_suffix(".json").read_text()) | changed
        model.with_suffix(".json").write_text(json.dumps(meta))
        root = Path(folder) / "data"
        (root / "img").mkdir(parents=True)
        for i in range(2):
            write_image(root / "img" / f"{i}.png", "rgb", np.random.default_rng(i))
        (root / "labels.csv").write_text("file,gender\nimg/0.png,female\nimg/1.png,male\n")
        args = ["run", str(model), str(root), "--out", str(Path(folder) / "run")]
        args += ["--label-column", "gender", "--probes", "flip", "--method", "saliency"]
        result = CliRunner().invoke(cli, [*args, *(flag or ())])
        event(f"exit {result.exit_code}")
        assert result.exit_code in (0, 2), result.output
        if result.exit_code == 2:
            assert "internal error" not in result.output and "Traceback" not in result.output
