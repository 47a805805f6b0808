"""The one preprocessing path: RGB, bilinear resize of the whole image, [0, 1], mean/std.

Probes edit the resized uint8 image (what the model sees), so original and probed images pass
through exactly the same arithmetic and no drift creeps in between them. The resize is PIL's
bilinear filter, the same that ``torchvision.transforms.Resize`` applies to PIL images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError

from auditor.models import ModelMeta


class ImageReadError(Exception):
    """An image file cannot be decoded; the pipeline records it as a skip."""


@dataclass(frozen=True)
class ReadImage:
    """A resized RGB image (uint8 ``[H, W, 3]`` at the model's input size) and its file size."""

    pixels: np.ndarray
    original_size: tuple[int, int]  # (width, height) of the file


def read_image(path: Path, input_size: tuple[int, int]) -> ReadImage:
    """Decode ``path`` fully and resize it to ``input_size`` (height, width).

    The first frame of an animation is read, an EXIF orientation is applied, and high-bit-depth
    and floating-point images are scaled to 8 bits by their depth or value range (see
    :func:`_to_8bit`); everything else is PIL's ``convert("RGB")``.

    Raises:
        ImageReadError: the file is unreadable, truncated, not an image, too large (a possible
            decompression bomb) or has non-finite pixel values.
    """
    try:
        with Image.open(path) as image:
            _check_pixel_count(image.size)
            image.load()
            rgb = _upright(_to_8bit(image), image).convert("RGB")
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning is an exception only where warnings are errors; _check_pixel_count covers
        # the other case.
        raise ImageReadError(f"image too large (possible decompression bomb): {exc}") from exc
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageReadError(f"unreadable image: {exc}") from exc
    except Exception as exc:  # a hostile file can trip any of PIL's decoders' internal errors
        raise ImageReadError(f"unreadable image: {type(exc).__name__}: {exc}") from exc
    height, width = input_size
    resized = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return ReadImage(np.asarray(resized, dtype=np.uint8).copy(), rgb.size)


def _check_pixel_count(size: tuple[int, int]) -> None:
    """Refuse an image over PIL's decompression-bomb limit before decoding it (PIL itself only
    warns between one and two times the limit, and would decode it)."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = size
    if limit is not None and width * height > limit:
        raise ImageReadError(
            f"image too large (possible decompression bomb): {width}x{height} = "
            f"{width * height} pixels exceeds the limit of {limit} pixels"
        )


def _to_8bit(image: Image.Image) -> Image.Image:
    """An 8-bit image with ``image``'s content; modes of 8 bits or fewer are returned as they are.

    16-bit grey (``I;16*``) is divided by 257. 32-bit integer grey (``I``) is scaled by its range:
    values within [0, 255] are kept, within [0, 65535] divided by 257, else min..max is stretched
    to 0..255. Floating point (``F``) is taken as [0, 1] when every value lies there, else min..max
    is stretched to 0..255. (PIL already reduces 16-bit-per-channel colour to 8 bits on reading.)

    Raises:
        ImageReadError: a floating-point image has NaN or infinite pixels.
    """
    mode = image.mode
    if mode.startswith("I;16"):
        values = np.asarray(image).astype(np.int64)
        return _grey((values + 128) // 257)
    if mode == "I":
        values = np.asarray(image)
        if _unsigned_32bit_tiff(image):
            values = values.view(np.uint32)
        values = values.astype(np.int64)
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= 255:
            return _grey(values)
        if low >= 0 and high <= 65535:
            return _grey((values + 128) // 257)
        return _grey(_stretch(values.astype(np.float64), low, high))
    if mode == "F":
        floats = np.asarray(image).astype(np.float64)
        finite = np.isfinite(floats)
        if not finite.all():
            bad = int(floats.size - np.count_nonzero(finite))
            raise ImageReadError(
                f"non-finite pixel values: {bad} of {floats.size} pixels are NaN or infinite"
            )
        lowest, highest = float(floats.min()), float(floats.max())
        if lowest >= 0.0 and highest <= 1.0:
            return _grey(np.rint(floats * 255.0))
        return _grey(_stretch(floats, lowest, highest))
    return image


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """min..max → 0..255 (a constant image → 0)."""
    if high <= low:
        return np.zeros_like(values)
    return np.rint((values - low) * (255.0 / (high - low)))


def _grey(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))  # 2-D uint8: mode "L"


def _unsigned_32bit_tiff(image: Image.Image) -> bool:
    """A TIFF of unsigned 32-bit samples, which PIL reads into its signed ``I`` mode."""
    tags = getattr(image, "tag_v2", None)
    if image.format != "TIFF" or tags is None:
        return False
    sample_format = tags.get(339, (1,))  # SampleFormat; 1 (unsigned) is TIFF's default
    bits = tags.get(258, ())  # BitsPerSample
    first = sample_format[0] if isinstance(sample_format, tuple) else sample_format
    return first == 1 and tuple(bits) == (32,)


def _upright(converted: Image.Image, original: Image.Image) -> Image.Image:
    """``converted`` turned as ``original``'s EXIF orientation says (the way viewers show it).

    A file whose EXIF block cannot be parsed is taken as it is stored.
    """
    try:
        orientation = original.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # malformed EXIF: no orientation to apply
        return converted
    method = _ORIENTATION.get(orientation)
    return converted if method is None else converted.transpose(method)


# EXIF orientation → the transpose that makes the image upright (as PIL.ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def to_tensor(images: np.ndarray, meta: ModelMeta, device: torch.device) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` → normalized float32 ``[N, 3, H, W]`` on ``device``."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(meta.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta.std, device=device).view(1, 3, 1, 1)
    return (batch - mean) / std
