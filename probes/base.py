"""The probe base class: an albumentations image-only transform that edits a given region."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import albumentations as A
import numpy as np

RegionFrom = Literal["attribution", "face", "whole_image"]


class Probe(A.ImageOnlyTransform):
    """A deterministic edit of one image, called as ``probe(image=img, region=mask)["image"]``.

    Subclasses set ``name`` and ``region_from`` (where their region comes from) and implement
    :meth:`edit`. ``region`` is a boolean ``[H, W]`` mask (None for whole-image probes); ``keep``
    is an optional mask of pixels the edit must not draw from or change (the face, for hair).
    """

    name: ClassVar[str]
    region_from: ClassVar[RegionFrom]
    description: ClassVar[str]

    def __init__(self) -> None:
        super().__init__(p=1.0)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        return {"region": data.get("region"), "keep": data.get("keep")}

    def apply(
        self,
        img: np.ndarray,
        region: np.ndarray | None = None,
        keep: np.ndarray | None = None,
        **params: Any,
    ) -> np.ndarray:
        return self.edit(img, region, keep)

    def edit(
        self, image: np.ndarray, region: np.ndarray | None, keep: np.ndarray | None
    ) -> np.ndarray:
        raise NotImplementedError

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()
