"""The pytorch-grad-cam classes behind ``--method``, four of them adjusted.

Imported only when a CAM is built: importing pytorch-grad-cam takes seconds (it pulls in
scikit-learn and matplotlib). ``CAM_METHODS`` in ``cams.py`` names a class of this module.

- ``ScoreCAM`` and ``AblationCAM``: upstream draws a tqdm progress bar per image on stderr,
  which tears the CLI's own progress display, and scores channels one image at a time with a
  host sync per score; these compute the same weights quietly, in batches.
- ``AblationCAM`` also zeroes a channel (the paper's ablation) instead of upstream's
  ``min - 1e7`` for layers with negative activations, and divides the score drop by ``|y|``
  so a negative target score (class 0 of a single-logit head) does not flip the map.
- ``ShapleyCAM``: upstream weighs a transformer's reshaped tokens but then sums the
  un-reshaped activations, which fails; this reshapes both.
- ``FinerCAM``: Grad-CAM on Finer-CAM's contrastive target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import (
    KPCA_CAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam import ScoreCAM as _UpstreamScoreCAM
from pytorch_grad_cam import ShapleyCAM as _UpstreamShapleyCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget
from torch import nn

__all__ = [
    "KPCA_CAM",
    "AblationCAM",
    "ClassifierOutputTarget",
    "EigenCAM",
    "EigenGradCAM",
    "FinerCAM",
    "FinerTarget",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "ShapleyCAM",
    "XGradCAM",
]

Target = Callable[[torch.Tensor], torch.Tensor]


class ScoreCAM(_UpstreamScoreCAM):
    """Score-CAM (Wang et al. 2020, arxiv.org/abs/1910.01279): a channel's weight is the
    softmax over channels of the target score on the input masked by that channel's map.
    """

    batch_size = 32

    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: Sequence[Target],
        activations: np.ndarray,
        grads: Any,
    ) -> np.ndarray:
        scores = torch.zeros(activations.shape[:2], device=self.device)
        with torch.no_grad():
            for i, (image, target) in enumerate(zip(input_tensor, targets, strict=True)):
                channel_maps = torch.from_numpy(activations[i : i + 1]).to(self.device)
                masks = F.interpolate(
                    channel_maps, size=image.shape[-2:], mode="bilinear", align_corners=True
                )[0]
                low = masks.flatten(1).min(dim=1).values[:, None, None]
                high = masks.flatten(1).max(dim=1).values[:, None, None]
                masks = (masks - low) / (high - low + 1e-8)
                for start in range(0, len(masks), self.batch_size):
                    chunk = masks[start : start + self.batch_size]
                    outputs = self.model(image[None] * chunk[:, None])
                    scores[i, start : start + len(chunk)] = torch.stack(
                        [target(o) for o in outputs]
                    )
        return torch.softmax(scores, dim=-1).cpu().numpy()


class AblationCAM(BaseCAM):
    """Ablation-CAM (Desai & Ramaswamy 2020, doi.org/10.1109/WACV45572.2020.9093360): a
    channel's weight is the relative drop of the target score when the channel is zeroed.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: list[nn.Module],
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch_size: int = 32,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)
        self.batch_size = batch_size

    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: Sequence[Target],
        activations: np.ndarray,
        grads: Any,
    ) -> np.ndarray:
        channels = activations.shape[1]
        # Channels are dim 1 of a spatial map, the last dim of tokens or channels-last maps.
        channel_dim = 1 if self.reshape_transform is None else -1
        weights = np.zeros(activations.shape[:2], dtype=np.float32)
        with torch.no_grad():
            for i, (image, target) in enumerate(zip(input_tensor, targets, strict=True)):
                score = target(self.model(image[None])[0])
                for start in range(0, channels, self.batch_size):
                    ablated = torch.arange(start, min(start + self.batch_size, channels))
                    hook = target_layer.register_forward_hook(_zeroing(ablated, channel_dim))
                    try:
                        outputs = self.model(image[None].expand(len(ablated), -1, -1, -1))
                    finally:
                        hook.remove()
                    drops = score - torch.stack([target(o) for o in outputs])
                    weights[i, start : start + len(ablated)] = (
                        (drops / (score.abs() + 1e-7)).float().cpu().numpy()
                    )
        return weights


def _zeroing(channels: torch.Tensor, dim: int) -> Callable[..., torch.Tensor]:
    """A forward hook that zeroes channel ``channels[k]`` in copy ``k`` of the batch."""

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output.movedim(dim, 1)[torch.arange(len(channels)), channels.to(output.device)] = 0
        return output

    return hook


class ShapleyCAM(_UpstreamShapleyCAM):
    """ShapleyCAM (Cai 2025, arxiv.org/abs/2501.06261): Grad-CAM with a second-order term,
    the gradient minus half the Hessian-vector product with the activations.
    """

    def get_cam_image(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        target_category: Sequence[Target],
        activations: torch.Tensor,
        grads: torch.Tensor,
        eigen_smooth: bool,
    ) -> np.ndarray:
        weights = self.get_cam_weights(
            input_tensor, target_layer, target_category, activations, grads
        )
        if self.reshape_transform is not None:
            activations = self.reshape_transform(activations)
        maps = activations.detach().float().cpu().numpy()
        return np.asarray((weights[:, :, None, None] * maps).sum(axis=1))


class FinerTarget:
    """Finer-CAM's target (Zhang et al. 2025, arxiv.org/abs/2501.11309): the target's logit
    minus the logits of the ``comparisons`` classes the model finds most alike (closest
    logits), weighted by their probability, so the map shows what sets the target apart.
    """

    def __init__(self, category: int, comparisons: int = 3, alpha: float = 1.0) -> None:
        self.category = category
        self.comparisons = comparisons
        self.alpha = alpha

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        gap = (output - output[self.category]).abs().detach()
        gap[self.category] = torch.inf
        alike = gap.argsort()[: min(self.comparisons, len(gap) - 1)].tolist()
        return FinerWeightedTarget(self.category, alike, self.alpha)(output)


class FinerCAM(GradCAM):
    """Grad-CAM of :class:`FinerTarget`; with two classes, the contrast with the other one."""

    target_type = FinerTarget
