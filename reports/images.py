"""What the report may show of the audited images: ``--report-images full|blurred|none``.

An audit report travels: to product owners, regulators, and the people in the photos. Faces
are personal data, and an auditor often has no right to pass them on, so the default is
``blurred``: a Gaussian blur with σ = ``BLUR_SIGMA_FRACTION`` of the thumbnail's longer side
(about 11 px at the 128 px thumbnails) leaves a face a blob of skin and hair colour. Measured on
UTKFace's photos (tests/test_report_privacy.py): OpenCV's eye detector finds eyes in 99 % of the
thumbnails and in under a fifth of the blurred ones, and the classic LBPH face recogniser, which
picks the right person out of 100 from a thumbnail blurred with σ = 1 px 72 % of the time, does so
from the report's blur 8 % of the time. The heatmap's hot spots and the colours of large areas
(a shirt, a tie) stay visible; fine detail does not. The edit region's outline is drawn after
the blur (:func:`outlined`), so it stays as sharp on a blurred thumbnail as on a full one. A
blur does not stop someone who holds the original photo from matching it to the thumbnail; when
the report must not be linkable to any photo, use ``none``. ``full`` shows the thumbnails as
they are; ``none`` leaves every raster image out of the page, mean maps included.

Thumbnails go into the page as JPEG (quality ``JPEG_QUALITY``): a photo's 128 px thumbnail is
about 5 kB, a sixth of its PNG, which is what keeps a report of 10,000 images under 20 MB.
"""

from __future__ import annotations

import base64
import io
from typing import Literal, get_args

import numpy as np
from PIL import Image

ReportImages = Literal["full", "blurred", "none"]
REPORT_IMAGES: tuple[str, ...] = get_args(ReportImages)
DEFAULT_REPORT_IMAGES: ReportImages = "blurred"
BLUR_SIGMA_FRACTION = 1 / 12
JPEG_QUALITY = 80
OUTLINE_INNER = (255, 255, 255)  # the edit region's edge
OUTLINE_OUTER = (0, 0, 0)  # the ring just outside it


def images_note(images: ReportImages, to_show_them: str) -> str:
    """What a page says of its photos; ``to_show_them`` is how to get them unblurred."""
    if images == "full":
        return "Images are shown as audited (--report-images full)."
    if images == "none":
        return "This report holds no images (--report-images none): galleries list the images."
    return (
        "Faces are blurred (--report-images blurred, the default): a Gaussian blur with σ = "
        f"1/{round(1 / BLUR_SIGMA_FRACTION)} of each thumbnail's side, so that no one can be "
        f"recognised; {to_show_them} where you may show them."
    )


def face_image_uri(
    png_base64: str, mode: ReportImages, region_png: str | None = None
) -> str | None:
    """A stored thumbnail (base64 PNG) as the data URI the page shows, or None under ``none``;
    ``region_png`` (a stored region mask) is outlined on it after any blur."""
    if mode == "none":
        return None
    pixels = decode(png_base64)
    shown = blurred(pixels) if mode == "blurred" else pixels
    return jpeg_uri(shown if region_png is None else outlined(shown, decode_mask(region_png)))


def outlined(pixels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``pixels`` with the boolean mask ``region`` outlined: its edge pixels white, the pixels
    just outside it black, so the line shows on a light heat spot as on a dark one. A region
    that reaches the image's border is not outlined along it."""
    import cv2

    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    mask = region.astype(np.uint8)
    inner_edge = region & ~cv2.erode(mask, cross).astype(bool)
    outer_ring = cv2.dilate(mask, cross).astype(bool) & ~region
    drawn = pixels.copy()
    drawn[inner_edge] = OUTLINE_INNER
    drawn[outer_ring] = OUTLINE_OUTER
    return drawn


def chart_image_uri(png_base64: str, mode: ReportImages) -> str | None:
    """A picture with no face in it (a mean attribution map): shown unless ``none``."""
    return None if mode == "none" else f"data:image/png;base64,{png_base64}"


def blurred(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` blurred beyond recognition; see the module docstring for the strength."""
    sigma = BLUR_SIGMA_FRACTION * max(pixels.shape[:2])
    import cv2  # OpenCV loads in ~0.15 s; only a blurred report needs it

    return np.asarray(cv2.GaussianBlur(pixels, (0, 0), sigmaX=sigma, sigmaY=sigma))


def decode(png_base64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(png_base64))) as image:
        return np.asarray(image.convert("RGB"))


def decode_mask(png_base64: str) -> np.ndarray:
    """A stored region mask (base64 PNG, any mode) as a boolean ``[h, w]`` array."""
    with Image.open(io.BytesIO(base64.b64decode(png_base64))) as image:
        return np.asarray(image.convert("L")) > 0


def jpeg_uri(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
