"""Perturbation methods from captum: remove parts of the image, watch the target's evidence.

Removed pixels take the baseline 0, the normalisation mean (a flat mean colour). A removed part
spans all three channels, so every channel holds the same per-pixel value; the maps take their
channel mean, which keeps the unit: the change in the target's logit. Only forward passes are
needed, so all of these run on TorchScript modules.

The superpixel methods (feature_ablation, lime, kernel_shap) remove SLIC superpixels
(Achanta et al. 2012, doi.org/10.1109/TPAMI.2012.120), computed per image on the de-normalised
pixels. Superpixels follow colour edges, so a removed part is an object or a piece of one
rather than an arbitrary square (which occlusion covers). SLIC rather than the quickshift of
LIME's reference implementation: SLIC is told the number of segments, and that number sets the
cost (feature_ablation makes a pass per segment) and how well ``samples`` random subsets
determine a surrogate with one coefficient per segment.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from auditor.attribution.base import (
    AttributionOptions,
    SignedLogits,
    check_targets,
    finish,
    seeded,
)
from auditor.models import LoadedModel

if TYPE_CHECKING:
    from captum.attr import LimeBase


class CaptumPerturbation(abc.ABC):
    """Shared skeleton: a captum perturbation method on the signed-logit head."""

    name = ""
    target_layer: str | None = None

    def __init__(self, model: LoadedModel, options: AttributionOptions) -> None:
        self._forward = SignedLogits(model)
        self._options = options
        self._meta = model.meta

    def __call__(self, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
        categories = check_targets(inputs, targets)
        x = inputs.detach()
        with torch.no_grad(), seeded(self._options.seed, x.device):
            attributions = self._attribute(x, categories)
        return finish(attributions.mean(dim=1), (inputs.shape[-2], inputs.shape[-1]))

    @abc.abstractmethod
    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        """Attributions ``[N, 3, H, W]`` for ``targets``."""

    def _per_eval(self, batch: int) -> int:
        """Perturbed copies of each image per forward pass, so a pass holds about
        ``internal_batch_size`` images."""
        return max(1, self._options.internal_batch_size // max(batch, 1))

    def _segments(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ids ``[N, 1, H, W]`` (0-based) of each de-normalised image."""
        mean = torch.tensor(self._meta.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self._meta.std, device=x.device).view(1, 3, 1, 1)
        images = (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).double().cpu().numpy()
        segments = [superpixels(image, self._options.superpixels) for image in images]
        return torch.from_numpy(np.stack(segments)).to(x.device)[:, None]


def superpixels(image: np.ndarray, count: int) -> np.ndarray:
    """About ``count`` SLIC segment ids ``[H, W]`` of an RGB image in [0, 1].

    SLIC merges a flat or very noisy image into a handful of segments (one, for white noise);
    then a regular grid of about ``count`` cells is used, so the surrogate methods still have
    parts to remove (KernelSHAP needs at least two).
    """
    from skimage.segmentation import slic

    segments = slic(image, n_segments=count, start_label=0, channel_axis=-1)
    if segments.max() + 1 >= max(2, count // 4):
        return np.asarray(segments, dtype=np.int64)
    height, width = image.shape[:2]
    side = max(1, round(math.sqrt(count)))
    rows = np.arange(height) * side // height
    cols = np.arange(width) * side // width
    return rows[:, None] * side + cols[None, :]


class Occlusion(CaptumPerturbation):
    """Occlusion (Zeiler & Fergus 2014, arxiv.org/abs/1311.2901): a window slides over the
    image, and each pixel gets the mean drop of evidence over the windows that cover it.
    """

    name = "occlusion"

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        from captum.attr import Occlusion as Captum

        window, stride = occlusion_geometry((x.shape[-2], x.shape[-1]), self._options)
        return Captum(self._forward).attribute(
            x,
            sliding_window_shapes=(3, *window),
            strides=(3, *stride),
            baselines=0.0,
            target=targets,
            perturbations_per_eval=self._per_eval(len(x)),
        )


def occlusion_geometry(
    size: tuple[int, int], options: AttributionOptions
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Occlusion window and stride (height, width) in pixels: windows move by half a side."""
    window = tuple(max(1, round(side * options.occlusion_window)) for side in size)
    stride = tuple(max(1, w // 2) for w in window)
    return (window[0], window[1]), (stride[0], stride[1])


def occlusion_passes(size: tuple[int, int], options: AttributionOptions) -> int:
    """Forward passes per image: one per window position (as captum counts them), plus one."""
    window, stride = occlusion_geometry(size, options)
    positions = [
        math.ceil((side - w) / s) + 1 for side, w, s in zip(size, window, stride, strict=True)
    ]
    return positions[0] * positions[1] + 1


class FeatureAblation(CaptumPerturbation):
    """Feature ablation over superpixels: each superpixel's drop of evidence when removed."""

    name = "feature_ablation"

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        from captum.attr import FeatureAblation as Captum

        return Captum(self._forward).attribute(
            x,
            baselines=0.0,
            target=targets,
            feature_mask=self._segments(x),
            perturbations_per_eval=self._per_eval(len(x)),
        )


class Lime(CaptumPerturbation):
    """LIME (Ribeiro et al. 2016, arxiv.org/abs/1602.04938): a linear surrogate fitted on
    random superpixel subsets, weighted by their similarity to the image.

    The surrogate is ridge regression (alpha 1), as in the authors' ``lime`` package, rather
    than captum's default lasso (alpha 0.01), whose absolute penalty zeroes every coefficient
    of a model whose logits move less than that. One surrogate per image: captum fits them one
    at a time anyway, and warns when given a batch.
    """

    name = "lime"

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import Lime as Captum

        surrogate = SkLearnRidge(alpha=1.0)
        return self._per_image(Captum(self._forward, interpretable_model=surrogate), x, targets)

    def _per_image(self, method: LimeBase, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        masks = self._segments(x)
        return torch.cat(
            [
                method.attribute(
                    x[i : i + 1],
                    baselines=0.0,
                    target=targets[i],
                    feature_mask=masks[i : i + 1],
                    n_samples=self._options.samples,
                    perturbations_per_eval=self._per_eval(1),
                )
                for i in range(len(x))
            ]
        )


class KernelShap(Lime):
    """KernelSHAP (Lundberg & Lee 2017, arxiv.org/abs/1705.07874): Shapley values of the
    superpixels, estimated by a linear fit with the Shapley kernel on random subsets.
    """

    name = "kernel_shap"

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        from captum.attr import KernelShap as Captum

        return self._per_image(Captum(self._forward), x, targets)
