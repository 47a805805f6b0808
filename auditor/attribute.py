"""Attribution maps: one interface for every method, batched, with a target per sample.

An attributor maps normalized inputs ``[N, 3, H, W]`` and target class indices to float32 maps
``[N, H, W]`` at input resolution, non-negative where a pixel supports the target. For a
single-logit binary head the target is sign-aware (the logit for class 0 is ``-z``), so the
negative class gets a real map instead of an empty one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from auditor.errors import AttributionError
from auditor.models import LoadedModel

# Pooling to a fixed grid keeps 4-D shapes but is no place for a CAM (no learned features).
_NOT_A_CAM_LAYER = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class Attributor(Protocol):
    """What every attribution method provides."""

    name: str

    def __call__(self, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray: ...


def find_target_layer(module: nn.Module, input_size: tuple[int, int]) -> str:
    """The dotted name of the last module that outputs a spatial map ``[N, C, h, w]``, h, w > 1.

    Forward hooks fire when a module finishes, so for nested blocks the outermost block of the
    last stage fires last: ``layer4`` for ResNets, ``features`` for VGG/DenseNet/MobileNet,
    ``conv_head``/``bn2`` for EfficientNet, ``stages`` for ConvNeXt.

    Raises:
        AttributionError: no module outputs a spatial map (e.g. a vision transformer).
    """
    finished: list[tuple[str, bool]] = []  # (name, outputs a spatial map), in finishing order
    handles = []
    for name, sub in module.named_modules():
        if not name or isinstance(sub, _NOT_A_CAM_LAYER):
            continue

        def hook(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
            spatial = isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[-2:]) > 1
            finished.append((name, spatial))

        handles.append(sub.register_forward_hook(hook))
    try:
        device = next(module.parameters()).device
        with torch.inference_mode():
            module(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    spatial = [i for i, (_, is_spatial) in enumerate(finished) if is_spatial]
    after = (
        {type(module.get_submodule(n)).__name__ for n, _ in finished[spatial[-1] + 1 :]}
        if spatial
        else set()
    )
    if not spatial or any("Attention" in kind for kind in after):
        candidates = [n for n, _ in module.named_modules() if n][-6:]
        raise AttributionError(
            "no convolutional layer ends the feature extractor (is this a vision transformer?), "
            "so there is no CAM layer to detect; pass --target-layer with a dotted module path "
            f"(last modules: {', '.join(candidates)}) or use --method integrated_gradients"
        )
    return finished[spatial[-1]][0]


def get_submodule(module: nn.Module, dotted: str) -> nn.Module:
    try:
        return module.get_submodule(dotted)
    except AttributeError as exc:
        raise AttributionError(
            f"target layer '{dotted}' is not a module of this model; "
            "leave it out to detect one, or see print(model) for names"
        ) from exc


# --method name → pytorch-grad-cam class. Each weighs one convolutional layer's activations.
CAM_METHODS = {
    "gradcam": "GradCAM",  # Selvaraju et al. 2017, arxiv.org/abs/1610.02391
    "gradcam++": "GradCAMPlusPlus",  # Chattopadhay et al. 2018, arxiv.org/abs/1710.11063
    "xgradcam": "XGradCAM",  # Fu et al. 2020, arxiv.org/abs/2008.02312
    "hirescam": "HiResCAM",  # Draelos & Carin 2020, arxiv.org/abs/2011.08891
    "gradcam-elementwise": "GradCAMElementWise",
    "layercam": "LayerCAM",  # Jiang et al. 2021, doi.org/10.1109/TIP.2021.3089943
    "eigencam": "EigenCAM",  # Muhammad & Yeasin 2020, arxiv.org/abs/2008.00299 (class-agnostic)
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",  # Wang et al. 2020, arxiv.org/abs/1910.01279 (one pass per channel)
    "ablationcam": "AblationCAM",  # Desai & Ramaswamy 2020 (one pass per channel)
}


class CamAttributor:
    """A class activation map from pytorch-grad-cam on one convolutional layer.

    pytorch-grad-cam min-max scales each map to [0, 1]: rankings within an image are kept,
    magnitudes across images are not.
    """

    def __init__(self, model: LoadedModel, target_layer: str | None = None, *, method: str) -> None:
        import pytorch_grad_cam

        if model.kind == "torchscript":
            raise AttributionError(
                f"{method} needs forward hooks, which TorchScript modules do not support; use "
                "--method integrated_gradients, or give a state_dict with --arch"
            )
        self.name = method
        self.target_layer = target_layer or find_target_layer(model.module, model.meta.input_size)
        self._model = model
        cam_type = getattr(pytorch_grad_cam, CAM_METHODS[method])
        self._cam = cam_type(model.module, [get_submodule(model.module, self.target_layer)])

    def __call__(self, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
        from pytorch_grad_cam.utils.model_targets import (
            BinaryClassifierOutputTarget,
            ClassifierOutputTarget,
        )

        wrap = BinaryClassifierOutputTarget if self._model.single_logit else ClassifierOutputTarget
        maps = self._cam(input_tensor=inputs, targets=[wrap(int(t)) for t in targets])
        return np.nan_to_num(maps.astype(np.float32), nan=0.0)


class IntegratedGradients:
    """Integrated Gradients via captum (Sundararajan et al., 2017, arxiv.org/abs/1703.01365).

    Needs only input gradients, so it also works on TorchScript models. The baseline is the
    zero input (the normalisation mean); the map is the positive part of the channel sum.
    """

    name = "integrated_gradients"

    steps = 16

    def __init__(self, model: LoadedModel, target_layer: str | None = None) -> None:
        from captum.attr import IntegratedGradients as CaptumIG

        del target_layer  # a pixel-space method: there is no layer to choose
        self._ig = CaptumIG(signed_logits(model))

    def __call__(self, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
        attributions = self._ig.attribute(
            inputs,
            target=list(map(int, targets)),
            n_steps=self.steps,
            internal_batch_size=max(len(inputs), 1) * 4,
        )
        maps = attributions.sum(dim=1).clamp_min(0).detach().cpu().numpy()
        return maps.astype(np.float32)


def signed_logits(model: LoadedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward whose output column ``c`` is the evidence for class ``c``.

    A single-logit head ``z`` becomes ``[-z, z]``; other heads are returned as they are.
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model.module(x)
        return torch.cat([-out, out], dim=1) if model.single_logit else out

    return forward


ATTRIBUTORS: dict[str, Callable[[LoadedModel, str | None], Attributor]] = {
    **{name: functools.partial(CamAttributor, method=name) for name in CAM_METHODS},
    IntegratedGradients.name: IntegratedGradients,
}


def make_attributor(name: str, model: LoadedModel, target_layer: str | None) -> Attributor:
    """Build the attributor ``name`` for ``model``.

    Raises:
        AttributionError: unknown method, or the method cannot run on this model.
    """
    if name not in ATTRIBUTORS:
        known = ", ".join(ATTRIBUTORS)
        raise AttributionError(f"unknown attribution method '{name}' (known: {known})")
    return ATTRIBUTORS[name](model, target_layer)


def default_method(model: LoadedModel) -> str:
    """Grad-CAM where a CAM layer is known or found; Integrated Gradients otherwise.

    TorchScript modules take no layer hooks, and transformers have no final convolution to
    detect: both fall back to a pixel-space method rather than refusing to audit.
    """
    if model.kind == "torchscript":
        return IntegratedGradients.name
    if model.meta.target_layer is None:
        try:
            find_target_layer(model.module, model.meta.input_size)
        except AttributionError:
            return IntegratedGradients.name
    return "gradcam"
