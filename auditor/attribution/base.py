"""What every attribution method shares: the interface, its options, targets and map format.

An attributor maps normalized inputs ``[N, 3, H, W]`` and one target class index per sample to
float32 maps ``[N, H, W]`` at input resolution: finite, non-negative where a pixel supports the
target, and raw, i.e. not rescaled per image, so that magnitudes stay comparable across images
(callers normalise as they need).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch
from torch import nn

from auditor.errors import AttributionError
from auditor.models import LoadedModel


class Attributor(Protocol):
    """What every attribution method provides.

    ``target_layer`` is the dotted name of the layer the method weighs, or None for methods that
    work on input pixels.
    """

    name: str
    target_layer: str | None

    def __call__(self, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
        """Maps float32 ``[N, H, W]`` for normalized ``inputs [N, 3, H, W]``, one target each."""
        ...


@dataclass(frozen=True)
class AttributionOptions:
    """Cost/fidelity knobs of the slower methods; the defaults trade fidelity for time at the
    scale of an audit (hundreds to thousands of images on a CPU).

    Attributes:
        ig_steps: Integrated Gradients' path steps (Sundararajan et al. use 20–300).
        samples: perturbed samples per image that LIME and KernelSHAP fit their surrogate on.
        noise_samples: noisy copies per image that SmoothGrad averages (Smilkov et al.: ~50).
        noise_level: SmoothGrad's noise std as a fraction of the input range (paper: 10–20 %).
        superpixels: SLIC segments per image for feature_ablation, lime and kernel_shap.
        occlusion_window: occlusion window side as a fraction of the image side; windows move
            by half their side, so each pixel is covered up to four times.
        rise_masks: random masks per image that RISE averages (Petsiuk et al.: 4,000–8,000
            for ImageNet classes; a face attribute's evidence is coarser).
        rise_grid: RISE's mask grid, cells per side, before upsampling.
        rise_keep: the probability that RISE keeps a grid cell.
        internal_batch_size: forward passes evaluated together by the methods that make many
            (IG steps, perturbations, RISE masks, ScoreCAM/AblationCAM channels); bounds memory.
        seed: seeds the random methods (lime, kernel_shap, smoothgrad) so a run is repeatable.
    """

    ig_steps: int = 32
    samples: int = 64
    noise_samples: int = 25
    noise_level: float = 0.15
    superpixels: int = 50
    occlusion_window: float = 0.125
    rise_masks: int = 256
    rise_grid: int = 7
    rise_keep: float = 0.5
    internal_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        counts = {
            "ig_steps": self.ig_steps,
            "samples": self.samples,
            "noise_samples": self.noise_samples,
            "superpixels": self.superpixels,
            "rise_masks": self.rise_masks,
            "rise_grid": self.rise_grid,
            "internal_batch_size": self.internal_batch_size,
        }
        bad = [f"{name}={value}" for name, value in counts.items() if value < 1]
        if not 0.0 < self.occlusion_window <= 1.0:
            bad.append(f"occlusion_window={self.occlusion_window} (a fraction in (0, 1])")
        if not 0.0 < self.rise_keep < 1.0:
            bad.append(f"rise_keep={self.rise_keep} (a probability in (0, 1))")
        if self.noise_level <= 0.0:
            bad.append(f"noise_level={self.noise_level}")
        if bad:
            raise AttributionError(f"attribution options must be positive: {', '.join(bad)}")


class SignedLogits(nn.Module):
    """The audited head with one output column per class: column ``c`` is evidence for ``c``.

    A single-logit head ``z`` (binary, or one output of a multi-label head) becomes ``[-z, z]``,
    so a class-0 target gets evidence ``-z`` and a real map instead of an empty one; this is
    pytorch-grad-cam's ``BinaryClassifierOutputTarget`` written once as a module, so CAMs and
    captum share one target convention (a plain class index). Other heads pass through.
    """

    def __init__(self, model: LoadedModel) -> None:
        super().__init__()
        self.head = model.head
        self.single_logit = model.single_logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        return torch.cat([-out, out], dim=1) if self.single_logit else out


def check_targets(inputs: torch.Tensor, targets: Sequence[int]) -> list[int]:
    """One int target per image, as captum and pytorch-grad-cam take them.

    Raises:
        AttributionError: the counts differ.
    """
    if inputs.ndim != 4 or len(targets) != inputs.shape[0]:
        raise AttributionError(
            f"attribution needs inputs [N, 3, H, W] and one target per image; got inputs "
            f"{tuple(inputs.shape)} and {len(targets)} targets"
        )
    return [int(t) for t in targets]


def finish(maps: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Raw maps ``[N, h, w]`` → the canonical float32 ``[N, H, W]``: positive part, resized.

    Resizing is cv2's bilinear interpolation of the values as they are (no min-max scaling,
    unlike pytorch-grad-cam's ``scale_cam_image``). Non-finite values, which only degenerate
    inputs produce (a zero score in a ratio), become 0 so they cannot poison statistics.
    """
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    maps = np.maximum(maps, 0.0)
    height, width = size
    if maps.shape[1:] != (height, width):  # bilinear weights are convex: no negatives appear
        maps = np.stack(
            [cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps]
        )
    return np.ascontiguousarray(maps, dtype=np.float32)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a random method with a fixed seed without touching the caller's random state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def gradients_on() -> contextlib.AbstractContextManager[None]:
    """Gradients on, whatever the caller set; attribution inside ``torch.inference_mode`` fails.

    Raises:
        AttributionError: called inside ``torch.inference_mode()``, where no graph is recorded.
    """
    if torch.is_inference_mode_enabled():
        raise AttributionError(
            "attribution needs gradients: call the attributor outside torch.inference_mode()"
        )
    return torch.enable_grad()
