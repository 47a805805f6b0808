"""Class activation maps from pytorch-grad-cam, unscaled.

Each CAM weighs the feature maps of one layer (see ``layers.py``). pytorch-grad-cam's
``BaseCAM.forward`` min-max scales every map to [0, 1] per image, which keeps the ranking within
an image and loses magnitudes across images; ``layer_maps`` runs the same steps (forward,
backward, ``get_cam_image``) and stops before that scaling. Hooks live only for one call, so an
idle attributor does not slow down or copy activations of other forward passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from auditor.attribution.base import SignedLogits, check_targets, finish, gradients_on
from auditor.attribution.layers import TargetLayer
from auditor.errors import AttributionError
from auditor.models import LoadedModel

# --method name → class in auditor.attribution.gradcam_variants (pytorch-grad-cam's, or adjusted).
CAM_METHODS = {
    "gradcam": "GradCAM",  # Selvaraju et al. 2017, arxiv.org/abs/1610.02391
    "gradcam++": "GradCAMPlusPlus",  # Chattopadhay et al. 2018, arxiv.org/abs/1710.11063
    "xgradcam": "XGradCAM",  # Fu et al. 2020, arxiv.org/abs/2008.02312
    "hirescam": "HiResCAM",  # Draelos & Carin 2020, arxiv.org/abs/2011.08891
    "gradcam-elementwise": "GradCAMElementWise",  # HiResCAM with a ReLU before the sum
    "layercam": "LayerCAM",  # Jiang et al. 2021, doi.org/10.1109/TIP.2021.3089943
    "eigencam": "EigenCAM",  # Muhammad & Yeasin 2020, arxiv.org/abs/2008.00299 (class-agnostic)
    "eigengradcam": "EigenGradCAM",  # EigenCAM of gradients × activations
    "kpcacam": "KPCA_CAM",  # Karmani et al. 2024, arxiv.org/abs/2410.00267 (class-agnostic)
    "scorecam": "ScoreCAM",  # Wang et al. 2020, arxiv.org/abs/1910.01279 (a pass per channel)
    "ablationcam": "AblationCAM",  # Desai & Ramaswamy 2020 (a pass per channel)
    "shapleycam": "ShapleyCAM",  # Cai 2025, arxiv.org/abs/2501.06261 (second-order)
    "finercam": "FinerCAM",  # Zhang et al. 2025, arxiv.org/abs/2501.11309
}
# Methods that score one forward pass per channel of the layer; ShapleyCAM's Hessian-vector
# product costs about a second backward pass.
_PER_CHANNEL = frozenset({"scorecam", "ablationcam"})
_SECOND_ORDER = frozenset({"shapleycam"})

# pytorch-grad-cam classes not offered, and why (a test fails when upstream adds one unlisted).
UNSUPPORTED_CAMS = {
    "RandomCAM": "random weights: a sanity baseline, not an explanation",
    "FEM": "class-agnostic k-sigma threshold per channel: empty on maps of 2x2 or 1xN",
    "SegEigenCAM": "made for segmentation outputs",
    "RefineCAM": "combines several layers, while an attributor weighs one",
    "SESS": "a multi-scale sliding-window wrapper costing dozens of CAMs per image",
    "DeepFeatureFactorization": "finds concepts, not evidence for a class",
    "GuidedBackpropReLUModel": "see guided_gradcam (captum), which combines it with Grad-CAM",
}


def cam_passes(method: str, layer: TargetLayer | None) -> int:
    """Forward(+backward) passes per image of CAM ``method`` on ``layer``.

    Raises:
        AttributionError: the cost grows with the layer's channels and no layer is given.
    """
    if method in _PER_CHANNEL:
        if layer is None:
            raise AttributionError(
                f"the cost of {method} grows with the target layer's channels; "
                "pass the model to estimate it"
            )
        return layer.channels + 1
    return 2 if method in _SECOND_ORDER else 1


class CamAttributor:
    """A pytorch-grad-cam method on one layer, with raw (unscaled) maps at input resolution."""

    def __init__(
        self, model: LoadedModel, layer: TargetLayer, *, method: str, batch_size: int
    ) -> None:
        self.name = method
        self.target_layer: str | None = layer.name
        self._head = SignedLogits(model)
        self._layer = model.module.get_submodule(layer.name)
        self._reshape = layer.reshape
        self._batch_size = batch_size

    def __call__(self, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
        from auditor.attribution import gradcam_variants

        categories = check_targets(inputs, targets)
        cam_type = getattr(gradcam_variants, CAM_METHODS[self.name])
        target_type = getattr(cam_type, "target_type", gradcam_variants.ClassifierOutputTarget)
        cam = cam_type(self._head, [self._layer], reshape_transform=self._reshape)
        cam.batch_size = self._batch_size  # ScoreCAM and AblationCAM score channels in batches
        with gradients_on(), _differentiable_twice(self.name in _SECOND_ORDER):
            maps = layer_maps(cam, inputs, [target_type(c) for c in categories])
        return finish(maps, (inputs.shape[-2], inputs.shape[-1]))


def _differentiable_twice(needed: bool) -> contextlib.AbstractContextManager[None]:
    """Attention on the plain-math kernel when a method differentiates twice: the fused
    kernels (flash, memory-efficient) have no double backward."""
    if not needed:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def layer_maps(cam: Any, inputs: torch.Tensor, targets: Sequence[Callable[..., Any]]) -> np.ndarray:
    """Unscaled CAMs ``[N, h, w]`` at the layer's resolution: ``BaseCAM.forward`` for one
    layer, minus its ``scale_cam_image``.

    The input requires gradients so that activations do even where parameters are frozen, and
    ``autograd.grad`` leaves the parameters' ``.grad`` untouched.
    """
    x = inputs.detach().clone().requires_grad_(True)
    capture = cam.activations_and_grads
    try:
        outputs = capture(x)
        if cam.uses_gradients:
            score = torch.stack([t(o) for t, o in zip(targets, outputs, strict=True)]).sum()
            torch.autograd.grad(score, x, create_graph=not cam.detach)
        activations = capture.activations[0]
        gradients = capture.gradients[0] if capture.gradients else None
        if cam.detach:
            activations = activations.numpy()
            gradients = gradients.numpy() if gradients is not None else None
            capture.release()  # the per-channel passes of ScoreCAM/AblationCAM need no copies
        maps = cam.get_cam_image(x, cam.target_layers[0], targets, activations, gradients, False)
    finally:
        # Dropped rather than detached in place: ShapleyCAM's gradients can be views, which
        # upstream's clear() cannot detach.
        capture.activations, capture.gradients = [], []
        capture.release()
    return np.asarray(maps, dtype=np.float32)


class FullGradAttributor:
    """FullGrad (Srinivas & Fleuret 2019, arxiv.org/abs/1905.00780): input-gradient × input plus
    bias-gradient × bias of every ``Conv2d``/``BatchNorm2d``, each term post-processed by the
    paper's ψ (absolute value, upsampling, per-image rescaling) and summed.

    The sum is left unscaled; its terms are normalised by the method itself, so magnitudes say
    less across images than other methods' do. Bias layers are matched by exact type as
    upstream does: timm's fused ``BatchNormAct2d`` does not count.
    """

    name = "fullgrad"
    target_layer: str | None = None

    def __init__(self, model: LoadedModel) -> None:
        if not any(
            type(m) in (nn.Conv2d, nn.BatchNorm2d) and getattr(m, "bias", None) is not None
            for m in model.module.modules()
        ):
            raise AttributionError(
                "fullgrad needs Conv2d or BatchNorm2d layers with biases, and this model has "
                "none; use --method gradcam or integrated_gradients"
            )
        self._head = SignedLogits(model)

    def __call__(self, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
        from auditor.attribution.gradcam_variants import ClassifierOutputTarget, FullGrad

        categories = check_targets(inputs, targets)
        cam = FullGrad(self._head, [])
        x = inputs.detach().clone().requires_grad_(True)
        try:
            with gradients_on():
                outputs = cam.activations_and_grads(x)
                score = torch.stack(
                    [ClassifierOutputTarget(c)(o) for c, o in zip(categories, outputs, strict=True)]
                ).sum()
                (x.grad,) = torch.autograd.grad(score, x)
                maps = cam.compute_cam_per_layer(x, None, False)[:, 0]
        finally:
            cam.activations_and_grads.release()
        return finish(maps, (inputs.shape[-2], inputs.shape[-1]))
