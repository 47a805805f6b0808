from __future__ import annotations

import numpy as np

from probes.base import Probe
from probes.functional import shift_crop

_MAX_SHIFT = 0.5  # of the image side: a window moved further would show no pixel of it
_MAX_ZOOM = 4.0


class CropShift(Probe):
    """Crop the image a little differently, as another face detector or photographer would:
    the crop window moved by ``shift`` of the image's width and height (right and down; a
    negative shift moves it left and up) and ``zoom`` times tighter about its centre, then
    resized back to the input size. A model whose prediction follows the framing, not the
    face, flips here."""

    name = "crop_shift"
    region_from = "whole_image"
    description = "cropping the image differently"

    def __init__(self, shift: float = 0.1, zoom: float = 1.0) -> None:
        if not -_MAX_SHIFT < shift < _MAX_SHIFT:
            raise ValueError(f"shift must be a fraction of the image within ±0.5, got {shift:g}")
        if not 1.0 <= zoom <= _MAX_ZOOM:
            raise ValueError(f"zoom must be between 1 (no tightening) and 4, got {zoom:g}")
        if shift == 0 and zoom == 1:
            raise ValueError("shift 0 at zoom 1 is the image itself; give a shift or a zoom")
        self.shift = shift
        self.zoom = zoom
        super().__init__()

    def describe(self) -> str:
        changes = [f"moved by {self.shift:g} of the image"] if self.shift else []
        changes += [f"{self.zoom:g} times tighter"] if self.zoom != 1 else []
        return f"{type(self).description} ({', '.join(changes)}) and resizing it back"

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        height, width = image.shape[:2]
        return shift_crop(image, (self.shift * width, self.shift * height), self.zoom)
