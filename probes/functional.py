"""Pixel edits as pure numpy functions over uint8 ``[H, W, 3]`` images and boolean masks."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

# Telea inpainting radius in pixels: how far around each hole pixel the fill looks for colour.
_INPAINT_RADIUS = 3


def fill(image: np.ndarray, mask: np.ndarray, value: int | np.ndarray) -> np.ndarray:
    """``image`` with the ``mask`` pixels set to ``value``: a level for every channel, or a
    colour (one value per channel)."""
    out = image.copy()
    out[mask] = value
    return out


def hflip(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def inpaint(image: np.ndarray, mask: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Fill ``mask`` from its surroundings (Telea's method), never from the ``keep`` pixels.

    ``keep`` (e.g. the face when removing hair) is masked out during inpainting so that its
    colours do not bleed into the fill, then pasted back unchanged.
    """
    hole = mask if keep is None else (mask | keep)
    out = cv2.inpaint(image, hole.astype(np.uint8) * 255, _INPAINT_RADIUS, cv2.INPAINT_TELEA)
    if keep is not None:
        out[keep] = image[keep]
    return out


def mean_colour(image: np.ndarray) -> np.ndarray:
    """The image's mean colour (per channel, rounded): a fill that adds no new colour."""
    return np.rint(image.reshape(-1, image.shape[-1]).mean(axis=0)).astype(np.uint8)


def region_sigma(mask: np.ndarray) -> float:
    """A blur strong enough to erase what ``mask`` shows: half the side of a square of the
    region's area, so a larger region gets a proportionally wider blur."""
    return max(1.0, 0.5 * float(np.sqrt(mask.sum())))


def blur(image: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` with the ``mask`` pixels taken from its Gaussian blur of ``sigma`` pixels; the
    whole image is blurred first, so the region blends into its surroundings."""
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    out = image.copy()
    out[mask] = blurred[mask]
    return out


def content_rng(image: np.ndarray, salt: int) -> np.random.Generator:
    """A generator seeded by the image's pixels and ``salt``: the same image always gets the
    same noise (runs and resumes reproduce), different images get different noise."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=8).digest()
    return np.random.default_rng([int.from_bytes(digest, "little"), salt])


def add_noise(image: np.ndarray, mask: np.ndarray, std: float, salt: int = 0) -> np.ndarray:
    """``image`` with Gaussian noise of ``std`` (in 0-255 levels) added to the ``mask`` pixels."""
    noise = content_rng(image, salt).normal(0.0, std, size=image.shape)
    out = image.copy()
    out[mask] = np.clip(np.rint(image[mask] + noise[mask]), 0, 255).astype(np.uint8)
    return out


def noise_fill(image: np.ndarray, mask: np.ndarray, salt: int = 0) -> np.ndarray:
    """``mask`` replaced by Gaussian noise with the image's per-channel mean and spread: its
    colour statistics without its structure."""
    pixels = image.reshape(-1, image.shape[-1]).astype(np.float64)
    noise = content_rng(image, salt).normal(pixels.mean(axis=0), pixels.std(axis=0), image.shape)
    out = image.copy()
    out[mask] = np.clip(np.rint(noise[mask]), 0, 255).astype(np.uint8)
    return out


def grayscale(image: np.ndarray) -> np.ndarray:
    """The image's luminance (ITU-R BT.601, OpenCV's weights) in all three channels."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[..., None], 3, axis=-1)


def shift_crop(image: np.ndarray, shift: tuple[float, float], zoom: float) -> np.ndarray:
    """The image seen through a crop window moved by ``shift`` (x, y) pixels and ``zoom`` times
    tighter about its centre, resized back to the image's size; where the window leaves the
    image its edge pixels are repeated.

    Output pixel (x, y) shows input pixel ``c + (p - c) / zoom + shift`` (``c`` the centre), one
    affine warp: an integer shift at zoom 1 copies pixels exactly.
    """
    height, width = image.shape[:2]
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    offset = centre - centre / zoom + np.asarray(shift, dtype=np.float64)
    to_input = np.array([[1 / zoom, 0.0, offset[0]], [0.0, 1 / zoom, offset[1]]])
    return cv2.warpAffine(
        image,
        to_input,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
