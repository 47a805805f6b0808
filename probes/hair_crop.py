from __future__ import annotations

import numpy as np

from probes.base import Probe
from probes.functional import inpaint


class HairCrop(Probe):
    """Remove the hair: the head area around the face, filled from the surrounding background."""

    name = "hair_crop"
    region_from = "face"
    description = "removing the hair around the face"

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        assert region is not None, "the pipeline passes a region to region probes"
        return inpaint(image, region, keep)
