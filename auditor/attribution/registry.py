"""``--method`` names → how to build each method, what it needs and what it costs.

Adding a method is adding one entry here (and its class in ``cams.py``, ``gradients.py`` or
``perturbation.py``); the tests walk this dict.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from auditor.attribution.base import AttributionOptions, Attributor
from auditor.attribution.cams import CAM_METHODS, CamAttributor, FullGradAttributor, cam_passes
from auditor.attribution.gradients import (
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from auditor.attribution.layers import TargetLayer, find_target_layer
from auditor.attribution.perturbation import (
    FeatureAblation,
    KernelShap,
    Lime,
    Occlusion,
    occlusion_passes,
)
from auditor.attribution.rise import Rise
from auditor.errors import AttributionError
from auditor.models import LoadedModel

# What passes_per_image assumes about the input when it is not given a model.
_NOMINAL_SIZE = (224, 224)


@dataclass(frozen=True)
class PixelMethod:
    """A method on input pixels. ``hooks``: it needs forward hooks, so no TorchScript;
    ``gradients``: it backpropagates, so no black box (and each pass costs about three)."""

    build: Callable[[LoadedModel, AttributionOptions], Attributor]
    passes: Callable[[AttributionOptions, tuple[int, int]], int]
    hooks: bool = False
    gradients: bool = True


@dataclass(frozen=True)
class LayerMethod:
    """A method that weighs one layer (always through forward hooks).

    ``spatial_only``: the layer must be a convolutional map, not transformer tokens.
    ``passes`` gets None for the layer when no model is at hand.
    """

    build: Callable[[LoadedModel, TargetLayer, AttributionOptions], Attributor]
    passes: Callable[[AttributionOptions, TargetLayer | None], int]
    spatial_only: bool = False
    gradients: bool = True

    @property
    def hooks(self) -> bool:
        """A layer method reads its layer through forward hooks, always."""
        return True


Method = PixelMethod | LayerMethod

# CAMs that weigh activations by forward passes or their principal components, not gradients.
_FORWARD_ONLY_CAMS = frozenset({"eigencam", "kpcacam", "scorecam", "ablationcam"})


def _cam(name: str) -> LayerMethod:
    def build(model: LoadedModel, layer: TargetLayer, options: AttributionOptions) -> Attributor:
        return CamAttributor(model, layer, method=name, batch_size=options.internal_batch_size)

    return LayerMethod(
        build,
        lambda _options, layer: cam_passes(name, layer),
        gradients=name not in _FORWARD_ONLY_CAMS,
    )


def _one_pass(_options: AttributionOptions, _size: tuple[int, int]) -> int:
    return 1


ATTRIBUTORS: dict[str, Method] = {
    **{name: _cam(name) for name in CAM_METHODS},
    "fullgrad": PixelMethod(lambda m, _o: FullGradAttributor(m), _one_pass, hooks=True),
    "integrated_gradients": PixelMethod(IntegratedGradients, lambda o, _s: o.ig_steps),
    "saliency": PixelMethod(Saliency, _one_pass),
    "input_x_gradient": PixelMethod(InputXGradient, _one_pass),
    "smoothgrad": PixelMethod(SmoothGrad, lambda o, _s: o.noise_samples),
    "guided_gradcam": LayerMethod(
        lambda m, layer, o: GuidedGradCam(m, o, layer), lambda _o, _l: 2, spatial_only=True
    ),
    "occlusion": PixelMethod(Occlusion, lambda o, size: occlusion_passes(size, o), gradients=False),
    "feature_ablation": PixelMethod(
        FeatureAblation, lambda o, _s: o.superpixels + 1, gradients=False
    ),
    "lime": PixelMethod(Lime, lambda o, _s: o.samples, gradients=False),
    "kernel_shap": PixelMethod(KernelShap, lambda o, _s: o.samples, gradients=False),
    "rise": PixelMethod(Rise, lambda o, _s: o.rise_masks, gradients=False),
}
# What a model that answers forward passes only (ONNX, a prediction function) can be explained by.
BLACK_BOX_METHODS = tuple(
    name for name, m in ATTRIBUTORS.items() if not m.gradients and not m.hooks
)


def make_attributor(
    name: str,
    model: LoadedModel,
    target_layer: str | None = None,
    options: AttributionOptions | None = None,
) -> Attributor:
    """Build the attributor ``name`` for ``model``; ``target_layer`` (a dotted module path)
    overrides the detected layer of methods that weigh one.

    Raises:
        AttributionError: unknown method, or one that cannot run on this model (a black box
            for gradient methods, TorchScript for hook-based ones, a transformer for conv-only
            ones, no usable layer).
    """
    method = _method(name)
    options = options or AttributionOptions()
    _refuse_black_box(name, method, model)
    if method.hooks:
        _refuse_hookless(name, model)
    if isinstance(method, PixelMethod):
        return method.build(model, options)
    layer = find_target_layer(model.module, model.meta.input_size, target_layer)
    if method.spatial_only and not layer.is_spatial:
        raise AttributionError(
            f"{name} needs a convolutional layer, and '{layer.name}' outputs transformer "
            "tokens; use --method gradcam (it reshapes tokens to the patch grid) or "
            "integrated_gradients"
        )
    return method.build(model, layer, options)


def passes_per_image(
    name: str,
    options: AttributionOptions | None = None,
    model: LoadedModel | None = None,
    target_layer: str | None = None,
) -> int:
    """Estimated forward(+backward) passes per image of method ``name``: what a slow run costs.

    With ``model`` the estimate uses its input size and target layer (e.g. ScoreCAM makes one
    pass per channel); without it, a 224 px input.

    Raises:
        AttributionError: unknown method; or the cost depends on the layer and no model is given.
    """
    method = _method(name)
    options = options or AttributionOptions()
    if isinstance(method, PixelMethod):
        return method.passes(options, model.meta.input_size if model else _NOMINAL_SIZE)
    layer = None
    if model is not None:
        layer = find_target_layer(model.module, model.meta.input_size, target_layer)
    return method.passes(options, layer)


def needs_gradients(name: str) -> bool:
    """Whether method ``name`` backpropagates: its passes cost a forward and a backward."""
    return _method(name).gradients


def default_method(model: LoadedModel) -> str:
    """Grad-CAM where a CAM layer is known or found (CNNs and vision transformers alike); RISE
    for black boxes; Integrated Gradients otherwise, e.g. for TorchScript modules, which take no
    layer hooks (``auditor.cost`` then sets its steps by measured cost).
    """
    if model.black_box:
        return "rise"
    if not model.takes_hooks:
        return "integrated_gradients"
    if model.meta.target_layer is None:
        try:
            find_target_layer(model.module, model.meta.input_size)
        except AttributionError:
            return "integrated_gradients"
    return "gradcam"


def _method(name: str) -> Method:
    if name not in ATTRIBUTORS:
        close = difflib.get_close_matches(name, list(ATTRIBUTORS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise AttributionError(
            f"unknown attribution method '{name}'; {hint}(known: {', '.join(ATTRIBUTORS)})"
        )
    return ATTRIBUTORS[name]


def _refuse_black_box(name: str, method: Method, model: LoadedModel) -> None:
    if model.black_box and (method.gradients or method.hooks):
        needs = "gradients and layer hooks" if method.hooks else "gradients"
        source = "an ONNX model" if model.kind == "onnx" else "a prediction function"
        raise AttributionError(
            f"{name} needs {needs}, and {source} answers forward passes only; use a black-box "
            f"method: {', '.join(BLACK_BOX_METHODS)}"
        )


def _refuse_hookless(name: str, model: LoadedModel) -> None:
    if not model.takes_hooks:
        raise AttributionError(
            f"{name} needs forward hooks, which TorchScript modules do not support; use a "
            "pixel-space method (integrated_gradients, saliency, occlusion, lime, rise, ...), "
            "or give the architecture with --arch (a state_dict) or a torch.export .pt2 file"
        )
