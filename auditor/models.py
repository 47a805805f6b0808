"""Load a model someone else trained, with the metadata needed to feed it exactly as they did.

The sources, by what the audit can do with them:

- a Python architecture and its weights: a state_dict (``.pt``/``.pth`` read with
  ``weights_only=True``) or ``.safetensors`` plus ``--arch``: a timm name, ``torchvision:NAME``,
  or the user's own ``path/to/model.py:Class`` / ``package.module:factory``; only when the user
  says they trust the file, a fully pickled ``nn.Module``. Every method works on these.
- a ``torch.export`` program (``.pt2``), unflattened so that its submodules take hooks: every
  method works on it too.
- a TorchScript archive: gradients, but no layer hooks (so no CAMs).
- black boxes: an ONNX file, or a prediction function (``--predict``); forward passes only.
"""

from __future__ import annotations

import difflib
import json
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from auditor import user_code
from auditor.blackbox import FunctionModule, OnnxModule
from auditor.errors import ConfigError, ModelLoadError, ModelOutputError

ModelKind = Literal["state_dict", "pickle", "export", "torchscript", "onnx", "function"]
# Sources whose layers take forward hooks (CAMs); and those that give no gradients at all.
HOOKED_KINDS: frozenset[str] = frozenset({"state_dict", "pickle", "export"})
BLACK_BOX_KINDS: frozenset[str] = frozenset({"onnx", "function"})
# A prediction function sees uint8 pixels; mean/std only set what "removed" means to the
# perturbation methods (the zero input), so a mid grey unless the metadata says otherwise.
_FUNCTION_NORMALISATION = (0.5, 0.5, 0.5)

# Nested keys under which training scripts commonly store the weights of a checkpoint.
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module")


@dataclass(frozen=True)
class ModelMeta:
    """What the model expects: class names in output order and its preprocessing.

    ``input_size`` is (height, width). A single-logit head's logit is for ``classes[1]``.
    ``arch_kwargs`` are the keyword arguments of a user architecture (``--arch file.py:Class``).
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
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

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

    @property
    def takes_hooks(self) -> bool:
        """Its layers take forward hooks, so CAMs and layer detection work."""
        return self.kind in HOOKED_KINDS

    @property
    def black_box(self) -> bool:
        """It answers forward passes only: no gradients, no layers."""
        return self.kind in BLACK_BOX_KINDS

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
    model_path: Path | None,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ModelMeta:
    """Merge the sidecar JSON (or ``config_path``) with command-line overrides.

    ``model_path`` is None for a prediction function: then only ``config_path`` and the
    overrides speak, and mean/std default to a mid grey (the function sees uint8 pixels).
    Each key is checked by its own validator; a bad value's message names where it came from
    (the flag, or the key in the file), the value, and what is expected.

    Raises:
        ModelLoadError: the model file does not exist.
        ConfigError: a required key is missing or malformed, or the metadata file is not a
            JSON object.
    """
    if model_path is not None and not model_path.is_file():
        what = "is not a file" if model_path.exists() else "does not exist"
        raise ModelLoadError(f"model file {model_path} {what}")
    if config_path is not None and not config_path.is_file():
        what = "is not a file" if config_path.exists() else "does not exist"
        raise ConfigError(f"model config {config_path} {what}: pass --model-config a JSON file")
    source = config_path or (sidecar_path(model_path) if model_path else None)
    raw = _read_config(source) if source is not None else {}
    flagged = {k for k, v in (overrides or {}).items() if v is not None}
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})

    def where(key: str) -> str:
        if key in flagged:
            return "--" + key.replace("_", "-")
        return f"'{key}' in {source}" if source is not None else f"'{key}'"

    arch = _arch(raw.get("arch"), where("arch"))
    if model_path is None:
        raw.setdefault("mean", list(_FUNCTION_NORMALISATION))
        raw.setdefault("std", list(_FUNCTION_NORMALISATION))
    _fill_from_timm(raw)
    missing = [k for k in ("classes", "input_size", "mean", "std") if k not in raw]
    if missing:
        place = source or (
            f"{model_path.with_suffix('.json')} (or model.json beside it)"
            if model_path
            else "a JSON file passed with --model-config"
        )
        raise ConfigError(
            f"model metadata lacks {', '.join(missing)}: add them to {place} "
            "or pass --classes/--input-size/--mean/--std"
        )
    attributes = _attributes(raw.get("attributes"), where("attributes"))
    return ModelMeta(
        classes=_classes(raw["classes"], where("classes")),
        input_size=_size(raw["input_size"], where("input_size")),
        mean=_triple("mean", raw["mean"], where("mean")),
        std=_triple("std", raw["std"], where("std")),
        arch=arch,
        target_layer=_target_layer(raw.get("target_layer"), where("target_layer")),
        attributes=attributes,
        target_index=_target_index(raw.get("target_index"), attributes, where("target_index")),
        arch_kwargs=_arch_kwargs(raw.get("arch_kwargs"), where("arch_kwargs")),
    )


_EXAMPLE_CONFIG = '{"classes": ["female", "male"], "input_size": [224, 224], ...}'


def _read_config(source: Path) -> dict[str, Any]:
    """The metadata file as a JSON object."""
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or not UTF-8
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ConfigError(
            f"cannot read model config {source} as UTF-8 JSON ({reason}); it must hold a "
            f"JSON object such as {_EXAMPLE_CONFIG}"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"model config {source} must hold a JSON object such as {_EXAMPLE_CONFIG}, "
            f"not {_json_type(raw)}"
        )
    return raw


def _json_type(value: Any) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    return "null" if value is None else names.get(type(value), "a number")


_SHOWN_CHARS = 80


def _shown(value: Any) -> str:
    """A value as the user wrote it (JSON), on one line and cut short if long."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = json.dumps(text, ensure_ascii=False) if isinstance(value, str) else text
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _arch(value: Any, where: str) -> str | None:
    return _optional_name(
        value,
        f"{where} must name the architecture: a timm name, torchvision:NAME, or your own "
        "path/to/model.py:Class, got {shown}",
    )


def _target_layer(value: Any, where: str) -> str | None:
    return _optional_name(
        value,
        f"{where} must be the dotted name of a module of the model (e.g. layer4), "
        "got {shown}; leave it out to detect the layer",
    )


def _optional_name(value: Any, message: str) -> str | None:
    """``value`` when it is a non-blank string, None when absent; else ``message`` (with the
    value shown in place of ``{shown}``) as a ConfigError."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(message.replace("{shown}", _shown(value)))
    return value


def _arch_kwargs(value: Any, where: str = "'arch_kwargs'") -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(
            f"{where} must be a JSON object of keyword arguments for the architecture, "
            f"got {_shown(value)}"
        )
    return dict(value)


def _names(value: Any, where: str, what: str, minimum: int) -> tuple[str, ...]:
    """Distinct names, neither blank nor holding control characters: a list of strings, or
    comma-separated text (a flag)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, list | tuple) or len(value) < minimum:
        raise ConfigError(
            f"{where} must list {what} (a JSON list of strings, or comma-separated on the "
            f"command line), got {_shown(value)}"
        )
    for position, name in enumerate(value):
        if not isinstance(name, str):
            problem = 'not a string: quote it, e.g. "0"'
        elif not name.strip():
            problem = "blank"
        elif any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
            problem = "it holds a control character"
        else:
            continue
        raise ConfigError(
            f"{where} must hold names as non-blank strings, got {_shown(name)} at position "
            f"{position} ({problem}) in {_shown(value)}"
        )
    names = tuple(value)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(
            f"{where} names {', '.join(map(_shown, repeated))} more than once: each output "
            f"needs its own name, got {_shown(value)}"
        )
    return names


def _classes(value: Any, where: str = "'classes'") -> tuple[str, ...]:
    return _names(value, where, "at least two class names in output order", minimum=2)


def _attributes(value: Any, where: str = "'attributes'") -> tuple[str, ...] | None:
    if value is None:
        return None
    return _names(value, where, "the names of a multi-label head's outputs", minimum=1)


def _target_index(
    value: Any, attributes: tuple[str, ...] | None, where: str = "--target-index"
) -> int | None:
    """An output index, given as a number or as one of ``attributes``."""
    if value is None:
        return None
    names = attributes or ()
    if isinstance(value, str) and not re.fullmatch(r"\s*-?[0-9]+\s*", value):
        if value not in names:
            known = f" (known: {', '.join(names)})" if names else " (no 'attributes' are named)"
            raise ConfigError(f"{where} '{value}' is not an attribute of the model{known}")
        return names.index(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(
            f"{where} must be an output index (a whole number from 0) or an attribute name, "
            f"got {_shown(value)}"
        )
    index = int(value)
    if index < 0:
        raise ConfigError(f"{where} must be a non-negative output index, got {index}")
    return index


def _fill_from_timm(raw: dict[str, Any]) -> None:
    """For a timm architecture, take missing input size and normalisation from its config."""
    arch = raw.get("arch")
    if (
        not isinstance(arch, str)
        or ":" in arch  # torchvision:NAME, or the user's own code
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


# Larger inputs are no image classifier's: the load probe alone would take gigabytes.
MAX_INPUT_SIDE = 8192


def _size(value: Any, where: str = "'input_size'") -> tuple[int, int]:
    """``N``, ``"N"``, ``"H,W"``, ``"HxW"`` or ``[H, W]`` (a timm-style ``[3, H, W]`` too):
    whole numbers of pixels from 1 to MAX_INPUT_SIDE."""
    sides = _whole_numbers(value)
    if sides is not None and len(sides) == 3 and sides[0] == 3:
        sides = sides[1:]
    if sides is not None and len(sides) == 1:
        sides *= 2
    if sides is not None and len(sides) == 2 and all(1 <= s <= MAX_INPUT_SIDE for s in sides):
        return (sides[0], sides[1])
    raise ConfigError(
        f"{where} must be N or [height, width]: whole numbers of pixels from 1 to "
        f"{MAX_INPUT_SIDE} (e.g. 224, or 224,224 on the command line), got {_shown(value)}"
    )


def _whole_numbers(value: Any) -> list[int] | None:
    """The integers of ``"96"``, ``"96,96"``, ``"96x96"``, ``96`` or ``[96, 96]``, else None."""
    if isinstance(value, str):
        texts = [t.strip() for t in value.lower().replace("x", ",").split(",")]
        if all(re.fullmatch(r"[0-9]{1,9}", t) for t in texts):
            return [int(t) for t in texts]
        return None
    items = value if isinstance(value, list | tuple) else [value]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return list(items)
    return None


def _triple(name: str, value: Any, where: str | None = None) -> tuple[float, float, float]:
    """Three finite numbers, one per RGB channel (for ``std``: positive ones), that float32
    (the model's input) can hold: a list of numbers, or comma-separated text (a flag)."""
    floats: list[float] = []
    if isinstance(value, str):
        try:
            floats = [float(v) for v in value.split(",")]
        except ValueError:
            floats = []
    elif isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        floats = [float(v) for v in value]
    limits = torch.finfo(torch.float32)
    smallest = limits.tiny if name == "std" else -limits.max
    if len(floats) != 3 or not all(smallest <= v <= limits.max for v in floats):
        kind = "positive finite numbers" if name == "std" else "finite numbers"
        example = "0.229,0.224,0.225" if name == "std" else "0.485,0.456,0.406"
        raise ConfigError(
            f"{where or repr(name)} must be three {kind}, one per RGB channel (e.g. [{example}] "
            f"or {example} on the command line), got {_shown(value)}"
        )
    return (floats[0], floats[1], floats[2])


def open_model(
    model_path: Path | None,
    *,
    predict: str | None = None,
    model_config: Path | None = None,
    meta_overrides: Mapping[str, Any] | None = None,
    trust_model: bool = False,
    device: str | None = None,
) -> LoadedModel:
    """The audited model with its metadata: a model file, or the prediction function
    ``predict`` names (``package.module:function`` or ``path/to/file.py:function``).

    Raises:
        AuditorError: (and subclasses) for a missing, unreadable or mismatched model.
    """
    if (model_path is None) == (predict is None):
        raise ConfigError("give a model file, or --predict MODULE:FUNCTION, but not both")
    meta = read_meta(model_path, model_config, meta_overrides)
    if predict is not None:
        return load_function(predict, meta, device=device)
    assert model_path is not None
    return load_model(model_path, meta, trust_model=trust_model, device=device)


def load_function(reference: str, meta: ModelMeta, *, device: str | None = None) -> LoadedModel:
    """A prediction function ``uint8 [N, H, W, 3] → probabilities [N, classes]`` as a model.

    Raises:
        ConfigError: the function cannot be found.
        ModelOutputError: it fails on, or returns no probabilities for, a blank batch.
    """
    function = user_code.resolve(reference, "--predict")
    module = FunctionModule(function, reference, len(meta.classes), meta.mean, meta.std)
    return _finish(module, meta, "function", _device(device), reference)


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
    kind: ModelKind
    module: nn.Module
    if path.suffix == ".safetensors":
        module = _build_from_state_dict(_read_safetensors(path), meta, path)
        kind = "state_dict"
    elif path.suffix == ".onnx":
        module, kind = OnnxModule(path), "onnx"
    elif path.suffix == ".pt2":
        module, kind = _read_export(path), "export"
    elif _is_torchscript(path):
        module, kind = _read_torchscript(path), "torchscript"
    else:
        obj = _read_weights_only(path, trust_model)
        if isinstance(obj, nn.Module):
            module, kind = obj, "pickle"
        else:
            module, kind = (
                _build_from_state_dict(_state_dict_of(obj, path), meta, path),
                "state_dict",
            )
    return _finish(module, meta, kind, _device(device), str(path))


def available_devices() -> list[str]:
    """The torch devices this machine can run a model on."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def _device(device: str | None) -> torch.device:
    """``--device``, or cuda when there is one, else cpu: a device a model can run on here.

    Raises:
        ConfigError: ``device`` is no torch device, or not one this machine has.
    """
    name = (device or "").strip() or ("cuda" if torch.cuda.is_available() else "cpu")
    available = f"available: {', '.join(available_devices())}"
    try:
        target = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"--device '{name}' is not a torch device ({available}); pass one of those, or "
            "leave --device out to use cuda if present, else cpu"
        ) from exc
    if target.type != "cpu" and (target.type == "meta" or not _allocates(target)):
        raise ConfigError(
            f"--device '{name}' is not available here ({available}); pass one of those, or "
            "leave --device out to use cuda if present, else cpu"
        )
    return target


def _allocates(target: torch.device) -> bool:
    """A tensor can be made on ``target``: its backend is built, present and has that index."""
    try:
        torch.empty(1, device=target)
    except Exception:  # torch raises RuntimeError, AssertionError (not compiled) and others
        return False
    return True


def _finish(
    module: nn.Module, meta: ModelMeta, kind: ModelKind, target: torch.device, name: str
) -> LoadedModel:
    """Move to the device, check the head's width against the classes, pick the audited head."""
    module = module.to(target).eval()
    width = _output_width(module, meta, target, name)
    head = module
    if meta.target_index is not None:
        if meta.target_index >= width:
            raise ModelLoadError(
                f"--target-index {meta.target_index} is out of range: model {name} has "
                f"{width} outputs"
            )
        if meta.attributes is not None and len(meta.attributes) != width:
            raise ModelLoadError(
                f"model {name} has {width} outputs but {len(meta.attributes)} attributes are named"
            )
        if len(meta.classes) != 2:
            raise ConfigError(
                "a multi-label output is audited as a binary label: give two 'classes' "
                f"(absent, present), got {', '.join(meta.classes)}"
            )
        head, width = SelectOutput(module, meta.target_index), 1
    single_logit = width == 1 and len(meta.classes) == 2 and kind != "function"
    if width != len(meta.classes) and not single_logit:
        raise ModelLoadError(
            f"model {name} has {width} outputs but {len(meta.classes)} classes are given "
            f"({', '.join(meta.classes)}); fix 'classes' in the model metadata"
        )
    return LoadedModel(module, meta, kind, single_logit, target, head)


def _read_torchscript(path: Path) -> nn.Module:
    with warnings.catch_warnings():
        # torch deprecates TorchScript; the auditor of someone else's file cannot act on that.
        warnings.filterwarnings("ignore", r"`torch\.jit\..*` is deprecated", FutureWarning)
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise ModelLoadError(f"cannot load TorchScript file {path}: {exc}") from exc


def _read_export(path: Path) -> nn.Module:
    """A ``torch.export`` program, unflattened: the original module tree, so hooks fire."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch raises several types for a bad archive
        raise ModelLoadError(
            f"cannot load {path} as a torch.export program (torch.export.save): {exc}"
        ) from exc
    _check_batch_dimension(program, path)
    return torch.export.unflatten(program)


def _check_batch_dimension(program: torch.export.ExportedProgram, path: Path) -> None:
    """The audit feeds batches of any size; a program exported for one size cannot take them."""
    user_inputs = program.graph_signature.user_inputs
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    for name in user_inputs:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        if isinstance(value, torch.Tensor) and value.ndim == 4 and isinstance(value.shape[0], int):
            raise ModelLoadError(
                f"{path} was exported for batches of exactly {value.shape[0]} image(s); export "
                "it with a dynamic batch dimension: torch.export.export(model, (x,), "
                "dynamic_shapes=({0: torch.export.Dim('batch')},))"
            )


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
            "(a timm name, torchvision:NAME, or your own path/to/model.py:Class) or 'arch' in "
            "the model metadata"
        )
    if user_code.is_reference(meta.arch):
        module = build_user_architecture(meta.arch, meta.arch_kwargs)
        _load_weights(module, state, path, meta.arch)
        return module
    widths = [len(meta.classes)] + ([1] if len(meta.classes) == 2 else [])
    if meta.target_index is not None:  # a multi-label head: as wide as its attribute list
        widths = [len(meta.attributes)] if meta.attributes else [_head_width(state)]
    first_error: ModelLoadError | None = None
    for width in widths:
        module = build_architecture(meta.arch, width)
        try:
            _load_weights(module, state, path, f"{meta.arch} with {width} output(s)")
            return module
        except ModelLoadError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def build_user_architecture(reference: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """The user's ``file.py:Class`` or ``package.module:factory``, called with ``arch_kwargs``.

    Raises:
        ConfigError: it cannot be found, its constructor fails, or it builds no ``nn.Module``.
    """
    factory = user_code.resolve(reference, "--arch")
    try:
        module = factory(**kwargs)
    except Exception as exc:
        given = f" with arch_kwargs {dict(kwargs)}" if kwargs else ""
        raise ConfigError(
            f"--arch {reference}: building the model{given} failed: "
            f"{type(exc).__name__}: {exc}; set its arguments with 'arch_kwargs' in the model "
            "metadata"
        ) from exc
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"--arch {reference} returned a {type(module).__name__}, not a torch nn.Module"
        )
    return module


_KEYS_SHOWN = 3


def _load_weights(module: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """Load ``state`` strictly, or say which keys differ: the first few of each kind."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} {', '.join(keys[:_KEYS_SHOWN])}" + (" ..." if len(keys) > _KEYS_SHOWN else "")
        for label, keys in (
            (f"{len(missing)} missing key(s):", missing),
            (f"{len(unexpected)} unexpected key(s):", unexpected),
            (f"{len(shapes)} shape mismatch(es) (file vs architecture):", shapes),
        )
        if keys
    ]
    if problems:
        raise ModelLoadError(
            f"weights in {path} do not fit architecture '{arch}': {'; '.join(problems)}"
        )
    module.load_state_dict(state, strict=True)


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


def _output_width(module: nn.Module, meta: ModelMeta, device: torch.device, name: str) -> int:
    probe = torch.zeros(2, 3, *meta.input_size, device=device)  # two: batches must work
    try:
        with torch.inference_mode():
            out = module(probe)
    except ModelOutputError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"model {name} fails on a 2x3x{meta.input_size[0]}x{meta.input_size[1]} input: {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelLoadError(f"model {name} must return logits [N, classes], got {shape}")
    return int(out.shape[1])
