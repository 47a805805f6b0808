"""Every probe has a control on the same images: a region probe's region moved at random, or,
where its shape fits nowhere else (the hair round a face), a random blob of the same area and
compactness; a whole-image probe's noise floor, the image shifted by one pixel. The hair is
GrabCut's, which takes the fringe over the forehead that the geometric ring leaves."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from scipy import ndimage

from auditor.data import Sample, load_dataset
from auditor.faces import grabcut_hair
from auditor.preprocess import ReadImage, read_image
from auditor.records import (
    AREA_MATCHED,
    NOISE_FLOOR,
    PLACEBO,
    RESULTS_FILE,
    SAME_SHAPE,
)
from auditor.region_sources import HairRegion, ImageView, random_control
from auditor.regions import (
    COMPACTNESS_TOLERANCE,
    NoPlacebo,
    Region,
    area_matched_region,
    compactness,
    face_masks,
)
from probes.crop_shift import CropShift
from tests.conftest import audit, load_summary

SIZE = 96
FACE_BOX = (30.0, 24.0, 66.0, 72.0)  # a face in the middle: its ring leaves room only round it
HAIR, SKIN, BACKGROUND = (60, 40, 30), (220, 170, 140), (150, 190, 215)
ONE_PIECE = np.ones((3, 3), bool)


def _ring_and_face() -> tuple[Region, Region]:
    masks = face_masks(FACE_BOX, (SIZE, SIZE))
    assert masks is not None
    return masks


def _bar(top: int, left: int, height: int, width: int) -> Region:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[top : top + height, left : left + width] = True
    return Region(mask)


# --- the area-matched blob -------------------------------------------------------------------


def test_compactness_is_one_for_a_disk_and_falls_with_elongation_and_a_ring() -> None:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    disk = (xx - 48) ** 2 + (yy - 48) ** 2 <= 30**2
    assert compactness(disk) == pytest.approx(1.0, abs=0.1)
    # An a × b rectangle has 4πab / (2(a + b))²: π·4/25 for 4:1.
    assert compactness(_bar(10, 10, 15, 60).mask) == pytest.approx(4 * np.pi / 25, rel=0.1)
    assert compactness(_ring_and_face()[0].mask) < 0.3


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", ["ring", "square", "bar"])
def test_an_area_matched_blob_has_the_area_and_compactness_and_avoids_region_and_keep(
    shape: str, seed: int
) -> None:
    ring, face = _ring_and_face()
    region, keep = {
        "ring": (ring, face.mask),
        "square": (_bar(30, 30, 30, 30), np.zeros((SIZE, SIZE), bool)),
        "bar": (_bar(40, 10, 8, 70), _bar(60, 0, 10, SIZE).mask),
    }[shape]
    blob = area_matched_region(region, keep, np.random.default_rng(seed))
    assert isinstance(blob, Region)
    assert blob.area == region.area
    target = compactness(region.mask)
    assert abs(compactness(blob.mask) - target) <= COMPACTNESS_TOLERANCE * target
    assert not (blob.mask & (region.mask | keep)).any()
    assert ndimage.label(blob.mask, structure=ONE_PIECE)[1] == 1


def test_an_area_matched_blob_is_fixed_by_its_seed() -> None:
    ring, face = _ring_and_face()
    first, again, other = (
        area_matched_region(ring, face.mask, np.random.default_rng(seed)) for seed in (7, 7, 8)
    )
    assert isinstance(first, Region) and isinstance(again, Region) and isinstance(other, Region)
    assert np.array_equal(first.mask, again.mask)
    assert not np.array_equal(first.mask, other.mask)


def test_area_matched_blobs_are_placed_all_round_the_free_space() -> None:
    """Nothing but the seed places a blob: over seeds they land left and right of the face,
    and above and below its middle."""
    ring, face = _ring_and_face()
    centres = []
    for seed in range(30):
        blob = area_matched_region(ring, face.mask, np.random.default_rng(seed))
        assert isinstance(blob, Region)
        centres.append(ndimage.center_of_mass(blob.mask))
    rows, columns = np.array(centres).T
    assert (columns < 40).any() and (columns > 56).any()
    assert (rows < 40).any() and (rows > 56).any()


def test_without_room_for_a_blob_the_control_says_so() -> None:
    ring, _ = _ring_and_face()
    keep = ~ring.mask
    keep[:8, :8] = False  # 64 free pixels: far fewer than the ring's
    assert area_matched_region(ring, keep, np.random.default_rng(0)) is NoPlacebo.NO_AREA_MATCH


def test_the_control_is_the_same_shape_where_it_fits_and_an_area_matched_blob_where_not() -> None:
    square = _bar(40, 40, 10, 10)
    kind, twin = random_control((square, None), seed=0, image_id="a.png", salt="gradcam")
    assert kind == SAME_SHAPE and not isinstance(twin, str)
    assert twin[0] is not None and twin[0].area == square.area and twin[1] is None
    ring, face = _ring_and_face()
    kind, blob = random_control((ring, face.mask), seed=0, image_id="a.png", salt="face")
    assert kind == AREA_MATCHED and not isinstance(blob, str)
    assert blob[0] is not None and blob[0].area == ring.area
    assert blob[1] is face.mask, "the same edit: it keeps what the hair crop keeps"
    assert not (blob[0].mask & (ring.mask | face.mask)).any()
    again = random_control((ring, face.mask), seed=0, image_id="a.png", salt="face")[1]
    other = random_control((ring, face.mask), seed=0, image_id="b.png", salt="face")[1]
    assert not isinstance(again, str) and not isinstance(other, str)
    assert again[0] is not None and other[0] is not None
    assert np.array_equal(again[0].mask, blob[0].mask)
    assert not np.array_equal(other[0].mask, blob[0].mask), "seeded per image"
    assert random_control("no face", seed=0, image_id="a.png") == (SAME_SHAPE, "no face")


# --- the hair, by GrabCut --------------------------------------------------------------------


def _portrait() -> tuple[np.ndarray, np.ndarray]:
    """A light background, a face, and dark hair that covers the top of the face box; returns
    the image and its hair."""
    x0, y0, x1, y1 = FACE_BOX
    centre, axes = (
        (int((x0 + x1) / 2), int((y0 + y1) / 2)),
        (int((x1 - x0) / 2), int((y1 - y0) / 2)),
    )
    ramp = np.linspace(0.9, 1.1, SIZE)[:, None, None]
    image = np.clip(ramp * np.array(BACKGROUND), 0, 255).astype(np.uint8).repeat(SIZE, 1)
    image = np.ascontiguousarray(image)
    hair = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(hair, (centre[0], centre[1] - 10), (axes[0] + 6, axes[1] + 4), 0, 180, 360, 1, -1)
    cv2.ellipse(image, centre, axes, 0, 0, 360, SKIN, -1)
    image[hair > 0] = HAIR
    for eye in (centre[0] - 8, centre[0] + 8):
        cv2.circle(image, (eye, centre[1] - 3), 2, (30, 30, 30), -1)
    cv2.ellipse(image, (centre[0], centre[1] + 12), (6, 2), 0, 0, 360, (170, 80, 80), -1)
    noisy = image + np.random.default_rng(0).normal(0, 3, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), hair > 0


def test_grabcut_takes_the_fringe_that_the_ring_leaves_and_little_else() -> None:
    image, hair = _portrait()
    ring, face = _ring_and_face()
    found = grabcut_hair(image, FACE_BOX, ring.mask)
    assert found is not None
    fringe = hair & face.mask & (np.arange(SIZE)[:, None] < FACE_BOX[1] + 12)  # top quarter
    assert (ring.mask & fringe).sum() < 0.3 * fringe.sum(), "the ring stops at the face"
    assert (found & fringe).sum() >= 0.9 * fringe.sum()
    assert (found & hair & ring.mask).sum() >= 0.9 * (hair & ring.mask).sum()
    assert (found & ~hair).sum() <= 0.1 * found.sum(), "background and skin stay"


def _view(pixels: np.ndarray) -> ImageView:
    sample = Sample("a.png", Path("a.png"), "female", {}, face_box=FACE_BOX)
    return ImageView(sample, ReadImage(pixels, (SIZE, SIZE)), {})


@pytest.mark.parametrize("kind", ["flat", "noise"])
def test_the_hair_falls_back_to_the_ring_where_grabcut_finds_none(kind: str) -> None:
    pixels = (
        np.full((SIZE, SIZE, 3), 128, np.uint8)
        if kind == "flat"
        else np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    )
    ring, _ = _ring_and_face()
    assert grabcut_hair(pixels, FACE_BOX, ring.mask) is None
    placed = HairRegion().place(_view(pixels))
    assert not isinstance(placed, str) and placed[0] is not None
    assert np.array_equal(placed[0].mask, ring.mask)
    assert placed[1] is not None and not (placed[1] & ring.mask).any()


def test_the_hair_crop_keeps_the_eyes_nose_and_mouth_and_not_the_rest_of_the_face() -> None:
    image, _ = _portrait()
    placed = HairRegion().place(_view(image))
    assert not isinstance(placed, str) and placed[0] is not None and placed[1] is not None
    region, keep = placed[0].mask, placed[1]
    _, face = _ring_and_face()
    assert not (region & keep).any()
    assert keep[int(FACE_BOX[1] + 0.8 * 48), 48], "the mouth is kept"
    assert keep.sum() < 0.5 * face.area, "cheeks and forehead are not"


# --- on real photographs ---------------------------------------------------------------------

# The forehead band: from 15 % of a face box's height above its top to a quarter of the way
# down (the brows sit at a third), across its middle 80 %. Hair there is what is much darker
# than the face's skin (below 60 % of the median luminance of the cheeks, nose and mouth).
BAND_ABOVE, BAND_BELOW, BAND_MARGIN, DARK = 0.15, 0.25, 0.1, 0.6


@functools.cache
def _hair_on_photos(folder: Path) -> pd.DataFrame:
    """Per photo at 96 px: whether it has a hair region and a control for it (as the audit
    draws them), and its forehead band's dark pixels, those the ring leaves and those the
    audit's hair region leaves."""
    rows = []
    for sample in load_dataset(folder, ("female", "male"), label_column="gender").samples:
        view = ImageView(sample, read_image(sample.path, (SIZE, SIZE)), {})
        placed = HairRegion().place(view)
        if isinstance(placed, str):
            rows.append({"hair": False, "control": None})
            continue
        kind, control = random_control(placed, seed=0, image_id=sample.id, salt="face")
        box = view.geometry.face_box
        assert box is not None and placed[0] is not None
        dark = _forehead_hair(view.image.pixels, box)
        ring, _ = face_masks(box, view.shape) or (None, None)
        assert ring is not None
        rows.append(
            {
                "hair": True,
                "control": None if isinstance(control, str) else kind,
                "dark": int(dark.sum()),
                "ring_leaves": int((dark & ~ring.mask).sum()),
                "grabcut_leaves": int((dark & ~placed[0].mask).sum()),
            }
        )
    return pd.DataFrame(rows)


def _forehead_hair(pixels: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    yy, xx = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
    band = (
        (yy >= y0 - BAND_ABOVE * height)
        & (yy < y0 + BAND_BELOW * height)
        & (xx >= x0 + BAND_MARGIN * width)
        & (xx < x1 - BAND_MARGIN * width)
    )
    skin = ((xx - (x0 + x1) / 2) / (0.45 * width / 2)) ** 2 + (
        (yy - (y0 + y1) / 2 - 0.35 * height / 2) / (0.4 * height / 2)
    ) ** 2 <= 1
    luminance = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return band & (luminance < DARK * np.median(luminance[skin]))


def test_the_hair_crop_gets_a_control_on_nine_in_ten_real_photos(utkface: Path) -> None:
    photos = _hair_on_photos(utkface)
    assert len(photos) == 600
    assert photos["control"].notna().mean() >= 0.9
    assert set(photos["control"].dropna()) <= {SAME_SHAPE, AREA_MATCHED}


def test_grabcut_leaves_less_forehead_hair_than_the_geometric_ring(utkface: Path) -> None:
    """The ring stops at the face box, under which UTKFace's fringes lie; GrabCut's hair
    reaches into the forehead. Pooled over the photos with a hair region."""
    photos = _hair_on_photos(utkface)
    with_hair = photos[photos["hair"]]
    ring = with_hair["ring_leaves"].sum() / with_hair["dark"].sum()
    grabcut = with_hair["grabcut_leaves"].sum() / with_hair["dark"].sum()
    assert ring > 0.5, "the measure sees the hair the ring leaves"
    assert grabcut < 0.6 * ring


# --- whole-image probes: the noise floor -----------------------------------------------------


def test_the_noise_floor_is_the_image_moved_by_exactly_one_pixel() -> None:
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    shifted = CropShift(shift=1 / SIZE)(image=image)["image"]
    assert np.array_equal(shifted[:-1, :-1], image[1:, 1:])
    assert np.array_equal(shifted[-1, :-1], image[-1, 1:])  # the edge repeats


def test_whole_image_probes_share_a_noise_floor_and_hair_gets_a_control_in_a_run(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    """One shifted image per photo, scored once and recorded as the control of each
    whole-image probe; its probabilities are the model's on the image moved one pixel."""
    model_path, data, out = tiny_model(), small_dataset(n=12), tmp_path / "run"
    code, output = audit(
        model_path, data, out, "--probes", "flip,grayscale,crop_shift,hair_crop",
        "--faithfulness-images", "0",
    )  # fmt: skip
    assert code == 0, output
    results = pd.read_parquet(out / RESULTS_FILE)
    controls = results[results["region_source"] == PLACEBO]
    floors = controls[controls["control_kind"] == NOISE_FLOOR]
    assert set(floors["probe"]) == {"flip", "grayscale", "crop_shift"}
    assert floors.groupby("probe").size().eq(12).all()
    assert (floors["region_area"] == 1.0).all() and floors["skip_reason"].isna().all()
    shared = floors.groupby("image_id")["probed_probs"].agg(lambda p: len({tuple(v) for v in p}))
    assert (shared == 1).all(), "one shifted image per photo, whatever the probe"
    expected = _scores_of_shifted_images(model_path, data, sorted(floors["image_id"].unique()))
    recorded = floors[floors["probe"] == "flip"].set_index("image_id").sort_index()
    np.testing.assert_allclose(np.stack(recorded["probed_probs"].to_numpy()), expected, atol=1e-5)
    hair = controls[controls["probe"] == "hair_crop"]
    assert set(hair["control_kind"]) <= {SAME_SHAPE, AREA_MATCHED}
    assert results.loc[results["region_source"] != PLACEBO, "control_kind"].isna().all()
    paired = {t["probe"]: t for t in load_summary(out)["statistics"]["paired"]}
    assert paired["flip"]["control_kinds"] == {NOISE_FLOOR: 12}
    assert paired["flip"]["n_pairs"] == 12
    assert sum(paired["hair_crop"]["control_kinds"].values()) == paired["hair_crop"]["n_pairs"]


def _scores_of_shifted_images(model_path: Path, data: Path, files: list[str]) -> np.ndarray:
    """The model's class probabilities for each image moved one pixel right and down (the
    edge repeated), computed here from the saved weights."""
    meta = json.loads(model_path.with_suffix(".json").read_text())
    model = timm.create_model(meta["arch"], num_classes=len(meta["classes"])).eval()
    model.load_state_dict(torch.load(model_path, weights_only=True))
    size = meta["input_size"]
    pixels = np.stack([read_image(data / f, (size, size)).pixels for f in files])
    shifted = np.concatenate([pixels[:, 1:], pixels[:, -1:]], axis=1)
    shifted = np.concatenate([shifted[:, :, 1:], shifted[:, :, -1:]], axis=2)
    tensor = (torch.from_numpy(shifted).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        return torch.softmax(model(tensor), dim=1).numpy()


# --- the demo --------------------------------------------------------------------------------


def test_the_hair_crop_gets_a_control_on_nine_in_ten_demo_images(control_run: Path) -> None:
    results = pd.read_parquet(control_run / RESULTS_FILE)
    hair = results[(results["probe"] == "hair_crop") & results["skip_reason"].isna()]
    images = results["image_id"].nunique()
    controls = hair[hair["region_source"] == PLACEBO]
    assert controls["image_id"].nunique() >= 0.9 * images
    assert set(controls["control_kind"]) <= {SAME_SHAPE, AREA_MATCHED}
    (paired,) = (
        t for t in load_summary(control_run)["statistics"]["paired"] if t["probe"] == "hair_crop"
    )
    assert sum(paired["control_kinds"].values()) == paired["n_pairs"] == len(controls)
    html = (control_run / "report.html").read_text(encoding="utf-8")
    names = {SAME_SHAPE: "same shape", AREA_MATCHED: "area-matched"}
    shown = ", ".join(f"{names[kind]} {n}" for kind, n in paired["control_kinds"].items())
    assert f"<td>{shown}</td>" in html, "the paired table says what each pair's control was"
