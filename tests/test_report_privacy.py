"""What a report shows of the people in the photos: --report-images full, blurred or none.

The blur's strength is specified on real faces (UTKFace, from ../shared): the thumbnails the
report would show must defeat an eye detector and a classic face recogniser that both succeed on
the thumbnails themselves, and on a blur a tenth as strong.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from click.testing import CliRunner
from PIL import Image
from skimage.feature import local_binary_pattern

from auditor.cli import cli
from auditor.gallery import thumbnail
from auditor.store import RunStore
from reports.images import (
    BLUR_SIGMA_FRACTION,
    OUTLINE_INNER,
    OUTLINE_OUTER,
    blurred,
    decode,
    decode_mask,
    face_image_uri,
    outlined,
)
from tests.test_hypothesis import changed, write_spec

FACES = 100


def rerender(run_dir: Path, images: str) -> str:
    args = ["report", str(run_dir), "--report-images", images, "--overwrite"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return (run_dir / "report.html").read_text(encoding="utf-8")


def page_images(html: str) -> list[np.ndarray]:
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', html)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(u))).convert("RGB")) for u in uris]


def detail(pixels: np.ndarray) -> float:
    """Mean gradient magnitude: how much fine structure an image holds."""
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_none_leaves_no_image_data_in_the_report(small_run: Path) -> None:
    html = rerender(small_run, "none")
    assert "data:image" not in html and "<img" not in html
    assert not re.search(r"[A-Za-z0-9+/]{200,}", html), "no encoded blob of any kind"
    assert "This report holds no images" in html
    assert "img/000.png" in html  # the gallery still names the most-affected images


def test_blurred_is_the_default_and_removes_the_detail_full_keeps(small_run: Path) -> None:
    default = (small_run / "report.html").read_text(encoding="utf-8")
    assert "Faces are blurred" in default
    full, blurred_page = (
        page_images(rerender(small_run, "full")),
        page_images(rerender(small_run, "blurred")),
    )
    assert len(full) == len(blurred_page) > 0
    default_images = page_images(default)
    assert all(np.array_equal(a, b) for a, b in zip(default_images, blurred_page, strict=True))
    # Recognisability: UTKFace below. Each figure shows original, heatmap, edited image; the
    # heatmap's sharp outline is detail on purpose, its face is checked by the outline test.
    faces = [i for i in range(len(full)) if i % 3 != 1]
    assert all(detail(blurred_page[i]) < 0.6 * detail(full[i]) for i in faces)


def test_an_outline_is_the_region_edge_in_white_ringed_in_black_and_leaves_the_rest() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    box = np.zeros((40, 50), dtype=bool)
    box[10:20, 5:30] = True
    drawn = outlined(pixels, box)
    border = box.copy()
    border[11:19, 6:29] = False
    ring = np.zeros_like(box)
    ring[9:21, 4:31] = True
    ring[box] = False
    ring[[9, 9, 20, 20], [4, 30, 4, 30]] = False  # a 4-neighbour ring leaves out the corners
    assert (drawn[border] == OUTLINE_INNER).all() and (drawn[ring] == OUTLINE_OUTER).all()
    untouched = ~(border | ring)
    assert np.array_equal(drawn[untouched], pixels[untouched])


def test_the_edit_region_is_outlined_after_the_blur_so_it_stays_sharp(small_run: Path) -> None:
    """The outline is drawn onto the blurred heatmap, not blurred with it: its pixels are
    exactly the outline's colours, while the face inside the region is as blurred as the rest."""
    item = next(i for i in RunStore.open(small_run).gallery() if i.region_png is not None)
    region, heatmap = decode_mask(item.region_png or ""), decode(item.heatmap_png)
    edge = region & ~_interior(region)
    assert edge.any() and not (heatmap[edge] == OUTLINE_INNER).all(), "stored without outline"
    soft = blurred(heatmap)
    drawn = outlined(soft, region)
    assert (drawn[edge] == OUTLINE_INNER).all()
    inside = _interior(_interior(region))  # clear of the outline: blurred, not the stored pixels
    assert np.array_equal(drawn[inside], soft[inside])
    assert not np.array_equal(drawn[inside], heatmap[inside])
    # The page shows it: the outlined JPEG is the report's heatmap, blurred or full.
    shown = face_image_uri(item.heatmap_png, "blurred", item.region_png) or ""
    assert shown in rerender(small_run, "blurred")
    assert face_image_uri(item.heatmap_png, "full", item.region_png) in rerender(small_run, "full")
    (jpeg,) = page_images(f'src="{shown}"')
    assert np.abs(jpeg[edge].astype(int) - 255).mean() < 20  # the JPEG keeps the line sharp


def _interior(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` whose four neighbours are all in it (or off the image)."""
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    return np.asarray(cv2.erode(mask.astype(np.uint8), cross), dtype=bool)


def _thumbnails(utkface: Path) -> list[np.ndarray]:
    files = pd.read_csv(utkface / "labels.csv")["file"][:FACES]
    return [thumbnail(np.asarray(Image.open(utkface / f).convert("RGB"))) for f in files]


def _lbp_descriptor(pixels: np.ndarray) -> np.ndarray:
    """LBPH, the classic face recogniser's descriptor: uniform LBP histograms on a 4 × 4 grid."""
    codes = local_binary_pattern(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), 8, 1, "uniform")
    cells = [c for row in np.array_split(codes, 4, axis=0) for c in np.array_split(row, 4, axis=1)]
    return np.concatenate([np.histogram(c, bins=10, range=(0, 10))[0] / c.size for c in cells])


def _identified(thumbs: list[np.ndarray], transform: Callable[[np.ndarray], np.ndarray]) -> float:
    """Share of transformed thumbnails whose nearest sharp thumbnail (chi-square) is their own."""
    gallery = np.stack([_lbp_descriptor(t) for t in thumbs])
    hits = 0
    for index, sharp in enumerate(thumbs):
        probe = _lbp_descriptor(transform(sharp))
        distance = ((gallery - probe) ** 2 / (gallery + probe + 1e-10)).sum(axis=1)
        hits += int(np.argmin(distance) == index)
    return hits / len(thumbs)


def test_blurred_faces_defeat_a_face_recogniser_that_a_light_blur_does_not(utkface: Path) -> None:
    thumbs = _thumbnails(utkface)
    light = _identified(thumbs, lambda t: cv2.GaussianBlur(t, (0, 0), 1.0))
    report = _identified(thumbs, blurred)
    assert light >= 0.5  # the recogniser works: a 1 px blur leaves most people identifiable
    assert report <= 0.15  # the report's blur leaves it near chance (1 %)


def test_blurred_faces_have_no_eyes_to_find(utkface: Path) -> None:
    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")  # type: ignore[attr-defined]

    def has_eyes(pixels: np.ndarray) -> bool:
        grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        return len(detector.detectMultiScale(grey, 1.1, 3, minSize=(8, 8))) > 0

    thumbs = _thumbnails(utkface)
    sharp = np.mean([has_eyes(t) for t in thumbs])
    soft = np.mean([has_eyes(blurred(t)) for t in thumbs])
    assert sharp >= 0.9 and soft <= 0.3, (sharp, soft, BLUR_SIGMA_FRACTION)


def test_a_hypothesis_page_blurs_faces_by_default_and_can_hold_none(
    small_dataset: Callable[..., Path], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    """The same privacy default and flag as the audit report: blurred thumbnails, never the
    stored ones, unless asked; ``none`` leaves no image in the page."""
    spec = write_spec(tmp_path / "spec.toml", changed(images=None))
    model, data = tiny_model(), small_dataset(n=12)
    pages = {}
    for images in ("blurred", "full", "none"):
        out = tmp_path / images
        extra = [] if images == "blurred" else ["--report-images", images]
        args = ["hypothesis", str(spec), str(model), str(data), "--out", str(out)]
        result = CliRunner().invoke(cli, [*args, "--label-column", "gender", *extra])
        assert result.exit_code == 0, result.output
        pages[images] = (out / "hypothesis.html").read_text(encoding="utf-8")
    stored = [e["original"] for e in json.loads((tmp_path / "full" / "examples.json").read_text())]
    assert stored and not any(png in pages["blurred"] for png in stored)
    assert "Faces are blurred" in pages["blurred"]
    sharp, soft = page_images(pages["full"]), page_images(pages["blurred"])
    assert len(sharp) == len(soft) == 3 * len(stored)
    assert all(detail(b) < 0.6 * detail(a) for a, b in zip(sharp, soft, strict=True))
    assert "data:image" not in pages["none"] and "<img" not in pages["none"]
