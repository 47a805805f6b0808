"""Load a model someone else trained, with the metadata needed to feed it exactly as they did.

Three file kinds are accepted: TorchScript archives, state_dicts (``.pt``/``.pth`` read with
``weights_only=True``, or ``.safetensors``) plus an architecture name, and, only when the user
says they trust the file, fully pickled ``nn.Module`` objects.
"""

from __future__ import annotations

import difflib
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from auditor.errors import ConfigError, ModelLoadError

ModelKind = Literal["torchscript", "state_dict", "pickle"]

# Nested keys under which training scripts commonly store the weights of a checkpoint.
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module")


@dataclass(frozen=True)
class ModelMeta:
    """What the model expects: class names in output order and its preprocessing.

    ``input_size`` is (height, width). A single-logit head's logit is for ``classes[1]``.
    A multi-label head (many independent sigmoid outputs, CelebA-style) is audited one output at
    a time: ``target_index`` picks it, ``attributes`` names the outputs, and ``classes`` are the
    two labels of that output (absent, present).
    """

    classes: tuple[str, ...]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    arch: str | None = None
    target_layer: str | None = None
    attributes: tuple[str, ...] | None = None
    target_index: int | None = None

    @property
    def target_attribute(self) -> str | None:
        """The audited output's name when a multi-label head names its outputs."""
        if self.target_index is None or self.attributes is None:
            return None
        return self.attributes[self.target_index]


class SelectOutput(nn.Module):
    """One output of a multi-label head as a single logit ``[N, 1]``.

    The wrapped network stays the same object, so hooks on its layers (CAMs) still fire.
    """

    def __init__(self, network: nn.Module, index: int) -> None:
        super().__init__()
        self.network = network
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[:, self.index : self.index + 1]


@dataclass(frozen=True)
class LoadedModel:
    """An eval-mode module on its device with its metadata and head shape.

    ``module`` is the network as loaded (look layers up here); ``head`` is what the audit runs:
    the same network, or for a multi-label head the one output being audited.
    """

    module: nn.Module
    meta: ModelMeta
    kind: ModelKind
    single_logit: bool
    device: torch.device
    head: nn.Module

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Turn raw outputs ``[N, K]`` into class probabilities ``[N, len(classes)]``."""
        if self.single_logit:
            p1 = torch.sigmoid(logits[:, 0].float())
            return torch.stack([1.0 - p1, p1], dim=1)
        return torch.softmax(logits.float(), dim=1)


def sidecar_path(model_path: Path) -> Path | None:
    """The metadata JSON beside a model: ``<stem>.json`` first, else ``model.json``."""
    for candidate in (model_path.with_suffix(".json"), model_path.parent / "model.json"):
        if candidate.is_file() and candidate != model_path:
            return candidate
    return None


def read_meta(
    model_path: Path, config_path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> ModelMeta:
    """Merge the sidecar JSON (or ``config_path``) with command-line overrides.

    Raises:
        ModelLoadError: the model file does not exist.
        ConfigError: a required key is missing or malformed.
    """
    if not model_path.is_file():
        raise ModelLoadError(f"model file {model_path} does not exist")
    raw: dict[str, Any] = {}
    source = config_path or sidecar_path(model_path)
    if config_path is not None and not config_path.is_file():
        raise ConfigError(f"model config {config_path} does not exist")
    if source is not None:
        try:
            raw = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read model config {source}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"model config {source} must hold a JSON object")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    _fill_from_timm(raw)
    missing = [k for k in ("classes", "input_size", "mean", "std") if k not in raw]
    if missing:
        where = source or f"{model_path.with_suffix('.json')} (or model.json beside it)"
        raise ConfigError(
            f"model metadata lacks {', '.join(missing)}: add them to {where} "
            "or pass --classes/--input-size/--mean/--std"
        )
    return ModelMeta(
        classes=_classes(raw["classes"]),
        input_size=_size(raw["input_size"]),
        mean=_triple("mean", raw["mean"]),
        std=_triple("std", raw["std"]),
        arch=raw.get("arch"),
        target_layer=raw.get("target_layer"),
        attributes=_attributes(raw.get("attributes")),
        target_index=_target_index(raw.get("target_index"), raw.get("attributes")),
    )


def _attributes(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError("'attributes' must list the names of a multi-label head's outputs")
    return tuple(str(v) for v in value)


def _target_index(value: Any, attributes: Any) -> int | None:
    """An output index, given as a number or as one of ``attributes``."""
    if value is None:
        return None
    names = _attributes(attributes) or ()
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        if value not in names:
            known = f" (known: {', '.join(names)})" if names else " (no 'attributes' are named)"
            raise ConfigError(f"--target-index '{value}' is not an attribute of the model{known}")
        return names.index(value)
    index = int(value)
    if index < 0:
        raise ConfigError(f"--target-index must be a non-negative output index, got {index}")
    return index


def _fill_from_timm(raw: dict[str, Any]) -> None:
    """For a timm architecture, take missing input size and normalisation from its config."""
    arch = raw.get("arch")
    if (
        not arch
        or arch.startswith("torchvision:")
        or all(k in raw for k in ("input_size", "mean", "std"))
    ):
        return
    import timm

    try:
        cfg = timm.get_pretrained_cfg(arch)
    except Exception:  # unknown names are reported when the model is built
        return
    if cfg is None:
        return
    raw.setdefault("input_size", list(cfg.input_size[1:]))
    raw.setdefault("mean", list(cfg.mean))
    raw.setdefault("std", list(cfg.std))


def _classes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise ConfigError("'classes' must list at least two class names in output order")
    names = tuple(str(v) for v in value)
    if len(set(names)) != len(names):
        raise ConfigError(f"'classes' has duplicate names: {list(names)}")
    return names


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        value = [int(v) for v in value.replace("x", ",").split(",")]
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(int(v) > 0 for v in value):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"'input_size' must be an int or [height, width], got {value!r}")


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    if isinstance(value, str):
        value = value.split(",")
    try:
        floats = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        floats = ()
    if len(floats) != 3 or (name == "std" and min(floats) <= 0):
        raise ConfigError(f"'{name}' must be three numbers (one per RGB channel), got {value!r}")
    return (floats[0], floats[1], floats[2])


def load_model(
    path: Path, meta: ModelMeta, *, trust_model: bool = False, device: str | None = None
) -> LoadedModel:
    """Load ``path`` into an eval-mode module and check its head against ``meta.classes``.

    Raises:
        ModelLoadError: the file is missing, of an unknown kind, an untrusted pickle, or its
            outputs do not match the class list.
    """
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kind: ModelKind
    if path.suffix == ".safetensors":
        module = _build_from_state_dict(_read_safetensors(path), meta, path)
        kind = "state_dict"
    elif _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise ModelLoadError(f"cannot load TorchScript file {path}: {exc}") from exc
        kind = "torchscript"
    else:
        obj = _read_weights_only(path, trust_model)
        if isinstance(obj, nn.Module):
            module, kind = obj, "pickle"
        else:
            module, kind = (
                _build_from_state_dict(_state_dict_of(obj, path), meta, path),
                "state_dict",
            )
    module = module.to(target).eval()
    width = _output_width(module, meta, target, path)
    head = module
    if meta.target_index is not None:
        if meta.target_index >= width:
            raise ModelLoadError(
                f"--target-index {meta.target_index} is out of range: model {path} has "
                f"{width} outputs"
            )
        if meta.attributes is not None and len(meta.attributes) != width:
            raise ModelLoadError(
                f"model {path} has {width} outputs but {len(meta.attributes)} attributes are named"
            )
        if len(meta.classes) != 2:
            raise ConfigError(
                "a multi-label output is audited as a binary label: give two 'classes' "
                f"(absent, present), got {', '.join(meta.classes)}"
            )
        head, width = SelectOutput(module, meta.target_index), 1
    single_logit = width == 1 and len(meta.classes) == 2
    if width != len(meta.classes) and not single_logit:
        raise ModelLoadError(
            f"model {path} has {width} outputs but {len(meta.classes)} classes are given "
            f"({', '.join(meta.classes)}); fix 'classes' in the model metadata"
        )
    return LoadedModel(module, meta, kind, single_logit, target, head)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder; torch.save files lack it."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"cannot read safetensors file {path}: {exc}") from exc


def _read_weights_only(path: Path, trust_model: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or others
        if "weights_only" not in str(exc) and "Unsupported global" not in str(exc):
            raise ModelLoadError(
                f"cannot read {path} as a PyTorch file ({exc.__class__.__name__}); "
                "expected TorchScript, a state_dict (.pt/.pth) or .safetensors"
            ) from exc
        if not trust_model:
            raise ModelLoadError(
                f"{path} is a pickled object, and loading a pickle runs arbitrary code from it; "
                "pass --trust-model if you trust its source, or save it as TorchScript or a "
                "state_dict and pass --arch"
            ) from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot unpickle {path}: {exc}") from exc
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not an nn.Module")
    return obj


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k).removeprefix("module."): v for k, v in obj.items()}
    raise ModelLoadError(f"{path} holds no state_dict of tensors (found {type(obj).__name__})")


def _build_from_state_dict(
    state: dict[str, torch.Tensor], meta: ModelMeta, path: Path
) -> nn.Module:
    if not meta.arch:
        raise ConfigError(
            f"{path} holds weights only; say which architecture they belong to with --arch "
            "(a timm name, or torchvision:NAME) or 'arch' in the model metadata"
        )
    widths = [len(meta.classes)] + ([1] if len(meta.classes) == 2 else [])
    if meta.target_index is not None:  # a multi-label head: as wide as its attribute list
        widths = [len(meta.attributes)] if meta.attributes else [_head_width(state)]
    first_error: Exception | None = None
    for width in widths:
        module = build_architecture(meta.arch, width)
        try:
            module.load_state_dict(state, strict=True)
            return module
        except RuntimeError as exc:
            first_error = first_error or exc
    raise ModelLoadError(
        f"weights in {path} do not fit architecture '{meta.arch}' with "
        f"{len(meta.classes)} classes: {str(first_error).splitlines()[0]}"
    )


def _head_width(state: dict[str, torch.Tensor]) -> int:
    """Outputs of a head whose attributes are not named: the length of the last bias vector."""
    biases = [t for t in state.values() if t.ndim == 1]
    if not biases:
        raise ConfigError("cannot tell how many outputs the head has: name them with 'attributes'")
    return int(biases[-1].shape[0])


def build_architecture(arch: str, num_classes: int) -> nn.Module:
    """An untrained ``arch`` (timm name, or ``torchvision:NAME``) with ``num_classes`` outputs."""
    if arch.startswith("torchvision:"):
        import torchvision

        name = arch.split(":", 1)[1]
        known = torchvision.models.list_models()
        if name not in known:
            raise ConfigError(_unknown_arch(arch, name, known, "torchvision.models.list_models()"))
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    import timm

    if not timm.is_model(arch):
        raise ConfigError(_unknown_arch(arch, arch, timm.list_models(), "timm.list_models()"))
    return timm.create_model(arch, pretrained=False, num_classes=num_classes)


def _unknown_arch(arch: str, name: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown architecture '{arch}'{hint} (see {where})"


def _output_width(module: nn.Module, meta: ModelMeta, device: torch.device, path: Path) -> int:
    probe = torch.zeros(1, 3, *meta.input_size, device=device)
    try:
        with torch.inference_mode():
            out = module(probe)
    except Exception as exc:
        raise ModelLoadError(
            f"model {path} fails on a 1x3x{meta.input_size[0]}x{meta.input_size[1]} input: {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelLoadError(f"model {path} must return logits [N, classes], got {shape}")
    return int(out.shape[1])
