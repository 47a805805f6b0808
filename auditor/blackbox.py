"""Models the audit can only query: ONNX files and prediction functions, as ``nn.Module``s.

Wrapping them as modules keeps one pipeline: prediction, probes, placebos, faithfulness and the
black-box attribution methods (occlusion, feature ablation, LIME, KernelSHAP, RISE) call a
module's forward pass and nothing else. What they cannot give is gradients or layer hooks;
``LoadedModel.black_box`` tells the attribution registry so.

- ``OnnxModule`` runs an ONNX file in onnxruntime. It takes the same normalized input the
  PyTorch network it was exported from took, and returns that network's logits.
- ``FunctionModule`` calls a function ``uint8 [N, H, W, 3] → probabilities [N, C]`` (TensorFlow,
  JAX, a client of an HTTP endpoint...). It un-normalizes the input back to the uint8 images the
  audit read (exactly: the round trip is a rounding of a 1e-6 error) and returns
  log-probabilities, so the audit's softmax gives the function's probabilities back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from auditor.errors import ModelLoadError, ModelOutputError

PredictFn = Callable[[np.ndarray], Any]

# Probabilities may come from float32 arithmetic; rows must sum to 1 within this.
_SUM_TOLERANCE = 1e-3


class OnnxModule(nn.Module):
    """An ONNX model: normalized float32 ``[N, 3, H, W]`` in, its first output out.

    A model exported with a fixed batch size is run that many images at a time.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError as exc:
            raise ModelLoadError(
                f"{path} is an ONNX model, and running it needs onnxruntime: "
                "pip install 'auditor[onnx]'"
            ) from exc
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are about its own graph passes
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), options, providers=_providers(onnxruntime)
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"cannot load ONNX model {path}: {_first_line(exc)}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelLoadError(f"ONNX model {path} takes {len(inputs)} inputs ({names}), not one")
        self._input = inputs[0].name
        batch = inputs[0].shape[0] if inputs[0].shape else None
        self._fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self._path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).numpy()
        step = self._fixed_batch or len(array) or 1
        try:
            outputs = [
                self._session.run(None, {self._input: array[start : start + step]})[0]
                for start in range(0, len(array), step)
            ]
        except Exception as exc:
            raise ModelOutputError(
                f"ONNX model {self._path} fails on input {list(array.shape)}: {_first_line(exc)}"
            ) from exc
        return torch.from_numpy(np.concatenate(outputs).astype(np.float32)).to(x.device)


def _providers(onnxruntime: Any) -> list[str]:
    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class FunctionModule(nn.Module):
    """A prediction function as a module returning log-probabilities ``[N, classes]``."""

    def __init__(
        self,
        function: PredictFn,
        name: str,
        classes: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self._function = function
        self._name = name
        self._classes = classes
        self._mean = mean
        self._std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self._mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self._std, device=x.device).view(1, 3, 1, 1)
        pixels = (x.detach() * std + mean).mul_(255.0).round_().clamp_(0, 255)
        images = pixels.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        try:
            returned = self._function(images)
        except Exception as exc:
            raise ModelOutputError(
                f"prediction function {self._name} fails on a batch {list(images.shape)}: "
                f"{_first_line(exc)}"
            ) from exc
        probabilities = self._check(returned, len(images))
        return torch.from_numpy(np.log(np.maximum(probabilities, 1e-300))).float().to(x.device)

    def _check(self, returned: Any, count: int) -> np.ndarray:
        """The function's output as float64 ``[N, C]`` probabilities, or a clear error."""
        try:
            array = np.asarray(returned, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ModelOutputError(
                f"prediction function {self._name} returned a {type(returned).__name__}, not an "
                f"array of probabilities [N, {self._classes}]"
            ) from exc
        expected = (count, self._classes)
        if array.shape != expected:
            raise ModelOutputError(
                f"prediction function {self._name} returned shape {list(array.shape)} for "
                f"{count} image(s); it must return probabilities {list(expected)}, one column "
                "per class in the order of 'classes'"
            )
        if not np.isfinite(array).all():
            raise ModelOutputError(
                f"prediction function {self._name} returned NaN or infinite values; it must "
                "return probabilities"
            )
        sums = array.sum(axis=1)
        if array.min() < 0 or array.max() > 1 or np.abs(sums - 1).max() > _SUM_TOLERANCE:
            raise ModelOutputError(
                f"prediction function {self._name} returned values that are not probabilities "
                f"(range {array.min():.3g} to {array.max():.3g}, row sums up to "
                f"{sums.max():.3g}); apply softmax (or sigmoid, for [N, 2] p and 1 - p) first"
            )
        return array


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
