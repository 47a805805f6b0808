"""Where attribution maps look: mass on named face regions, the Acceptable Mask Ratio, and mean
maps per subgroup in one canonical face frame.

Maps are float ``[H, W]``, non-negative raw magnitudes at the audited image's resolution, and
geometry is given in the same pixels (the caller rescales it). Pixel ``(x, y)`` is column ``x``,
row ``y``, centred on those integer coordinates as in :func:`auditor.regions.face_masks` and
OpenCV; boxes are ``(x0, y0, x1, y1)`` with exclusive ends.

One model of face proportions serves three purposes, so they agree with one another: placing
eyes, nose and mouth when only a face box is known, the landmark positions of the canonical
frame, and the canonical frame's named regions. Numpy, scipy and OpenCV only.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage, special

from auditor.data import Box, box_from_landmarks

Point = tuple[float, float]

LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
# In priority order: where two shapes meet, the earlier name keeps the pixel, so the seven
# partition the image. The brief asked for six; "rest_of_face" (forehead, cheeks, chin) is the
# seventh, without which face pixels outside eyes, nose and mouth would belong to no region and
# shares over the anatomical regions would not sum to one.
ANATOMICAL_REGIONS = (
    "eyes", "nose", "mouth", "rest_of_face", "neck_collar", "hair", "background",
)  # fmt: skip
CANONICAL_SIZE = (128, 128)
# Half the peak, as in a full width at half maximum: "where the map is on" for smooth maps.
# Grad-CAM's weakly supervised localisation binarises at 15 % of the peak, which on coarse,
# upsampled CAMs marks much of a face crop as activated and leaves the ratio little to separate.
AMR_THRESHOLD = 0.5

# Landmarks as (x, y) fractions of a face box, for a box in the convention of
# data.box_from_landmarks (these five points give back exactly that box). The box spans about
# the hairline to about the chin; by the classic facial thirds the brows sit at 1/3 and the
# base of the nose at 2/3 of that height, so the eyes (just below the brows) are at 0.4, the
# nose tip (just above its base) at 0.6 and the mouth, a third of the way down the lower third,
# at 0.8.
# Across, the box is two eye distances wide, so the eyes are a quarter in from each side; mouth
# corners at 0.3 and 0.7 make the mouth 0.8 eye distances wide (0.83 in the widely used
# five-point ArcFace alignment template).
_LANDMARKS_IN_BOX: dict[str, Point] = {
    "lefteye": (0.25, 0.40),
    "righteye": (0.75, 0.40),
    "nose": (0.50, 0.60),
    "leftmouth": (0.30, 0.80),
    "rightmouth": (0.70, 0.80),
}
# The canonical face box as fractions of the canonical side. The face is kept small so the frame
# also holds the hair (the head ellipse below reaches the top edge) and a face height and more
# below the chin for the collar and a tie. Its height is 1.43 times its width, the box that
# box_from_landmarks draws when the mouth is 1.14 eye distances below the eyes (1.15 in the
# ArcFace template).
_CANONICAL_FACE_BOX = (0.36, 0.14, 0.64, 0.54)

# Region shapes, in eye distances (d) or in half face-box sizes (as regions.face_masks uses).
_EYE_SEMI_AXES = (0.3, 0.2)  # per eye, along and across the eye line: the eye and its lids
_NOSE_HALF_WIDTH = 0.25  # the nose is about half an eye distance wide at the nostrils
_MOUTH_HALF_HEIGHT = 0.2  # both lips are about 0.35 d tall, plus a margin
_MARGIN = 0.1  # added to the nose's length and the mouth's width, for landmark noise
_HEAD_SEMI_AXES = (1.7, 1.6)  # the head ellipse of regions.face_masks, in half face sizes
_HEAD_RAISE = 0.1  # ... centred this far above the face centre, as there
_NECK_TOP = 0.6  # the neck starts this far below the face centre, as in regions.face_masks
_COLLAR_DEPTH = 1.5  # and ends this far below the chin, in half face heights (0.75 of a face)


@dataclass(frozen=True)
class Geometry:
    """What is known of where the face is in one image, in that image's pixels.

    Attributes:
        face_box: the face, (x0, y0, x1, y1), or None.
        landmarks: the five CelebA points by name (see ``LANDMARK_NAMES``), each (x, y), or
            None. "lefteye" is the eye on the image's left, as in CelebA.
        boxes: extra named boxes (a tie, glasses) from labels.csv columns; may be empty.

    Raises:
        ValueError: landmarks are not exactly the five names, the face box is empty, or an extra
            box is named like an anatomical region (its mass share would be ambiguous).
    """

    face_box: Box | None = None
    landmarks: dict[str, Point] | None = None
    boxes: dict[str, Box] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.landmarks is not None and set(self.landmarks) != set(LANDMARK_NAMES):
            raise ValueError(
                f"landmarks must be exactly {', '.join(LANDMARK_NAMES)}; "
                f"got {', '.join(sorted(self.landmarks))}"
            )
        if self.face_box is not None and not (
            self.face_box[2] > self.face_box[0] and self.face_box[3] > self.face_box[1]
        ):
            raise ValueError(f"face box {self.face_box} is empty; expected x0 < x1 and y0 < y1")
        clash = sorted(set(self.boxes) & set(ANATOMICAL_REGIONS))
        if clash:
            raise ValueError(f"extra box names {clash} clash with anatomical regions; rename them")


def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie in ``box``, clipped to the image."""
    height, width = shape
    x0, x1 = (min(max(math.ceil(v), 0), width) for v in (box[0], box[2]))
    y0, y1 = (min(max(math.ceil(v), 0), height) for v in (box[1], box[3]))
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def named_regions(geometry: Geometry, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Boolean masks of the anatomical regions and of every extra box, clipped to the image.

    Eyes, nose and mouth come from the landmarks where given (ellipses sized by the eye distance
    and turned with the eye line), else from a face box by the proportions above. Rest of face,
    hair and neck come from the face box, or from the box that ``data.box_from_landmarks``
    draws around the landmarks: the face ellipse, the head around it less the face (as
    ``regions.face_masks``), and a face-wide band from the jaw to three quarters of a face
    height below the chin. Background is everything else. The anatomical regions partition the
    image; extra boxes are separate and may overlap them.

    Without a face box or landmarks only the extra boxes are named: nothing is known of where
    the face is, and guessing a central face would invent mass on "eyes".
    """
    regions: dict[str, np.ndarray] = {}
    layout = _face_layout(geometry)
    if layout is not None:
        regions.update(_anatomical_regions(*layout, shape))
    regions.update({name: box_mask(box, shape) for name, box in geometry.boxes.items()})
    return regions


def mass_shares(attribution: np.ndarray, regions: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Share of the map's total mass inside each region; all 0 when the map sums to 0.

    Raises:
        ValueError: the map is not finite and non-negative, or a mask has another shape.
    """
    values = _checked(attribution)
    total = values.sum()
    shares: dict[str, float] = {}
    for name, mask in regions.items():
        if mask.shape != values.shape:
            raise ValueError(f"region {name!r} is {mask.shape}, the map is {values.shape}")
        shares[name] = float(values[mask].sum() / total) if total > 0 else 0.0
    return shares


def acceptable_mask_ratio(
    attribution: np.ndarray, mask: np.ndarray, threshold: float = AMR_THRESHOLD
) -> float:
    """Acceptable Mask Ratio: how much of the activated area lies in ``mask``, less credit for
    large masks.

    ``AMR = |A ∩ M| / |A| × (|I| − |M|) / |I|`` where ``A`` is the activated pixels (map at or
    above ``threshold`` × its maximum), ``M`` the mask and ``I`` the image. The first factor
    alone would score any map 1 against a mask covering the whole image; the second makes a
    mask earn its score by being small. The formula is as defined in the issue. A score of this
    name and form is computed in code from Manuel Günther's group (University of Zurich) on CAMs
    of CelebA facial-attribute classifiers, cf. Zhang, Bieri & Günther, "Biased Binary Attribute
    Classifiers Ignore the Majority Classes", https://arxiv.org/abs/2403.14435; that code
    counts any positive value of a Grad-CAM map as activated. The paper's text was not checked.

    Returns:
        A value in [0, 1); 0 for a map that is zero everywhere (nothing is activated).

    Raises:
        ValueError: ``threshold`` is outside (0, 1], the map is not finite and non-negative, or
            the mask has another shape.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    values = _checked(attribution)
    if mask.shape != values.shape:
        raise ValueError(f"mask is {mask.shape}, the map is {values.shape}")
    peak_value = values.max()
    if peak_value <= 0:
        return 0.0
    activated = values >= threshold * peak_value
    inside = np.count_nonzero(activated & mask) / np.count_nonzero(activated)
    return float(inside * (mask.size - np.count_nonzero(mask)) / mask.size)


def canonical_geometry(canonical_size: tuple[int, int] = CANONICAL_SIZE) -> Geometry:
    """The face box and landmarks of the canonical frame, which every face is aligned to."""
    face_box = _canonical_face_box(canonical_size)
    return Geometry(face_box=face_box, landmarks=_landmarks_in(face_box))


def canonical_regions(canonical_size: tuple[int, int] = CANONICAL_SIZE) -> dict[str, np.ndarray]:
    """The anatomical region masks in the canonical frame, to read mean maps by region."""
    return named_regions(canonical_geometry(canonical_size), canonical_size)


def canonical_transform(
    geometry: Geometry, canonical_size: tuple[int, int] = CANONICAL_SIZE
) -> np.ndarray | None:
    """The 2×3 similarity (rotation, uniform scale, translation) from image to canonical frame.

    From the five landmarks, the least-squares fit to the canonical ones (Umeyama's closed form,
    in complex numbers). Least squares rather than a robust fit (LMEDS, RANSAC): the points are
    not noisy detections with outliers but faces of differing shape, and with five points a
    robust fit would follow whichever two or three agree. Without landmarks, from the face box:
    its centre goes to the canonical box's centre and its area to the canonical box's area
    (the scale is the geometric mean of the width and height ratios), so for a box that is
    squarer or taller than the canonical one neither side alone sets the scale. None without
    either, or for landmarks that all coincide.
    """
    target_box = _canonical_face_box(canonical_size)
    if geometry.landmarks is not None:
        target = _landmarks_in(target_box)
        return _fit_similarity(
            np.array([geometry.landmarks[n] for n in LANDMARK_NAMES], dtype=np.float64),
            np.array([target[n] for n in LANDMARK_NAMES], dtype=np.float64),
        )
    if geometry.face_box is not None:
        return _box_similarity(geometry.face_box, target_box)
    return None


def align(
    attribution: np.ndarray, geometry: Geometry, canonical_size: tuple[int, int] = CANONICAL_SIZE
) -> np.ndarray | None:
    """The map warped into the canonical face frame, or None when the face cannot be placed.

    Magnitudes stay raw (normalise afterwards, as :class:`MeanMaps` does); mass that lands
    outside the canonical frame is dropped. When the warp shrinks the map it is blurred first
    with sigma = (1/scale − 1) / 2, as skimage's anti-aliasing does, so that speckled pixel-level
    maps are averaged rather than sampled.

    Raises:
        ValueError: the map is not finite and non-negative.
    """
    matrix = canonical_transform(geometry, canonical_size)
    if matrix is None:
        return None
    values = _checked(attribution).astype(np.float32)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    if scale < 1:
        values = ndimage.gaussian_filter(values, sigma=(1 / scale - 1) / 2)
    side = _side(canonical_size)
    return cv2.warpAffine(
        values,
        matrix,
        (side, side),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )


def align_box(
    box: Box, geometry: Geometry, canonical_size: tuple[int, int] = CANONICAL_SIZE
) -> Box | None:
    """An image box (a tie) in the canonical frame: the bounding box of its warped corners.

    Under rotation the result is larger than the box itself. None when the face cannot be
    placed, as for :func:`align`.
    """
    matrix = canonical_transform(geometry, canonical_size)
    if matrix is None:
        return None
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=np.float64)
    warped = corners @ matrix.T
    (left, top), (right, bottom) = warped.min(axis=0), warped.max(axis=0)
    return (float(left), float(top), float(right), float(bottom))


class MeanMaps:
    """Mean aligned map per key (a subgroup), each map normalised to sum 1 before it is added.

    Each image weighs the same and the mean is itself a distribution, ready for
    :func:`kl_divergence`. Raw magnitudes would let a few images with large gradients (a
    saturated logit, a bright image) decide the mean. Min-max scaled maps, as pytorch-grad-cam
    returns them, are not comparable either: scaling the peak to 1 gives a map with one sharp
    peak far less total mass than a diffuse one, so diffuse images would dominate. Memory is one
    running sum per key, not one map per image.
    """

    def __init__(self) -> None:
        self._sums: dict[Hashable, np.ndarray] = {}
        self._counts: dict[Hashable, int] = {}
        self._shape: tuple[int, ...] | None = None

    def add(self, key: Hashable, aligned_map: np.ndarray) -> None:
        """Count one image's aligned map under ``key``.

        Raises:
            ValueError: the map sums to 0 (say, all its mass fell outside the canonical frame;
                record that image as a skip), is not finite and non-negative, or differs in
                shape from the maps added before.
        """
        values = _checked(aligned_map)
        if self._shape is not None and values.shape != self._shape:
            raise ValueError(f"map is {values.shape}, earlier maps were {self._shape}")
        total = values.sum()
        if total <= 0:
            raise ValueError("map has no mass to normalise; skip the image and record why")
        self._shape = values.shape
        if key in self._sums:
            self._sums[key] += values / total
        else:
            self._sums[key] = values / total
        self._counts[key] = self._counts.get(key, 0) + 1

    def mean(self, key: Hashable) -> np.ndarray:
        """The mean of the normalised maps under ``key``; it sums to 1.

        Raises:
            KeyError: no map was added under ``key``.
        """
        if key not in self._sums:
            raise KeyError(f"no maps were added under {key!r}")
        return (self._sums[key] / self._counts[key]).astype(np.float32)

    def count(self, key: Hashable) -> int:
        """How many maps were added under ``key`` (0 for a key never seen)."""
        return self._counts.get(key, 0)

    def keys(self) -> list[Hashable]:
        """The keys with at least one map, in the order they were first added."""
        return list(self._sums)

    def partial(self) -> dict[Hashable, tuple[np.ndarray, int]]:
        """Each key's sum of normalised maps and their count: what :meth:`merge` adds."""
        return {key: (total, self._counts[key]) for key, total in self._sums.items()}

    def merge(self, key: Hashable, total: np.ndarray, count: int) -> None:
        """Add another accumulator's sum and count under ``key`` (e.g. one batch's).

        Merging batches' partials in a fixed order gives the same sums whatever order the
        batches ran in.
        """
        if self._shape is not None and total.shape != self._shape:
            raise ValueError(f"map is {total.shape}, earlier maps were {self._shape}")
        self._shape = total.shape
        if key in self._sums:
            self._sums[key] = self._sums[key] + total
        else:
            self._sums[key] = total.astype(np.float64)
        self._counts[key] = self._counts.get(key, 0) + count


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> float:
    """Kullback–Leibler divergence D(p‖q) = Σ p log(p/q), in nats, between two maps as
    distributions.

    The direction matters: D(p‖q) is the cost of describing where ``p`` looks with ``q``, and is
    large where ``p`` has mass that ``q`` lacks. Each map is normalised to sum 1, then ``eps`` is
    added to every pixel and the result renormalised, so a pixel where ``q`` is 0 does not make
    the divergence infinite, and ``eps`` means the same for maps of any magnitude.

    Raises:
        ValueError: the maps differ in shape, one sums to 0, or ``eps`` is negative.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    p_dist, q_dist = _distributions(p, q)
    smoothed_p, smoothed_q = ((d + eps) / (1 + eps * d.size) for d in (p_dist, q_dist))
    return float(special.rel_entr(smoothed_p, smoothed_q).sum())


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits: the mean KL (base 2) of each map to their average,
    from 0 (the same map) to 1 (maps with no mass in common).

    Chosen over the symmetrised KL (Jeffreys divergence) because it is bounded, needs no
    smoothing (the average has mass wherever either map does), and its square root is a metric,
    so values can be compared across subgroup pairs. Symmetric: JS(p, q) = JS(q, p).

    Raises:
        ValueError: the maps differ in shape or one sums to 0.
    """
    p_dist, q_dist = _distributions(p, q)
    middle = (p_dist + q_dist) / 2
    nats = (special.rel_entr(p_dist, middle).sum() + special.rel_entr(q_dist, middle).sum()) / 2
    return float(nats / math.log(2))


def peak(mean_map: np.ndarray) -> tuple[int, int]:
    """(x, y), column then row, of the map's largest value; the first in row order on ties."""
    row, col = np.unravel_index(int(np.argmax(mean_map)), mean_map.shape)
    return int(col), int(row)


def _checked(attribution: np.ndarray) -> np.ndarray:
    """The map as float64, after checking it is a 2-D, finite, non-negative array."""
    values = np.asarray(attribution, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected an [H, W] map, got shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("attribution maps must be finite and non-negative")
    return values


def _distributions(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p_values, q_values = _checked(p), _checked(q)
    if p_values.shape != q_values.shape:
        raise ValueError(f"maps differ in shape: {p_values.shape} and {q_values.shape}")
    p_total, q_total = p_values.sum(), q_values.sum()
    if p_total <= 0 or q_total <= 0:
        raise ValueError("a map that sums to 0 is not a distribution")
    return p_values / p_total, q_values / q_total


def _side(canonical_size: tuple[int, int]) -> int:
    height, width = canonical_size
    if height != width or height < 1:
        raise ValueError(f"the canonical frame is square, got {canonical_size}")
    return height


def _canonical_face_box(canonical_size: tuple[int, int]) -> Box:
    side = _side(canonical_size)
    x0, y0, x1, y1 = (f * side for f in _CANONICAL_FACE_BOX)
    return (x0, y0, x1, y1)


def _landmarks_in(face_box: Box) -> dict[str, Point]:
    x0, y0, x1, y1 = face_box
    return {
        name: (x0 + fx * (x1 - x0), y0 + fy * (y1 - y0))
        for name, (fx, fy) in _LANDMARKS_IN_BOX.items()
    }


def _face_layout(geometry: Geometry) -> tuple[Box, dict[str, Point]] | None:
    """The face box and the landmarks, each derived from the other where it is missing."""
    if geometry.landmarks is not None:
        landmarks = geometry.landmarks
        face_box = geometry.face_box
        if face_box is None:
            face_box = box_from_landmarks([v for n in LANDMARK_NAMES for v in landmarks[n]])
        return face_box, landmarks
    if geometry.face_box is not None:
        return geometry.face_box, _landmarks_in(geometry.face_box)
    return None


def _anatomical_regions(
    face_box: Box, landmarks: Mapping[str, Point], shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    shapes = {
        **_feature_shapes(xx, yy, landmarks),
        **_head_shapes(xx, yy, face_box),
        "background": np.ones(shape, dtype=bool),
    }
    taken = np.zeros(shape, dtype=bool)
    regions: dict[str, np.ndarray] = {}
    for name in ANATOMICAL_REGIONS:
        regions[name] = shapes[name] & ~taken
        taken |= regions[name]
    return regions


def _feature_shapes(
    xx: np.ndarray, yy: np.ndarray, landmarks: Mapping[str, Point]
) -> dict[str, np.ndarray]:
    """Eyes, nose and mouth ellipses, sized by the eye distance and turned with the face."""
    point = {name: np.asarray(landmarks[name], dtype=np.float64) for name in LANDMARK_NAMES}
    eye_line = point["righteye"] - point["lefteye"]
    eye_distance = max(float(np.hypot(*eye_line)), 1.0)
    roll = math.atan2(eye_line[1], eye_line[0])
    eye_axes = (_EYE_SEMI_AXES[0] * eye_distance, _EYE_SEMI_AXES[1] * eye_distance)
    eye_middle = (point["lefteye"] + point["righteye"]) / 2
    nose_length = float(np.hypot(*(point["nose"] - eye_middle)))
    mouth_line = point["rightmouth"] - point["leftmouth"]
    return {
        "eyes": _ellipse(xx, yy, point["lefteye"], eye_axes, roll)
        | _ellipse(xx, yy, point["righteye"], eye_axes, roll),
        # From just below the eye line to past the nose tip.
        "nose": _ellipse(
            xx,
            yy,
            eye_middle + 0.6 * (point["nose"] - eye_middle),
            (_NOSE_HALF_WIDTH * eye_distance, nose_length / 2 + _MARGIN * eye_distance),
            roll,
        ),
        "mouth": _ellipse(
            xx,
            yy,
            (point["leftmouth"] + point["rightmouth"]) / 2,
            (
                float(np.hypot(*mouth_line)) / 2 + _MARGIN * eye_distance,
                _MOUTH_HALF_HEIGHT * eye_distance,
            ),
            math.atan2(mouth_line[1], mouth_line[0]),
        ),
    }


def _head_shapes(xx: np.ndarray, yy: np.ndarray, face_box: Box) -> dict[str, np.ndarray]:
    """Face ellipse, head ellipse and neck band around a face box, as regions.face_masks."""
    x0, y0, x1, y1 = face_box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    fw, fh = (x1 - x0) / 2, (y1 - y0) / 2
    head_axes = (_HEAD_SEMI_AXES[0] * fw, _HEAD_SEMI_AXES[1] * fh)
    return {
        "rest_of_face": _ellipse(xx, yy, (cx, cy), (fw, fh)),
        "neck_collar": (np.abs(xx - cx) < fw)
        & (yy > cy + _NECK_TOP * fh)
        & (yy < y1 + _COLLAR_DEPTH * fh),
        "hair": _ellipse(xx, yy, (cx, cy - _HEAD_RAISE * fh), head_axes),
    }


def _ellipse(
    xx: np.ndarray,
    yy: np.ndarray,
    centre: Point | np.ndarray,
    semi_axes: tuple[float, float],
    angle: float = 0.0,
) -> np.ndarray:
    """Pixels inside an ellipse whose first axis is turned ``angle`` radians from the x axis."""
    cos, sin = math.cos(angle), math.sin(angle)
    dx, dy = xx - float(centre[0]), yy - float(centre[1])
    along, across = dx * cos + dy * sin, dy * cos - dx * sin
    return (along / semi_axes[0]) ** 2 + (across / semi_axes[1]) ** 2 <= 1.0


def _fit_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Least-squares similarity taking ``source`` points to ``target`` points, as a 2×3 matrix.

    As complex numbers a similarity is w = a·z + b; with centred points the least-squares ``a``
    is Σ conj(z)·w / Σ |z|², which cannot reflect, and ``b`` matches the centroids.
    """
    z = source[:, 0] + 1j * source[:, 1]
    w = target[:, 0] + 1j * target[:, 1]
    z_centred, w_centred = z - z.mean(), w - w.mean()
    spread = float(np.vdot(z_centred, z_centred).real)
    if spread < 1e-12:
        return None
    a = np.vdot(z_centred, w_centred) / spread
    b = w.mean() - a * z.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], dtype=np.float64)


def _box_similarity(source: Box, target: Box) -> np.ndarray:
    sx0, sy0, sx1, sy1 = source
    tx0, ty0, tx1, ty1 = target
    scale = math.sqrt((tx1 - tx0) * (ty1 - ty0) / ((sx1 - sx0) * (sy1 - sy0)))
    shift_x = (tx0 + tx1) / 2 - scale * (sx0 + sx1) / 2
    shift_y = (ty0 + ty1) / 2 - scale * (sy0 + sy1) / 2
    return np.array([[scale, 0.0, shift_x], [0.0, scale, shift_y]], dtype=np.float64)
