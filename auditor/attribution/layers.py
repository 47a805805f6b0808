"""Which layer a CAM weighs, and how that layer's output becomes maps ``[N, C, h, w]``.

CNNs: the last module that outputs a spatial map. Vision transformers: the first norm of the
last block (timm ``blocks[-1].norm1``), as pytorch-grad-cam advises: after the last block only
the class token reaches the head, so the final norm's patch tokens get no gradient, while the
last block's attention still mixes every patch token into the class token. Its tokens
``[N, T, C]`` lose their prefix (class, distillation, register tokens) and are laid out on the
patch grid; Swin's channels-last maps ``[N, h, w, C]`` are permuted. Layouts are read off the
shapes a forward pass at the model's input size produces, so any architecture whose layers
follow these conventions works without a per-architecture table.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from auditor.errors import AttributionError

# Pooling to a fixed grid has no learned features; identity and dropout repeat their input
# under a less telling name.
_NOT_A_CAM_LAYER = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout)
# Class, distillation and register tokens in front of the patch tokens; only guessed when the
# model does not declare their count (timm's num_prefix_tokens).
_MAX_PREFIX_TOKENS = 16
# Layers whose output stride differs this much between height and width are not a patch grid.
_STRIDE_RATIO = 1.5
_CANDIDATES_SHOWN = 6


@dataclass(frozen=True)
class TokensToMap:
    """Tokens ``[N, T, C]`` → ``[N, C, h, w]``: drop the prefix tokens, lay patches on the grid."""

    prefix_tokens: int
    grid: tuple[int, int]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.prefix_tokens :, :]
        return patches.reshape(tokens.shape[0], *self.grid, tokens.shape[2]).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class ChannelsLastToMap:
    """Channels-last maps ``[N, h, w, C]`` (Swin in timm and torchvision) → ``[N, C, h, w]``."""

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class TargetLayer:
    """A layer for CAMs: its dotted name in the network, its channel count (ScoreCAM and
    AblationCAM cost a forward pass per channel), and the transform that makes its output
    ``[N, C, h, w]`` (None: it already is, as in CNNs).
    """

    name: str
    channels: int
    reshape: TokensToMap | ChannelsLastToMap | None = None

    @property
    def is_spatial(self) -> bool:
        """True for a convolutional map, False for tokens or channels-last maps."""
        return self.reshape is None


@dataclass(frozen=True)
class _Seen:
    """One module's last call in a traced forward pass."""

    name: str
    module: nn.Module
    started: int
    finished: int
    shape: tuple[int, ...] | None
    layer: TargetLayer | None


def find_target_layer(
    module: nn.Module, input_size: tuple[int, int], name: str | None = None
) -> TargetLayer:
    """The CAM layer of ``module`` at ``input_size`` (height, width): ``name`` if given, else
    the detected one; either way with the transform its output layout needs.

    Raises:
        AttributionError: ``name`` is not a module, does not run, or outputs neither a spatial
            map nor tokens; or, without ``name``, no layer qualifies. The message lists the
            candidate layers.
    """
    if isinstance(module, torch.jit.ScriptModule):
        raise AttributionError(
            "TorchScript modules take no layer hooks, so no CAM layer can be used; "
            "use a pixel-space method such as --method integrated_gradients"
        )
    seen = _trace(module, input_size)
    if name is not None:
        return _named_layer(module, seen, name)
    usable = [(s, s.layer) for s in seen if s.layer is not None and _may_be_cam_layer(s)]
    maps = [(s, layer) for s, layer in usable if layer.is_spatial]
    attention = [s for s in seen if "Attention" in type(s.module).__name__]
    if attention and (not maps or max(s.finished for s in attention) > maps[-1][0].finished):
        last_start = max(s.started for s in attention)
        tokens = [lay for s, lay in usable if not lay.is_spatial and s.finished < last_start]
        if tokens:
            return tokens[-1]
    grids = [lay for _, lay in usable if not isinstance(lay.reshape, TokensToMap)]
    if grids:  # a CNN (channels-last ones too), or one whose head pools with attention (CLIP)
        return grids[-1]
    raise AttributionError(
        f"no CAM layer found at input size {input_size[0]}x{input_size[1]} (none of the "
        "usual layouts: a spatial map [N, C, h, w] before the head, or tokens before the last "
        f"attention); {_candidates(seen)}, or use a pixel-space method such as "
        "--method integrated_gradients"
    )


def _named_layer(module: nn.Module, seen: list[_Seen], name: str) -> TargetLayer:
    names = [n for n, _ in module.named_modules() if n]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise AttributionError(
            f"target layer '{name}' is not a module of this model; {hint}{_candidates(seen)}"
        )
    found = {s.name: s for s in seen}.get(name)
    if found is None:
        raise AttributionError(
            f"target layer '{name}' does not run when the model predicts; {_candidates(seen)}"
        )
    if found.layer is None:
        shape = list(found.shape) if found.shape is not None else "no tensor"
        raise AttributionError(
            f"target layer '{name}' outputs {shape}, neither a spatial map [N, C, h, w] nor "
            f"tokens [N, T, C] on the input's patch grid; {_candidates(seen)}"
        )
    return found.layer


def _candidates(seen: list[_Seen]) -> str:
    """The last few layers a CAM could use, for error messages."""
    names = [s.name for s in seen if s.layer is not None and _may_be_cam_layer(s)]
    names = names[-_CANDIDATES_SHOWN:]
    if not names:
        return "no module outputs a spatial map or tokens, so there is no layer to pass"
    return f"pass --target-layer with one of: {', '.join(names)}"


def _may_be_cam_layer(seen: _Seen) -> bool:
    return not isinstance(seen.module, _NOT_A_CAM_LAYER)


def _trace(module: nn.Module, input_size: tuple[int, int]) -> list[_Seen]:
    """Run one forward pass on zeros and record every module's last call, by finishing order."""
    clock = itertools.count()
    started: dict[str, int] = {}
    seen: dict[str, _Seen] = {}
    prefix = getattr(module, "num_prefix_tokens", None)
    declared = prefix if isinstance(prefix, int) else None

    def on_start(name: str) -> Callable[[nn.Module, object], None]:
        def hook(_m: nn.Module, _inputs: object) -> None:
            started[name] = next(clock)

        return hook

    def on_finish(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(sub: nn.Module, _inputs: object, out: object) -> None:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            layer = _as_layer(name, shape, input_size, declared)
            seen[name] = _Seen(name, sub, started[name], next(clock), shape, layer)

        return hook

    handles = []
    for name, sub in module.named_modules():
        if name:
            handles.append(sub.register_forward_pre_hook(on_start(name)))
            handles.append(sub.register_forward_hook(on_finish(name)))
    first = next(module.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 3, *input_size, device=device, dtype=dtype))
    except Exception as exc:  # any model error; say where it came from
        raise AttributionError(
            f"cannot trace the model's layers on a 1x3x{input_size[0]}x{input_size[1]} input: {exc}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    return sorted(seen.values(), key=lambda s: s.finished)


def _as_layer(
    name: str,
    shape: tuple[int, ...] | None,
    input_size: tuple[int, int],
    prefix_tokens: int | None,
) -> TargetLayer | None:
    """How an output of ``shape`` becomes CAM maps, or None when it cannot."""
    if shape is None:
        return None
    if len(shape) == 4 and _is_grid(shape[2:], input_size):
        return TargetLayer(name, shape[1])
    if len(shape) == 4 and _is_grid(shape[1:3], input_size):
        return TargetLayer(name, shape[3], ChannelsLastToMap())
    if len(shape) == 3:
        tokens = _token_grid(shape[1], input_size, prefix_tokens)
        if tokens is not None:
            return TargetLayer(name, shape[2], TokensToMap(*tokens))
    return None


def _is_grid(hw: tuple[int, ...], input_size: tuple[int, int]) -> bool:
    """True when ``hw`` can be the input downsampled by one stride (and still localises)."""
    (h, w), (height, width) = hw, input_size
    if not (1 < h <= height and 1 < w <= width):
        return False
    strides = (height / h, width / w)
    return max(strides) / min(strides) < _STRIDE_RATIO


def _token_grid(
    count: int, input_size: tuple[int, int], prefix_tokens: int | None
) -> tuple[int, tuple[int, int]] | None:
    """(prefix tokens, patch grid) that explain ``count`` tokens at ``input_size``, if any.

    The fewest prefix tokens that leave a grid with the input's aspect ratio win, unless the
    model declares its count (timm's ``num_prefix_tokens``).
    """
    height, width = input_size
    prefixes = [prefix_tokens] if prefix_tokens is not None else range(_MAX_PREFIX_TOKENS + 1)
    for prefix in prefixes:
        patches = count - prefix
        if patches < 4:
            continue
        guess = round(math.sqrt(patches * height / width))
        for h in (guess, guess - 1, guess + 1):
            if h > 1 and patches % h == 0 and _is_grid((h, patches // h), input_size):
                return prefix, (h, patches // h)
    return None
