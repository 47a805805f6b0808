from __future__ import annotations

import numpy as np

from probes.base import Probe
from probes.functional import grayscale


class Grayscale(Probe):
    """Drop the colour of the whole image: a model that flips here leans on colour (skin tone,
    a coloured background) rather than on shape."""

    name = "grayscale"
    region_from = "whole_image"
    description = "turning the image to grayscale"

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        return grayscale(image)
