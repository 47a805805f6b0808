"""Where the face is in an audited image: labels.csv geometry scaled to it, or, where the
dataset gives none, a face box from OpenCV's bundled frontal-face Haar cascade; and where its
hair is, as OpenCV's GrabCut separates it from the face's skin and the background."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from scipy import ndimage

from auditor.data import Sample
from auditor.localisation import ANATOMICAL_REGIONS, Geometry
from auditor.preprocess import ReadImage
from auditor.regions import scale_box

_CASCADE = "haarcascade_frontalface_default.xml"
# The cascade needs some margin around a face; aligned crops (UTKFace, CelebA-aligned) have none.
# Replicating the border by this fraction of the image side lifts detection on UTKFace's crops
# at 96 px from 62 % to 99 % (200 images, measured when this was written).
_PAD = 0.25

# GrabCut's hair (Rother, Kolmogorov and Blake 2004, "GrabCut": interactive foreground
# extraction using iterated graph cuts). Hair may cover the face box down to _HAIRLINE of its
# height: the brows sit at a third of it by the facial thirds (auditor.localisation). The
# face's own skin is an ellipse over the cheeks, nose and mouth, centred _SKIN_CENTRE below the
# face's centre with _SKIN_AXES, in half face-box sizes. A pixel whose CIELAB colour lies within
# squared Mahalanobis distance _SKIN_LIKE of that skin's (the chi-square 95 % point at 3
# degrees of freedom; _SKIN_SPREAD levels² added to the covariance, so a flat patch has one)
# starts as probably not hair. A result under _TOO_LITTLE of the geometric ring has failed.
# One round of GrabCut left less forehead hair than three on 200 UTKFace photos (17 % vs 28 %,
# tests/test_controls.py's measure) for about as little skin (4 % vs 3 %), in half the time.
_GRABCUT_ROUNDS = 1
# GrabCut runs on the image shrunk to at most this side, its hair scaled back: its graph cut
# took 0.9 s per 224 px image against 0.07 s at 96 px (two busy cores).
_GRABCUT_SIDE = 96
_HAIRLINE = 0.3
_SKIN_CENTRE = 0.35
_SKIN_AXES = (0.45, 0.4)
_MIN_SKIN_PIXELS = 20
_SKIN_LIKE = 7.81
_SKIN_SPREAD = 4.0
_TOO_LITTLE = 0.1


@lru_cache(maxsize=1)
def _detector() -> cv2.CascadeClassifier:
    return cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADE)  # type: ignore[attr-defined]


def detect_face(pixels: np.ndarray) -> tuple[float, float, float, float] | None:
    """The largest frontal face in an RGB uint8 image as (x0, y0, x1, y1), or None."""
    gray = cv2.equalizeHist(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY))
    pad = int(_PAD * max(gray.shape))
    padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    side = min(gray.shape)
    faces = _detector().detectMultiScale(
        padded, scaleFactor=1.1, minNeighbors=4, minSize=(max(12, side // 6),) * 2
    )
    if len(faces) == 0:
        return None
    x, y, w, h = (int(v) for v in max(faces, key=lambda f: int(f[2]) * int(f[3])))
    return (float(x - pad), float(y - pad), float(x + w - pad), float(y + h - pad))


def image_geometry(sample: Sample, image: ReadImage) -> Geometry:
    """labels.csv geometry scaled to the audited image; a detected face box when none is given.

    Extra boxes keep their labels.csv names, except that one named like a face region
    ("eyes_box") is renamed "<name> (labels.csv)" so that it does not replace that region.
    """
    size = (image.pixels.shape[0], image.pixels.shape[1])
    sx, sy = size[1] / image.original_size[0], size[0] / image.original_size[1]
    landmarks = (
        {name: (x * sx, y * sy) for name, (x, y) in sample.landmarks.items()}
        if sample.landmarks
        else None
    )
    face = (
        scale_box(sample.face_box, image.original_size, size)
        if sample.face_box is not None
        else detect_face(image.pixels)
    )
    boxes = {
        (f"{name} (labels.csv)" if name in ANATOMICAL_REGIONS else name): scale_box(
            box, image.original_size, size
        )
        for name, box in sample.boxes.items()
    }
    return Geometry(face_box=face, landmarks=landmarks, boxes=boxes)


def grabcut_hair(
    pixels: np.ndarray, face_box: tuple[float, float, float, float], ring: np.ndarray
) -> np.ndarray | None:
    """The hair around ``face_box`` as GrabCut finds it: within the geometric head ``ring``
    (:func:`auditor.regions.face_masks`) and the forehead above the hairline, or None where
    GrabCut fails or finds almost none (the caller keeps the ring then).

    The ring alone holds background and skin beside the hair, and misses the fringe over the
    forehead, which lies inside the face box. GrabCut starts every pixel as probable hair
    except: the face's skin patch and the image border outside the head, which are certain not
    to be; and pixels coloured like that skin, which probably are not. Only these are certain
    because in tight face crops the hair reaches the border and hangs beside the face.
    """
    scale = min(1.0, _GRABCUT_SIDE / max(ring.shape))
    small = (round(ring.shape[0] * scale), round(ring.shape[1] * scale))
    pixels_small = cv2.resize(pixels, small[::-1], interpolation=cv2.INTER_AREA)
    box_small = (face_box[0] * scale, face_box[1] * scale, face_box[2] * scale, face_box[3] * scale)
    ring_small = cv2.resize(ring.astype(np.uint8), small[::-1], interpolation=cv2.INTER_NEAREST)
    face, _, skin = _head_parts(box_small, small)
    if skin.sum() < _MIN_SKIN_PIXELS:
        return None
    border = np.ones(small, dtype=bool)
    border[1:-1, 1:-1] = False
    labels = np.full(small, cv2.GC_PR_FGD, np.uint8)
    labels[_coloured_like(pixels_small, skin)] = cv2.GC_PR_BGD
    labels[(border & (ring_small == 0) & ~face) | skin] = cv2.GC_BGD
    background, foreground = np.zeros((1, 65)), np.zeros((1, 65))  # its colour mixtures
    # GrabCut seeds its colour mixtures by k-means from OpenCV's thread-local random state, so
    # without a fixed seed an image's hair would depend on the images processed before it on
    # that thread, and a resumed or reordered run would not reproduce.
    cv2.setRNGSeed(0)
    try:  # the rectangle is unused when GrabCut starts from labels
        cv2.grabCut(
            pixels_small,
            labels,
            (0, 0, small[1], small[0]),
            background,
            foreground,
            _GRABCUT_ROUNDS,
            cv2.GC_INIT_WITH_MASK,
        )
    except cv2.error:  # a class left without pixels to model: no estimate
        return None
    found = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    full = cv2.resize(found, ring.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    hair = ndimage.binary_opening(full & (ring | _head_parts(face_box, ring.shape)[1]))
    return hair if hair.sum() >= _TOO_LITTLE * ring.sum() else None


def _head_parts(
    face_box: tuple[float, float, float, float], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face ellipse in ``face_box``, its forehead above the hairline, and its skin patch."""
    x0, y0, x1, y1 = face_box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    fw, fh = max(x1 - x0, 1e-6) / 2, max(y1 - y0, 1e-6) / 2
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    face = ((xx - cx) / fw) ** 2 + ((yy - cy) / fh) ** 2 <= 1.0
    forehead = face & (yy < y0 + _HAIRLINE * (y1 - y0))
    skin = ((xx - cx) / (_SKIN_AXES[0] * fw)) ** 2 + (
        (yy - cy - _SKIN_CENTRE * fh) / (_SKIN_AXES[1] * fh)
    ) ** 2 <= 1.0
    return face, forehead, skin


def _coloured_like(pixels: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """The pixels whose CIELAB colour is within ``_SKIN_LIKE`` (squared Mahalanobis distance)
    of the colours of ``patch``."""
    lab = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    sample = lab[patch.ravel()]
    spread = np.cov(sample, rowvar=False) + _SKIN_SPREAD * np.eye(3)
    offset = lab - sample.mean(axis=0)
    distance = np.einsum("ij,jk,ik->i", offset, np.linalg.inv(spread), offset)
    return (distance <= _SKIN_LIKE).reshape(patch.shape)
