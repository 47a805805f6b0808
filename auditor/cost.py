"""What a run will cost, measured on this device before it starts, and the default method it buys.

Two speeds are measured on a batch of blank images: forward passes, and forward+backward passes
of the audited head (what gradient methods make). The estimate counts the passes of every stage
and divides by the speed of their kind, so a slow method is no surprise and the figure holds
within a small factor (the benchmark compares it with the elapsed time).

A model without layer hooks (TorchScript) cannot have Grad-CAM. Its default is Integrated
Gradients with as many steps as keep the audit within ``HOOKLESS_BUDGET`` times what the same
audit would cost with Grad-CAM (one gradient pass per image), and the plan says so. The steps
are set from pass counts, with a gradient pass at ``GRADIENT_PASS_COST`` forwards, not from
timings, so that the same command gives the same results on every machine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from auditor import faithfulness
from auditor.attribution import (
    AttributionOptions,
    SignedLogits,
    default_method,
    needs_gradients,
    passes_per_image,
)
from auditor.config import AuditConfig
from auditor.models import LoadedModel
from auditor.preprocess import to_tensor
from auditor.rescore import predict
from probes import Probe

# A hookless model's default audit may cost this many times its Grad-CAM audit.
HOOKLESS_BUDGET = 3.0
# A forward+backward pass in forward passes: the usual rule, and 2.9 measured on the bench CNN.
GRADIENT_PASS_COST = 3.0
# Integrated Gradients below this many steps is a coarse Riemann sum of little use.
_MIN_IG_STEPS = 4


@dataclass(frozen=True)
class Speeds:
    """Images per second through the audited head: forward, and forward+backward."""

    forward: float
    gradient: float


@dataclass(frozen=True)
class CostEstimate:
    """What a run will cost, stated before it starts so a slow method is no surprise."""

    images: int
    model_passes: int  # forward (or forward+backward) passes of the model, all images together
    seconds: float
    passes_per_image: dict[str, int]  # per attribution method
    note: str | None = None  # why the default method is the one it is, where that needs saying


@dataclass(frozen=True)
class MethodChoice:
    """The attribution methods of a run and their options, with the reason for a default."""

    methods: tuple[str, ...]
    options: AttributionOptions
    note: str | None = None


def measure_speeds(model: LoadedModel, batch_size: int) -> Speeds:
    """Forward and gradient throughput on one batch of blank images, after a warm-up batch
    (TorchScript's profiling executor optimises on its first calls at a new shape)."""
    blank = np.zeros((batch_size, *model.meta.input_size, 3), np.uint8)
    for _ in range(2):
        predict(model, blank, batch_size)
    started = time.perf_counter()
    predict(model, blank, batch_size)
    forward = batch_size / max(time.perf_counter() - started, 1e-6)
    if model.black_box:
        return Speeds(forward, forward)
    head = SignedLogits(model)
    inputs = to_tensor(blank, model.meta, model.device)
    for timed in (False, False, True):
        x = inputs.clone().requires_grad_(True)
        started = time.perf_counter()
        with torch.enable_grad():
            head(x)[:, 0].sum().backward()
        if timed:
            gradient = batch_size / max(time.perf_counter() - started, 1e-6)
    return Speeds(forward, gradient)


def choose_methods(
    model: LoadedModel, probes: Sequence[Probe], images: int, config: AuditConfig
) -> MethodChoice:
    """The methods the user named, or the model's default (for a hookless model, Integrated
    Gradients with its steps set by ``HOOKLESS_BUDGET``)."""
    options = dataclasses.replace(config.attribution, seed=config.seed)
    if config.methods:
        return MethodChoice(config.methods, options)
    method = default_method(model)
    if model.black_box:
        source = "an ONNX model" if model.kind == "onnx" else "a prediction function"
        note = f"{method}: {source} answers forward passes only, so attribution is black-box"
        return MethodChoice((method,), options, note)
    if model.takes_hooks:
        return MethodChoice((method,), options)
    other = _other_passes(probes, 1, images, config) / max(images, 1)
    gradcam = GRADIENT_PASS_COST + other
    affordable = (HOOKLESS_BUDGET * gradcam - other) / GRADIENT_PASS_COST
    steps = int(min(options.ig_steps, max(_MIN_IG_STEPS, affordable)))
    note = (
        f"integrated_gradients with {steps} steps: {model.kind} takes no layer hooks, so no "
        f"Grad-CAM; {steps} steps keep the audit within about {HOOKLESS_BUDGET:.0f}x the passes "
        "of a Grad-CAM audit of the same network (--method and --ig-steps choose otherwise)"
    )
    return MethodChoice((method,), dataclasses.replace(options, ig_steps=steps), note)


def estimate_cost(
    model: LoadedModel,
    choice: MethodChoice,
    probes: Sequence[Probe],
    images: int,
    config: AuditConfig,
    speeds: Speeds,
) -> CostEstimate:
    """Model passes of the whole run, and seconds at this device's measured speeds."""
    per_method = {
        m: passes_per_image(m, choice.options, model, model.meta.target_layer)
        for m in choice.methods
    }
    gradient_passes = images * sum(n for m, n in per_method.items() if needs_gradients(m))
    forward_passes = images * sum(n for m, n in per_method.items() if not needs_gradients(m))
    forward_passes += _other_passes(probes, len(choice.methods), images, config)
    curves = min(config.faithfulness_images, images) * len(choice.methods)
    seconds = (
        forward_passes / speeds.forward
        + gradient_passes / speeds.gradient
        + curves * faithfulness.passes_per_image()[1] * _imputation_seconds(model.meta.input_size)
    )
    return CostEstimate(images, forward_passes + gradient_passes, seconds, per_method, choice.note)


def _other_passes(probes: Sequence[Probe], methods: int, images: int, config: AuditConfig) -> int:
    """Forward passes besides attribution: the prediction, every probe and its placebo (the
    whole-image probes share one, their noise floor), and the faithfulness curves of the
    sampled images, for the whole run."""
    on_maps = sum(p.region_from == "attribution" for p in probes)
    with_placebo = sum(p.region_from not in ("attribution", "whole_image") for p in probes)
    whole = len(probes) - on_maps - with_placebo
    per_image = 1 + 2 * on_maps * methods + 2 * with_placebo + whole + (whole > 0)
    curves = min(config.faithfulness_images, images) * methods
    return per_image * images + curves * faithfulness.passes_per_image()[0]


def _imputation_seconds(size: tuple[int, int]) -> float:
    """One ROAD imputation of half an image (a sparse solve; it does not run on the model)."""
    image = np.zeros((*size, 3), np.uint8)
    keep = np.arange(size[0] * size[1]).reshape(size) % 2 == 0
    started = time.perf_counter()
    faithfulness.impute(image, keep, np.random.default_rng(0))
    return time.perf_counter() - started
