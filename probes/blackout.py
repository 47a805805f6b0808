from __future__ import annotations

import numpy as np

from probes.base import Probe
from probes.functional import fill


class Blackout(Probe):
    """Set the attribution region to black, as in the shirt-collar experiments."""

    name = "blackout"
    region_from = "attribution"
    description = "blacking out the attribution region"

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        assert region is not None, "the pipeline passes a region to region probes"
        return fill(image, region, 0)
