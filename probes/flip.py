from __future__ import annotations

import numpy as np

from probes.base import Probe
from probes.functional import hflip


class Flip(Probe):
    """Mirror the whole image left to right: a control that should change nothing semantic."""

    name = "flip"
    region_from = "whole_image"
    description = "mirroring the image left to right"

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        return hflip(image)
