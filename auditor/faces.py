"""Face boxes where the dataset gives none: OpenCV's bundled frontal-face Haar cascade."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

_CASCADE = "haarcascade_frontalface_default.xml"
# The cascade needs some margin around a face; aligned crops (UTKFace, CelebA-aligned) have none.
# Replicating the border by this fraction of the image side lifts detection on UTKFace's crops
# at 96 px from 62 % to 99 % (200 images, measured when this was written).
_PAD = 0.25


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
