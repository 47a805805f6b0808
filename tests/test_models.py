"""Every accepted model format loads and predicts the same thing (attribution: test_attribution)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from auditor.errors import ModelLoadError
from auditor.models import load_model, read_meta
from auditor.preprocess import to_tensor
from tests.conftest import audit, load_summary, save_torchscript


def _inputs(meta, n: int = 4) -> torch.Tensor:
    pixels = np.random.default_rng(0).integers(0, 255, (n, *meta.input_size, 3), dtype=np.uint8)
    return to_tensor(pixels, meta, torch.device("cpu"))


def test_state_dict_safetensors_and_torchscript_agree(
    tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    path = tiny_model()
    meta = read_meta(path)
    reference = load_model(path, meta)
    x = _inputs(meta)
    with torch.no_grad():
        expected = reference.module(x)

    safetensors_path = tmp_path / "weights.safetensors"
    save_file(torch.load(path, weights_only=True), safetensors_path)
    scripted_path = tmp_path / "scripted.pt"
    save_torchscript(reference.module, scripted_path, x)
    for other, kind in ((safetensors_path, "state_dict"), (scripted_path, "torchscript")):
        loaded = load_model(other, meta)
        assert loaded.kind == kind
        with torch.no_grad():
            torch.testing.assert_close(loaded.module(x), expected)


def test_wrong_class_count_is_a_clear_error(tiny_model: Callable[..., Path]) -> None:
    path = tiny_model(num_classes=3, classes=("a", "b", "c"))
    meta = read_meta(path)
    broken = meta.__class__(**{**meta.__dict__, "classes": ("a", "b", "c", "d")})
    with pytest.raises(ModelLoadError, match="do not fit architecture"):
        load_model(path, broken)


def test_multi_label_state_dict_is_audited_one_named_output_at_a_time(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    """A CelebA-style head with five sigmoid outputs: --target-index by attribute name picks
    one, which is then audited as a binary label like any single-logit head."""
    model = tiny_model(num_classes=5)
    meta = json.loads(model.with_suffix(".json").read_text())
    meta["attributes"] = ["Smiling", "Male", "Young", "Eyeglasses", "Bald"]
    model.with_suffix(".json").write_text(json.dumps(meta))
    code, output = audit(
        model,
        small_dataset(),
        tmp_path / "run",
        "--target-index",
        "Male",
        "--method",
        "gradcam,saliency",
        "--faithfulness-images",
        "4",
    )
    assert code == 0, output
    summary = load_summary(tmp_path / "run")
    assert summary["model"]["target_index"] == 1 and summary["model"]["single_logit"]
    assert [m["name"] for m in summary["attribution"]["methods"]] == ["gradcam", "saliency"]
    assert "model passes" in output  # the cost is stated before the run


def test_unknown_target_attribute_is_a_clear_error(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_model(num_classes=5)
    meta = json.loads(model.with_suffix(".json").read_text())
    meta["attributes"] = ["Smiling", "Male", "Young", "Eyeglasses", "Bald"]
    model.with_suffix(".json").write_text(json.dumps(meta))
    code, output = audit(model, small_dataset(), tmp_path / "run", "--target-index", "Mal")
    assert code == 2
    assert "'Mal' is not an attribute" in output and "Male" in output
