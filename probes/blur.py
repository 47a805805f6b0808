from __future__ import annotations

import numpy as np

from probes.base import Probe
from probes.functional import blur


class Blur(Probe):
    """Blur the attribution region, as a photo editor would soften a detail without painting
    over it: the region's colours stay, its fine structure goes."""

    name = "blur"
    region_from = "attribution"
    description = "blurring the attribution region"

    def __init__(self, sigma: float = 8.0) -> None:
        if sigma <= 0:
            raise ValueError(f"sigma must be a positive number of pixels, got {sigma:g}")
        self.sigma = sigma  # in pixels of the image the model sees (its input size)
        super().__init__()

    def describe(self) -> str:
        return f"{type(self).description} (sigma {self.sigma:g} px)"

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        assert region is not None, "the pipeline passes a region to region probes"
        return blur(image, region, self.sigma)
