from __future__ import annotations

import numpy as np

from probes.base import Probe
from probes.functional import fill


class WhitePatch(Probe):
    """Set the attribution region to white, as in the white-block-over-the-dumbbell experiment."""

    name = "white_patch"
    region_from = "attribution"
    description = "covering the attribution region with white"
    cover = "paint"

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        assert region is not None, "the pipeline passes a region to region probes"
        return fill(image, region, 255)
