"""Gradient methods from captum, on input pixels (and, for Guided Grad-CAM, one conv layer).

Each returns the positive part of its channel-summed attribution: the pixels whose change in
the attributed direction raises the target's evidence. Only input gradients are needed, so all
but Guided Grad-CAM also run on TorchScript modules.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from auditor.attribution.base import (
    AttributionOptions,
    SignedLogits,
    check_targets,
    finish,
    gradients_on,
    seeded,
)
from auditor.attribution.layers import TargetLayer
from auditor.models import LoadedModel


class CaptumGradient(abc.ABC):
    """Shared skeleton: a captum method on the signed-logit head, channel-summed."""

    name = ""
    target_layer: str | None = None

    def __init__(self, model: LoadedModel, options: AttributionOptions) -> None:
        self._forward = SignedLogits(model)
        self._options = options
        self._model = model

    def __call__(self, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
        categories = check_targets(inputs, targets)
        x = inputs.detach().clone().requires_grad_(True)  # captum warns when it must set this
        with gradients_on():
            attributions = self._attribute(x, categories)
        return finish(attributions.sum(dim=1), (inputs.shape[-2], inputs.shape[-1]))

    @abc.abstractmethod
    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        """Signed attributions ``[N, 3, H, W]`` for ``targets``."""


class IntegratedGradients(CaptumGradient):
    """Integrated Gradients (Sundararajan et al. 2017, arxiv.org/abs/1703.01365).

    The baseline is the zero input, i.e. the normalisation mean: a flat mean-colour image.
    """

    name = "integrated_gradients"

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        from captum.attr import IntegratedGradients as Captum

        return Captum(self._forward).attribute(
            x,
            target=targets,
            n_steps=self._options.ig_steps,
            internal_batch_size=self._options.internal_batch_size,
        )


class Saliency(CaptumGradient):
    """Gradient magnitude (Simonyan et al. 2013, arxiv.org/abs/1312.6034).

    Unsigned by definition: it says which pixels matter, not in which direction.
    """

    name = "saliency"

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        from captum.attr import Saliency as Captum

        return Captum(self._forward).attribute(x, target=targets, abs=True)


class InputXGradient(CaptumGradient):
    """Input × gradient (Shrikumar et al. 2016, arxiv.org/abs/1605.01713)."""

    name = "input_x_gradient"

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        from captum.attr import InputXGradient as Captum

        return Captum(self._forward).attribute(x, target=targets)


class SmoothGrad(CaptumGradient):
    """SmoothGrad (Smilkov et al. 2017, arxiv.org/abs/1706.03825): gradient magnitude averaged
    over noisy copies. The noise std is ``noise_level`` × the input range, which after
    normalisation is 1/std per channel (averaged over channels: captum takes one std per input).
    """

    name = "smoothgrad"

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        from captum.attr import NoiseTunnel
        from captum.attr import Saliency as Captum

        options = self._options
        noise = options.noise_level * float(np.mean([1.0 / s for s in self._model.meta.std]))
        with seeded(options.seed, x.device):
            return NoiseTunnel(Captum(self._forward)).attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=options.noise_samples,
                nt_samples_batch_size=max(1, options.internal_batch_size // len(x)),
                stdevs=noise,
                target=targets,
            )


class GuidedGradCam(CaptumGradient):
    """Guided Grad-CAM (Selvaraju et al. 2017, arxiv.org/abs/1610.02391): guided
    backpropagation times the Grad-CAM of a convolutional layer, upsampled bilinearly.

    Guided backpropagation rewrites the backward pass of ``nn.ReLU`` modules only; a model that
    applies ReLU functionally, or uses GELU/SiLU, gets plain gradients there.
    """

    name = "guided_gradcam"

    def __init__(self, model: LoadedModel, options: AttributionOptions, layer: TargetLayer) -> None:
        super().__init__(model, options)
        self.target_layer = layer.name
        self._layer = model.module.get_submodule(layer.name)

    def _attribute(self, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
        from captum.attr import GuidedGradCam as Captum

        with warnings.catch_warnings():
            # captum announces, on every call, that it hooks ReLUs and will unhook them.
            warnings.filterwarnings("ignore", "Setting backward hooks on ReLU", UserWarning)
            return Captum(self._forward, self._layer).attribute(
                x, target=targets, interpolate_mode="bilinear"
            )
