from __future__ import annotations

from typing import Literal

import numpy as np

from probes.base import Cover, Probe
from probes.functional import blur, fill, inpaint, mean_colour, noise_fill, region_sigma

Fill = Literal["black", "mean", "blur", "noise", "inpaint"]

# How each fill removes the region: the report's wording of the probe.
_DESCRIPTIONS: dict[str, str] = {
    "black": "blacking out the attribution region",
    "mean": "filling the attribution region with the image's mean colour",
    "blur": "replacing the attribution region with a strong blur of the image",
    "noise": "filling the attribution region with noise around the image's mean colour",
    "inpaint": "removing the attribution region, inpainted from its surroundings",
}

_COVERS: dict[str, Cover] = {"black": "paint", "inpaint": "erase"}


class Blackout(Probe):
    """Remove the attribution region, as in the shirt-collar experiments.

    ``fill`` says with what: black (the default, as those experiments did), the image's mean
    colour, a strong blur (``sigma`` pixels; 0 scales it to the region, see
    :func:`~probes.functional.region_sigma`), noise around the image's mean, or an inpainting
    from the surroundings. Black and white are colours no photo editor would paint, so a
    prediction can change because a new object appeared; the other fills test that.
    """

    name = "blackout"
    region_from = "attribution"
    description = _DESCRIPTIONS["black"]

    def __init__(self, fill: Fill = "black", sigma: float = 0.0) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be 0 (scaled to the region) or positive, got {sigma:g}")
        if sigma and fill != "blur":
            raise ValueError(f"sigma applies to fill=blur only, not fill={fill}")
        self.fill: Fill = fill
        self.sigma = sigma
        self.cover = _COVERS.get(fill)
        super().__init__()

    def describe(self) -> str:
        sigma = f" (sigma {self.sigma:g} px)" if self.sigma else ""
        return _DESCRIPTIONS[self.fill] + sigma

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        assert region is not None, "the pipeline passes a region to region probes"
        if self.fill == "mean":
            return fill(image, region, mean_colour(image))
        if self.fill == "blur":
            return blur(image, region, self.sigma or region_sigma(region))
        if self.fill == "noise":
            return noise_fill(image, region)
        if self.fill == "inpaint":
            return inpaint(image, region)
        return fill(image, region, 0)
