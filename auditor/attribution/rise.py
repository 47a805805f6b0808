"""RISE: randomised input sampling for explanation (Petsiuk et al. 2018, arxiv.org/abs/1806.07421).

The model sees the image through many random smooth masks; a pixel's saliency is how much the
target's probability rises when that pixel is kept. Forward passes only, so it runs on black
boxes (ONNX, prediction functions), and it needs no superpixels or surrogate fit, so its passes
batch freely: one set of masks, seeded, serves every image of every batch, and the masked
copies go through the model ``internal_batch_size`` at a time.

Masks follow the paper: a coarse ``grid × grid`` of cells kept with probability ``keep``,
upsampled bilinearly to one cell more than the image and cropped at a random offset, so the
soft edges fall anywhere. Removed pixels take the normalisation mean (the zero input), as in the
other perturbation methods. The saliency is the mask-weighted *covariance* of score and mask,
``Σ (s_i − s̄) M_i / (n p)``, rather than the paper's ``Σ s_i M_i / (n p)``: the two differ by a
constant per image, which would spread map mass evenly over every pixel and blunt the
localisation and faithfulness measures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from auditor.attribution.base import AttributionOptions, check_targets, finish
from auditor.models import LoadedModel


class Rise:
    """RISE saliency of each image for its target class."""

    name = "rise"
    target_layer: str | None = None

    def __init__(self, model: LoadedModel, options: AttributionOptions) -> None:
        self._model = model
        self._options = options
        self._masks: torch.Tensor | None = None

    def __call__(self, inputs: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
        categories = check_targets(inputs, targets)
        size = (inputs.shape[-2], inputs.shape[-1])
        masks = self._masks_for(size, inputs.device)
        count, images = len(masks), len(inputs)
        per_pass = max(1, self._options.internal_batch_size // images)
        rows = torch.arange(images, device=inputs.device)
        wanted = torch.tensor(categories, device=inputs.device)
        scores = torch.empty(images, count, device=inputs.device)
        with torch.no_grad():
            for start in range(0, count, per_pass):
                chunk = masks[start : start + per_pass]  # [m, 1, H, W]
                masked = (inputs[:, None] * chunk[None]).flatten(0, 1)  # image-major
                probs = self._model.probabilities(self._model.head(masked))
                picked = probs.view(images, len(chunk), -1)[rows, :, wanted]
                scores[:, start : start + len(chunk)] = picked
        centred = scores - scores.mean(dim=1, keepdim=True)
        saliency = torch.einsum("nm,mhw->nhw", centred, masks[:, 0])
        return finish(saliency / (count * self._options.rise_keep), size)

    def _masks_for(self, size: tuple[int, int], device: torch.device) -> torch.Tensor:
        if self._masks is None or tuple(self._masks.shape[-2:]) != size:
            self._masks = rise_masks(self._options, size).to(device)
        return self._masks


def rise_masks(options: AttributionOptions, size: tuple[int, int]) -> torch.Tensor:
    """``options.rise_masks`` soft masks ``[n, 1, H, W]`` in [0, 1], seeded by ``options.seed``."""
    generator = torch.Generator().manual_seed(options.seed)
    grid, (height, width) = options.rise_grid, size
    cell_h, cell_w = -(-height // grid), -(-width // grid)
    cells = torch.rand(options.rise_masks, 1, grid, grid, generator=generator) < options.rise_keep
    upsampled = F.interpolate(
        cells.float(),
        size=((grid + 1) * cell_h, (grid + 1) * cell_w),
        mode="bilinear",
        align_corners=False,
    )
    dy = torch.randint(0, cell_h, (options.rise_masks,), generator=generator)
    dx = torch.randint(0, cell_w, (options.rise_masks,), generator=generator)
    return torch.stack(
        [
            upsampled[i, :, y : y + height, x : x + width]
            for i, (y, x) in enumerate(zip(dy.tolist(), dx.tolist(), strict=True))
        ]
    )
