"""Attribution mass lands in the region it was put in, the Acceptable Mask Ratio rewards small
masks that hold the activation, faces at any pose align to one canonical frame, and mean maps
weigh every image the same."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.data import box_from_landmarks
from auditor.localisation import (
    ANATOMICAL_REGIONS,
    LANDMARK_NAMES,
    Geometry,
    MeanMaps,
    acceptable_mask_ratio,
    align,
    align_box,
    box_mask,
    canonical_geometry,
    canonical_regions,
    js_divergence,
    kl_divergence,
    mass_shares,
    named_regions,
    peak,
)

Point = tuple[float, float]

SHAPE = (96, 96)
# A frontal face in a 96 px image, in the proportions the module assumes.
FACE_BOX = (30.0, 20.0, 66.0, 72.0)
FACE = Geometry(face_box=FACE_BOX)
LANDMARKS: dict[str, Point] = {
    "lefteye": (39.0, 40.8),
    "righteye": (57.0, 40.8),
    "nose": (48.0, 51.2),
    "leftmouth": (40.8, 61.6),
    "rightmouth": (55.2, 61.6),
}


def _blob(shape: tuple[int, int], centre: Point, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2)).astype(
        np.float32
    )


def _moved(
    points: dict[str, Point], angle_deg: float, scale: float, shift: Point
) -> dict[str, Point]:
    """The points turned about the image centre, scaled and shifted: the same face, posed."""
    angle = math.radians(angle_deg)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    cx, cy = SHAPE[1] / 2, SHAPE[0] / 2
    return {
        name: (
            cx + cos * (x - cx) - sin * (y - cy) + shift[0],
            cy + sin * (x - cx) + cos * (y - cy) + shift[1],
        )
        for name, (x, y) in points.items()
    }


# --- named regions -------------------------------------------------------------------------


_PART_CENTRES: dict[str, list[Point]] = {
    "eyes": [LANDMARKS["lefteye"], LANDMARKS["righteye"]],
    "nose": [(48.0, 49.0)],
    "mouth": [(48.0, 61.6)],
}


@pytest.mark.parametrize("part", list(_PART_CENTRES))
@pytest.mark.parametrize(
    "geometry",
    [Geometry(landmarks=LANDMARKS), FACE, Geometry(face_box=FACE_BOX, landmarks=LANDMARKS)],
    ids=["landmarks", "face box", "both"],
)
def test_a_blob_on_a_face_part_gives_most_mass_to_that_part(part: str, geometry: Geometry) -> None:
    attribution = sum(_blob(SHAPE, centre, 1.5) for centre in _PART_CENTRES[part])
    shares = mass_shares(np.asarray(attribution), named_regions(geometry, SHAPE))
    assert max(shares, key=lambda name: shares[name]) == part
    assert shares[part] > 0.7


@pytest.mark.parametrize(
    "geometry",
    [
        Geometry(landmarks=LANDMARKS),
        FACE,
        Geometry(landmarks=_moved(LANDMARKS, 25, 1.2, (5, -3))),
        Geometry(face_box=(-20.0, 50.0, 30.0, 120.0)),  # half outside the image
    ],
    ids=["landmarks", "face box", "turned", "off the edge"],
)
def test_anatomical_regions_cover_every_pixel_exactly_once(geometry: Geometry) -> None:
    regions = named_regions(geometry, SHAPE)
    assert set(regions) == set(ANATOMICAL_REGIONS)
    cover = np.sum([regions[name] for name in ANATOMICAL_REGIONS], axis=0)
    assert (cover == 1).all()


def test_regions_sit_where_the_face_parts_are() -> None:
    regions = named_regions(Geometry(landmarks=LANDMARKS), SHAPE)
    x0, y0, x1, y1 = box_from_landmarks([v for n in LANDMARK_NAMES for v in LANDMARKS[n]])
    cx = round((x0 + x1) / 2)
    assert regions["nose"][round(LANDMARKS["nose"][1]) - 2, round(LANDMARKS["nose"][0])]
    assert regions["mouth"][round(LANDMARKS["leftmouth"][1]), cx]
    assert regions["rest_of_face"][round(y0) + 4, cx]  # forehead
    assert regions["hair"][round(y0) - 3, cx]  # above the forehead
    assert regions["neck_collar"][round(y1) + 5, cx]  # below the chin
    assert regions["background"][SHAPE[0] - 1, 0]


def test_extra_boxes_are_named_clipped_and_may_overlap_the_face() -> None:
    geometry = Geometry(face_box=FACE_BOX, boxes={"tie": (40.0, 70.0, 56.0, 200.0)})
    regions = named_regions(geometry, SHAPE)
    expected = np.zeros(SHAPE, bool)
    expected[70:, 40:56] = True
    assert (regions["tie"] == expected).all()
    assert (regions["tie"] & regions["neck_collar"]).any()


def test_without_face_geometry_only_the_extra_boxes_are_named() -> None:
    regions = named_regions(Geometry(boxes={"tie": (40.0, 70.0, 56.0, 96.0)}), SHAPE)
    assert list(regions) == ["tie"]
    assert named_regions(Geometry(), SHAPE) == {}


def test_geometry_refuses_what_it_cannot_mean() -> None:
    with pytest.raises(ValueError, match="landmarks must be exactly"):
        Geometry(landmarks={"lefteye": (1.0, 1.0)})
    with pytest.raises(ValueError, match="clash"):
        Geometry(face_box=FACE_BOX, boxes={"hair": (0.0, 0.0, 5.0, 5.0)})
    with pytest.raises(ValueError, match="empty"):
        Geometry(face_box=(10.0, 10.0, 10.0, 20.0))


def test_mass_shares_are_fractions_of_the_total_and_zero_for_an_empty_map() -> None:
    regions = named_regions(FACE, SHAPE)
    attribution = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    shares = mass_shares(attribution, regions)
    assert sum(shares[name] for name in ANATOMICAL_REGIONS) == pytest.approx(1.0)
    assert shares["hair"] == pytest.approx(attribution[regions["hair"]].sum() / attribution.sum())
    assert mass_shares(np.zeros(SHAPE, np.float32), regions) == dict.fromkeys(regions, 0.0)


def test_mass_shares_refuse_negative_maps() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        mass_shares(-np.ones(SHAPE, np.float32), named_regions(FACE, SHAPE))


# --- Acceptable Mask Ratio -----------------------------------------------------------------

MASK = box_mask((20.0, 20.0, 44.0, 44.0), SHAPE)
MASK_SHARE = MASK.mean()


def test_amr_of_a_map_activated_exactly_inside_the_mask_is_one_minus_the_mask_share() -> None:
    attribution = MASK.astype(np.float32)
    assert acceptable_mask_ratio(attribution, MASK) == pytest.approx(1 - MASK_SHARE)


def test_amr_of_a_map_activated_everywhere_is_lower() -> None:
    attribution = np.full(SHAPE, 3.0, np.float32)
    amr = acceptable_mask_ratio(attribution, MASK)
    assert amr == pytest.approx(MASK_SHARE * (1 - MASK_SHARE))
    assert amr < 1 - MASK_SHARE


def test_amr_penalises_a_large_mask_that_holds_the_same_activation() -> None:
    attribution = MASK.astype(np.float32)
    large = box_mask((0.0, 0.0, 80.0, 80.0), SHAPE)
    assert acceptable_mask_ratio(attribution, large) < acceptable_mask_ratio(attribution, MASK)
    assert acceptable_mask_ratio(attribution, np.ones(SHAPE, bool)) == 0.0


def test_amr_counts_pixels_at_the_threshold_as_activated_and_ignores_the_rest() -> None:
    attribution = np.full(SHAPE, 0.49, np.float32)
    attribution[MASK] = 1.0
    attribution[0, 0] = 0.5  # exactly half the peak: activated, and outside the mask
    activated = MASK.sum() + 1
    expected = MASK.sum() / activated * (1 - MASK_SHARE)
    assert acceptable_mask_ratio(attribution, MASK, threshold=0.5) == pytest.approx(expected)
    assert acceptable_mask_ratio(np.zeros(SHAPE, np.float32), MASK) == 0.0


# --- canonical frame -----------------------------------------------------------------------


def _canonical_landmarks() -> dict[str, Point]:
    landmarks = canonical_geometry().landmarks
    assert landmarks is not None
    return landmarks


CANONICAL_LEFT_EYE = _canonical_landmarks()["lefteye"]


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [(0, 1.0, (0, 0)), (20, 1.3, (6, -4)), (-35, 0.6, (-10, 12)), (10, 2.0, (3, 3))],
)
def test_the_same_face_at_any_pose_aligns_its_left_eye_to_one_canonical_point(
    angle: float, scale: float, shift: Point
) -> None:
    landmarks = _moved(LANDMARKS, angle, scale, shift)
    attribution = _blob(SHAPE, landmarks["lefteye"], 1.5 * scale)
    aligned = align(attribution, Geometry(landmarks=landmarks))
    assert aligned is not None
    x, y = peak(aligned)
    assert math.hypot(x - CANONICAL_LEFT_EYE[0], y - CANONICAL_LEFT_EYE[1]) <= 1.5


@pytest.mark.parametrize(("scale", "shift"), [(1.0, (0, 0)), (0.5, (-12, 20)), (1.6, (-20, -5))])
def test_face_boxes_align_by_scale_and_translation(scale: float, shift: Point) -> None:
    x0, y0, x1, y1 = (v * scale + shift[i % 2] for i, v in enumerate(FACE_BOX))
    box = (x0, y0, x1, y1)
    # A point a quarter across and 40 % down the box: where the module expects the left eye.
    point = (box[0] + 0.25 * (box[2] - box[0]), box[1] + 0.4 * (box[3] - box[1]))
    aligned = align(_blob(SHAPE, point, 1.5 * scale), Geometry(face_box=box))
    assert aligned is not None
    x, y = peak(aligned)
    assert math.hypot(x - CANONICAL_LEFT_EYE[0], y - CANONICAL_LEFT_EYE[1]) <= 1.5


def test_a_map_shrunk_into_the_frame_is_averaged_not_sampled() -> None:
    # The face is four times the canonical size, so canonical pixels sample every fourth image
    # pixel; a one-pixel map between those samples must still arrive, at the left eye.
    landmarks = {name: (4 * x, 4 * y) for name, (x, y) in _canonical_landmarks().items()}
    attribution = np.zeros((512, 512), np.float32)
    attribution[4 * round(CANONICAL_LEFT_EYE[1]) + 2, 4 * round(CANONICAL_LEFT_EYE[0]) + 2] = 1.0
    aligned = align(attribution, Geometry(landmarks=landmarks))
    assert aligned is not None and aligned.sum() > 0
    x, y = peak(aligned)
    assert math.hypot(x - CANONICAL_LEFT_EYE[0], y - CANONICAL_LEFT_EYE[1]) <= 1.5


def test_a_face_box_drawn_around_the_landmarks_aligns_as_the_landmarks_do() -> None:
    box = box_from_landmarks([v for n in LANDMARK_NAMES for v in LANDMARKS[n]])
    attribution = _blob(SHAPE, LANDMARKS["nose"], 2.0)
    by_landmarks = align(attribution, Geometry(landmarks=LANDMARKS))
    by_box = align(attribution, Geometry(face_box=box))
    assert by_landmarks is not None and by_box is not None
    assert math.dist(peak(by_landmarks), peak(by_box)) <= 1.5


def test_an_extra_box_aligns_with_the_map_so_a_peak_inside_it_stays_inside() -> None:
    landmarks = _moved(LANDMARKS, 15, 0.8, (4, -6))
    tie = (44.0, 74.0, 54.0, 90.0)
    geometry = Geometry(landmarks=landmarks, boxes={"tie": tie})
    aligned = align(_blob(SHAPE, (49.0, 82.0), 2.0), geometry)
    aligned_tie = align_box(tie, geometry)
    assert aligned is not None and aligned_tie is not None
    x, y = peak(aligned)
    assert aligned_tie[0] <= x < aligned_tie[2] and aligned_tie[1] <= y < aligned_tie[3]


def test_without_face_geometry_nothing_aligns() -> None:
    geometry = Geometry(boxes={"tie": (40.0, 70.0, 56.0, 96.0)})
    assert align(np.ones(SHAPE, np.float32), geometry) is None
    assert align_box((40.0, 70.0, 56.0, 96.0), geometry) is None


def test_canonical_regions_hold_the_canonical_landmarks() -> None:
    regions = canonical_regions((128, 128))
    for name, region in [("lefteye", "eyes"), ("righteye", "eyes"), ("nose", "nose")]:
        x, y = _canonical_landmarks()[name]
        assert regions[region][round(y), round(x)]
    assert regions["hair"][5, 64] and regions["neck_collar"][90, 64]
    assert (np.sum([regions[name] for name in ANATOMICAL_REGIONS], axis=0) == 1).all()


# --- mean maps and divergences -------------------------------------------------------------


def test_mean_maps_weigh_every_image_the_same_whatever_its_magnitude() -> None:
    left, right = _blob((32, 32), (8, 16), 2.0), _blob((32, 32), (24, 16), 2.0)
    maps = MeanMaps()
    maps.add("women", 1000 * left)
    maps.add("women", right)
    mean = maps.mean("women")
    assert mean.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(mean, (left / left.sum() + right / right.sum()) / 2, atol=1e-7)
    assert maps.count("women") == 2 and maps.count("men") == 0
    assert maps.keys() == ["women"]


def test_mean_maps_refuse_maps_without_mass_or_of_another_shape() -> None:
    maps = MeanMaps()
    with pytest.raises(ValueError, match="no mass"):
        maps.add("women", np.zeros((32, 32), np.float32))
    maps.add("women", np.ones((32, 32), np.float32))
    with pytest.raises(ValueError, match="earlier maps"):
        maps.add("men", np.ones((16, 16), np.float32))
    with pytest.raises(KeyError):
        maps.mean("men")


def test_kl_is_zero_for_the_same_map_positive_otherwise_and_blind_to_magnitude() -> None:
    p, q = _blob((32, 32), (8, 16), 3.0), _blob((32, 32), (20, 16), 3.0)
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(p, 50 * p) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(p, q) > 0.1


def test_kl_matches_the_formula_in_its_stated_direction() -> None:
    p = np.array([[1.0, 1.0]])
    q = np.array([[9.0, 1.0]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # D(p‖q)
    assert kl_divergence(p, q, eps=0.0) == pytest.approx(expected)
    assert kl_divergence(q, p, eps=0.0) != pytest.approx(expected)


def test_js_is_symmetric_zero_for_the_same_map_and_ln2_for_disjoint_maps() -> None:
    p, q = _blob((32, 32), (8, 16), 3.0), _blob((32, 32), (20, 16), 3.0)
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    assert js_divergence(p, 7 * p) == pytest.approx(0.0, abs=1e-12)
    disjoint_p, disjoint_q = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert js_divergence(disjoint_p, disjoint_q) == pytest.approx(1.0)  # bits


def test_peak_is_column_then_row() -> None:
    mean_map = np.zeros((10, 20), np.float32)
    mean_map[3, 15] = 1.0
    assert peak(mean_map) == (15, 3)
