"""Attribution maps: one interface for every method, batched, with a target per sample.

``make_attributor(name, model)`` returns a callable ``(inputs [N, 3, H, W], targets) → float32
maps [N, H, W]`` at input resolution, raw (not rescaled per image), non-negative where a pixel
supports the target. Methods: pytorch-grad-cam's CAMs (``cams.py``), captum's gradient
(``gradients.py``) and perturbation methods (``perturbation.py``), and RISE (``rise.py``);
``ATTRIBUTORS`` lists them.
"""

from auditor.attribution.base import AttributionOptions, Attributor, SignedLogits
from auditor.attribution.cams import CAM_METHODS
from auditor.attribution.layers import (
    ChannelsLastToMap,
    TargetLayer,
    TokensToMap,
    find_target_layer,
)
from auditor.attribution.registry import (
    ATTRIBUTORS,
    BLACK_BOX_METHODS,
    LayerMethod,
    Method,
    PixelMethod,
    default_method,
    make_attributor,
    needs_gradients,
    passes_per_image,
)

__all__ = [
    "ATTRIBUTORS",
    "BLACK_BOX_METHODS",
    "CAM_METHODS",
    "AttributionOptions",
    "Attributor",
    "ChannelsLastToMap",
    "LayerMethod",
    "Method",
    "PixelMethod",
    "SignedLogits",
    "TargetLayer",
    "TokensToMap",
    "default_method",
    "find_target_layer",
    "make_attributor",
    "needs_gradients",
    "passes_per_image",
]
