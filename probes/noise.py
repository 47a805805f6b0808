from __future__ import annotations

import numpy as np

from probes.base import Probe
from probes.functional import add_noise


class Noise(Probe):
    """Add Gaussian noise to the attribution region, like sensor noise or heavy compression.

    ``std`` is a fraction of the 0-255 range. The noise is seeded by the image's content and
    ``salt`` (albumentations reserves ``seed`` for its own random state), so a run and its
    resume draw the same noise; another ``salt`` draws another realisation.
    """

    name = "noise"
    region_from = "attribution"
    description = "adding Gaussian noise to the attribution region"

    def __init__(self, std: float = 0.2, salt: int = 0) -> None:
        if not 0 < std <= 1:
            raise ValueError(f"std must be a fraction of 255 in (0, 1], got {std:g}")
        self.std = std
        self.salt = salt
        super().__init__()

    def describe(self) -> str:
        salt = f", salt {self.salt}" if self.salt else ""
        return f"{type(self).description} (std {self.std:g} of 255{salt})"

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        assert region is not None, "the pipeline passes a region to region probes"
        return add_noise(image, region, self.std * 255, self.salt)
