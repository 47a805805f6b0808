"""Every image file is either read as what it shows or skipped with a reason that says why.

High-bit-depth and floating-point images are scaled to 8 bits by their depth or range (never
clipped to all white or all black); an image over PIL's decompression-bomb limit, a non-finite
float image, a truncated, empty or non-image file are skips; strings that matplotlib would read as
markup are drawn literally in the report's plots.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import ExifTags, Image

from auditor.preprocess import ImageReadError, read_image
from auditor.run_summary import Rate
from reports.plots import DirectionCount, FlipRatePoint, corrections_breaks_plot, flip_rate_plot
from tests.conftest import audit, load_summary

# A 16-bit ramp over the whole range: clipped to 8 bits it would be almost all white.
RAMP16 = np.linspace(0, 65535, 24 * 32).round().astype(np.uint16).reshape(24, 32)
SIZE = (24, 32)  # (height, width) of the ramp: read at its own size, the resize is the identity


def _grey(pixels: np.ndarray) -> np.ndarray:
    """The RGB read of a grey image."""
    return np.repeat(pixels.astype(np.uint8)[..., None], 3, axis=2)


def _rgb8(seed: int = 0, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@dataclass(frozen=True)
class _Opened:
    mode: str
    info: dict
    n_frames: int


def _opened(path: Path) -> _Opened:
    """What PIL reports about ``path`` (the file closed again)."""
    with Image.open(path) as image:
        return _Opened(image.mode, dict(image.info), getattr(image, "n_frames", 1))


def _read(path: Path) -> np.ndarray:
    return read_image(path, SIZE).pixels


def _skip_reason(path: Path) -> str:
    with pytest.raises(ImageReadError) as caught:
        read_image(path, SIZE)
    return str(caught.value)


# --- high bit depth and floating point ------------------------------------------------------


def test_16bit_grey_png_is_divided_by_257(tmp_path: Path) -> None:
    Image.fromarray(RAMP16).save(tmp_path / "grey16.png")
    assert _opened(tmp_path / "grey16.png").mode == "I;16"
    assert np.array_equal(_read(tmp_path / "grey16.png"), _grey((RAMP16.astype(int) + 128) // 257))


def test_16bit_big_endian_tiff_is_divided_by_257(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "grey16be.tif", RAMP16, byteorder=">")
    assert _opened(tmp_path / "grey16be.tif").mode == "I;16B"
    expected = _grey((RAMP16.astype(int) + 128) // 257)
    assert np.array_equal(_read(tmp_path / "grey16be.tif"), expected)


def test_32bit_integer_tiff_is_scaled_by_its_range(tmp_path: Path) -> None:
    small = np.random.default_rng(0).integers(0, 256, SIZE).astype(np.int32)
    tifffile.imwrite(tmp_path / "small.tif", small)  # 8-bit values: kept
    tifffile.imwrite(tmp_path / "sixteen.tif", RAMP16.astype(np.int32))  # 16-bit values: / 257
    tifffile.imwrite(tmp_path / "wide.tif", RAMP16.astype(np.int32) * 30000 - 10**9)  # min..max
    assert _opened(tmp_path / "wide.tif").mode == "I"
    assert np.array_equal(_read(tmp_path / "small.tif"), _grey(small))
    sixteen = _grey((RAMP16.astype(int) + 128) // 257)
    assert np.array_equal(_read(tmp_path / "sixteen.tif"), sixteen)
    wide = _read(tmp_path / "wide.tif")
    assert wide.min() == 0 and wide.max() == 255
    assert np.abs(wide.astype(int) - sixteen).max() <= 1


def test_unsigned_32bit_tiff_is_not_read_as_signed(tmp_path: Path) -> None:
    # PIL reads uint32 samples into its signed mode: values above 2**31 would wrap negative.
    tifffile.imwrite(tmp_path / "u32.tif", RAMP16.astype(np.uint32) * 65537)
    pixels = _read(tmp_path / "u32.tif")
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.abs(pixels.astype(int) - _grey((RAMP16.astype(int) + 128) // 257)).max() <= 1


def test_float_tiff_in_unit_range_is_multiplied_by_255(tmp_path: Path) -> None:
    floats = (RAMP16 / 65535).astype(np.float32)
    tifffile.imwrite(tmp_path / "unit.tif", floats)
    assert _opened(tmp_path / "unit.tif").mode == "F"
    assert np.array_equal(_read(tmp_path / "unit.tif"), _grey(np.rint(floats * 255.0)))


def test_float_tiff_outside_unit_range_is_stretched_min_to_max(tmp_path: Path) -> None:
    floats = (RAMP16 / 65535 * 1000 - 200).astype(np.float32)
    tifffile.imwrite(tmp_path / "wide.tif", floats)
    pixels = _read(tmp_path / "wide.tif")
    assert pixels.min() == 0 and pixels.max() == 255
    expected = _grey(np.rint((RAMP16 / 65535) * 255))
    assert np.abs(pixels.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_float_image_is_a_skip_that_says_so(tmp_path: Path, bad: float) -> None:
    floats = (RAMP16 / 65535).astype(np.float32)
    floats[3, 4] = bad
    tifffile.imwrite(tmp_path / "bad.tif", floats)
    reason = _skip_reason(tmp_path / "bad.tif")
    assert reason.startswith("non-finite pixel values") and "NaN or infinite" in reason


def test_48bit_and_64bit_colour_keep_their_content(tmp_path: Path) -> None:
    rgb16 = np.stack([RAMP16, RAMP16[::-1], np.full_like(RAMP16, 40000)], axis=-1)
    rgba16 = np.concatenate([rgb16, np.full_like(RAMP16, 65535)[..., None]], axis=-1)
    cv2.imwrite(str(tmp_path / "rgb48.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    cv2.imwrite(str(tmp_path / "rgba64.png"), rgba16[..., [2, 1, 0, 3]])
    tifffile.imwrite(tmp_path / "rgb48.tif", rgb16, photometric="rgb", byteorder=">")
    expected = (rgb16.astype(int) + 128) // 257
    for name in ("rgb48.png", "rgba64.png", "rgb48.tif"):
        assert np.abs(_read(tmp_path / name).astype(int) - expected).max() <= 1, name


# --- other modes and containers -------------------------------------------------------------


def test_cmyk_jpeg_reads_as_its_colours(tmp_path: Path) -> None:
    rgb = _rgb8()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert _opened(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert np.abs(_read(tmp_path / "cmyk.jpg").astype(int) - rgb).mean() < 20
    assert np.corrcoef(_read(tmp_path / "cmyk.jpg").ravel(), rgb.ravel())[0, 1] > 0.8


def test_palette_png_with_transparency_keeps_its_colours(tmp_path: Path) -> None:
    palette = Image.fromarray(_rgb8()).quantize(16)
    palette.save(tmp_path / "p.png", transparency=0)
    assert "transparency" in _opened(tmp_path / "p.png").info
    assert np.array_equal(_read(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))


def test_grey_with_alpha_and_one_bit_images_read_as_grey(tmp_path: Path) -> None:
    grey = Image.fromarray(_rgb8()).convert("L")
    grey.convert("LA").save(tmp_path / "la.png")
    bilevel = grey.convert("1")
    bilevel.save(tmp_path / "bilevel.png")
    assert np.array_equal(_read(tmp_path / "la.png"), _grey(np.asarray(grey)))
    one_bit = _read(tmp_path / "bilevel.png")
    assert set(np.unique(one_bit)) == {0, 255}
    assert np.array_equal(one_bit, _grey(np.asarray(bilevel.convert("L"))))


@pytest.mark.parametrize("suffix", ["gif", "webp"])
def test_an_animation_is_read_as_its_first_frame(tmp_path: Path, suffix: str) -> None:
    frames = [Image.new("RGB", (32, 24), (v, v, v)) for v in (200, 30, 90)]
    frames[0].save(tmp_path / f"anim.{suffix}", save_all=True, append_images=frames[1:])
    assert _opened(tmp_path / f"anim.{suffix}").n_frames == 3
    assert np.abs(_read(tmp_path / f"anim.{suffix}").astype(int) - 200).max() <= 2


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    rgb = _rgb8(shape=(24, 32))
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[ExifTags.Base.Orientation] = 6  # stored rotated: viewers turn it 90° clockwise
    image.save(tmp_path / "turned.png", exif=exif)
    read = read_image(tmp_path / "turned.png", (32, 24))
    assert read.original_size == (24, 32)  # (width, height) as shown
    assert np.array_equal(read.pixels, np.rot90(rgb, k=-1))


def test_a_one_pixel_image_reads(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (10, 200, 30)).save(tmp_path / "dot.png")
    read = read_image(tmp_path / "dot.png", (8, 8))
    assert read.original_size == (1, 1)
    assert (read.pixels == np.array([10, 200, 30], dtype=np.uint8)).all()


def test_ordinary_8bit_rgb_is_read_exactly_as_pil_converts_and_resizes(tmp_path: Path) -> None:
    rgb = _rgb8(shape=(50, 70))
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg")
    for name in ("rgb.png", "rgb.jpg"):
        with Image.open(tmp_path / name) as image:
            expected = np.asarray(image.convert("RGB").resize((40, 32), Image.Resampling.BILINEAR))
        assert np.array_equal(read_image(tmp_path / name, (32, 40)).pixels, expected)


# --- skips ----------------------------------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` grey pixels and holds none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(
    "side",
    [
        # 100 M pixels: PIL warns (an error here, as under pytest) and would decode it.
        pytest.param(10_000, id="over-the-warning-limit"),
        pytest.param(
            10_000,
            id="over-the-warning-limit-warnings-ignored",
            marks=pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
        ),
        pytest.param(20_000, id="over-the-error-limit"),  # 400 M pixels: PIL refuses
    ],
)
def test_a_decompression_bomb_is_a_skip_without_decoding(tmp_path: Path, side: int) -> None:
    bomb = png_header_only(tmp_path / "bomb.png", side, side)
    reason = _skip_reason(bomb)
    assert reason.startswith("image too large (possible decompression bomb)")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p.write_bytes(b""), id="zero-bytes"),
        pytest.param(lambda p: p.write_text("this is not an image"), id="text-named-png"),
        pytest.param(lambda p: p.mkdir(), id="directory-named-png"),
        pytest.param(
            lambda p: p.write_bytes(_encoded_png()[: len(_encoded_png()) // 2]), id="truncated"
        ),
    ],
)
def test_a_file_that_is_not_a_whole_image_is_an_unreadable_skip(
    tmp_path: Path, make: Callable[[Path], object]
) -> None:
    make(tmp_path / "x.png")
    assert _skip_reason(tmp_path / "x.png").startswith("unreadable image")


def _encoded_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rgb8()).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_internal_decoder_error_is_an_unreadable_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.fromarray(_rgb8()).save(tmp_path / "x.png")

    def broken(self: Image.Image) -> None:
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr("PIL.PngImagePlugin.PngImageFile.load", broken)
    reason = _skip_reason(tmp_path / "x.png")
    assert reason.startswith("unreadable image") and "unpack requires" in reason


# --- the audit ------------------------------------------------------------------------------


def test_an_audit_reads_unusual_images_and_skips_hostile_ones(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    root = small_dataset(n=16)
    table = pd.read_csv(root / "labels.csv")
    with Image.open(root / table.loc[0, "file"]) as first:
        portrait = np.asarray(first.convert("L"))
    replaced = {
        0: ("grey16.png", lambda p: Image.fromarray(portrait.astype(np.uint16) * 257).save(p)),
        1: ("float.tif", lambda p: tifffile.imwrite(p, (portrait / 255).astype(np.float32))),
        2: ("nan.tif", lambda p: tifffile.imwrite(p, np.full((8, 8), np.nan, np.float32))),
        3: ("bomb.png", lambda p: png_header_only(p, 20_000, 20_000)),
        4: ("dot.png", lambda p: Image.new("RGB", (1, 1), (90, 90, 90)).save(p)),
        5: ("anim.gif", animated_gif),
        6: ("cmyk.jpg", lambda p: Image.fromarray(portrait).convert("CMYK").save(p)),
    }
    for row, (name, write) in replaced.items():
        write(root / "img" / name)
        table.loc[row, "file"] = f"img/{name}"
    table.to_csv(root / "labels.csv", index=False)
    out = tmp_path / "run"
    code, output = audit(tiny_model(), root, out, "--min-group-size", "1", "--probes", "flip")
    assert code == 0, output
    reasons = {
        s["image_id"]: s["reason"]
        for s in load_summary(out)["dataset"]["skipped"]
        if s["probe"] is None
    }
    assert set(reasons) == {"img/nan.tif", "img/bomb.png"}
    assert reasons["img/nan.tif"].startswith("non-finite pixel values")
    assert reasons["img/bomb.png"].startswith("image too large (possible decompression bomb)")
    results = pd.read_parquet(out / "results.parquet")
    assert set(results.loc[results["probe"].isna(), "image_id"]) == set(reasons)


def animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), (v, v, v)) for v in (200, 30)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


# --- plots ----------------------------------------------------------------------------------

# Mathtext would draw "a$b$c" as maths and raise on "$\\frac{$"; "_" would hide a legend entry.
MARKUP = ["$x", "a$b$c", "$\\frac{", "$\\frac{$", "<script>", "_hidden"]
SHOWN = ["$x", "a$b$c", "$\\frac{", "$\\frac{$", "&lt;script&gt;", "_hidden"]  # as SVG text


def test_plot_text_that_looks_like_markup_is_drawn_literally() -> None:
    rate = Rate(n=4, k=1, rate=0.25, ci_low=0.05, ci_high=0.7)
    points = [FlipRatePoint(f"race: {value}", probe, rate) for value in MARKUP for probe in MARKUP]
    rows = [
        DirectionCount(f"race: {value}", probe, 4, 1, 1) for value in MARKUP for probe in MARKUP
    ]
    for svg in (flip_rate_plot(points, MARKUP, "95 %"), corrections_breaks_plot(rows, MARKUP)):
        for text in SHOWN:
            assert f">race: {text}</text>" in svg, text  # a tick label, as one piece of text
            assert f">{text}</text>" in svg, text  # a legend entry or a panel's title
        assert "<script>" not in svg


def test_a_report_renders_group_values_that_look_like_markup(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    root = small_dataset(n=15)
    table = pd.read_csv(root / "labels.csv")
    table["race"] = [MARKUP[i % 5] for i in range(len(table))]
    table.to_csv(root / "labels.csv", index=False)
    out = tmp_path / "run"
    code, output = audit(tiny_model(), root, out, "--min-group-size", "1", "--probes", "flip")
    assert code == 0, output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<script") == 1  # the report's own
    for text in SHOWN[:5]:
        assert f">race label: {text}</text>" in html, text  # the plots' tick labels
