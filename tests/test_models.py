"""Every accepted model format loads, predicts the same thing, and can be attributed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from auditor.attribute import (
    CAM_METHODS,
    IntegratedGradients,
    default_method,
    find_target_layer,
    make_attributor,
)
from auditor.errors import AttributionError, ModelLoadError
from auditor.models import load_model, read_meta
from auditor.preprocess import to_tensor


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
    torch.jit.save(torch.jit.trace(reference.module, x), scripted_path)
    for other, kind in ((safetensors_path, "state_dict"), (scripted_path, "torchscript")):
        loaded = load_model(other, meta)
        assert loaded.kind == kind
        with torch.no_grad():
            torch.testing.assert_close(loaded.module(x), expected)


def test_torchscript_defaults_to_integrated_gradients(
    tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    path = tiny_model()
    meta = read_meta(path)
    scripted = tmp_path / "scripted.pt"
    x = _inputs(meta, 1)
    torch.jit.save(torch.jit.trace(load_model(path, meta).module, x), scripted)
    model = load_model(scripted, meta)
    assert default_method(model) == "integrated_gradients"
    with pytest.raises(AttributionError, match="TorchScript"):
        make_attributor("gradcam", model, None)
    maps = IntegratedGradients(model)(_inputs(meta, 2), [0, 1])
    assert maps.shape == (2, *meta.input_size) and np.isfinite(maps).all() and (maps >= 0).all()


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_single_logit_head_gets_real_maps_for_both_classes(method: str, tmp_path: Path) -> None:
    """A sigmoid head's logit is for classes[1]; the negative class must not get an empty map."""
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=1).eval()
    path = tmp_path / "binary.pt"
    torch.save(net.state_dict(), path)
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "arch": "test_resnet",
                "classes": ["female", "male"],
                "input_size": 64,
                "mean": [0.5] * 3,
                "std": [0.25] * 3,
            }
        )
    )
    model = load_model(path, read_meta(path))
    assert model.single_logit
    x = _inputs(model.meta, 4)
    with torch.no_grad():
        logits = net(x)
        probs = model.probabilities(model.module(x))
    torch.testing.assert_close(probs[:, 1], torch.sigmoid(logits[:, 0]))
    cam = make_attributor(method, model, None)
    for target in (0, 1):
        maps = cam(x, [target] * 4)
        assert maps.shape == (4, 64, 64) and np.isfinite(maps).all()
        assert (maps.reshape(4, -1).max(axis=1) > 0).all(), f"empty map for class {target}"


def test_wrong_class_count_is_a_clear_error(tiny_model: Callable[..., Path]) -> None:
    path = tiny_model(num_classes=3, classes=("a", "b", "c"))
    meta = read_meta(path)
    broken = meta.__class__(**{**meta.__dict__, "classes": ("a", "b", "c", "d")})
    with pytest.raises(ModelLoadError, match="do not fit architecture"):
        load_model(path, broken)


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("test_resnet", "layer4"),
        ("test_efficientnet", "bn2"),
        ("torchvision:resnet18", "layer4"),
        ("torchvision:vgg11", "features"),
        ("torchvision:mobilenet_v3_small", "features"),
    ],
)
def test_target_layer_is_the_last_spatial_block(arch: str, expected: str) -> None:
    from auditor.models import build_architecture

    module = build_architecture(arch, 2).eval()
    assert find_target_layer(module, (64, 64)) == expected


def test_vision_transformer_without_layer_lists_candidates() -> None:
    from auditor.models import build_architecture

    module = build_architecture("test_vit", 2).eval()
    with pytest.raises(AttributionError, match="--target-layer"):
        find_target_layer(module, (160, 160))


def test_vision_transformer_falls_back_to_integrated_gradients(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "vit.pt"
    torch.save(timm.create_model("test_vit", num_classes=2).state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"arch": "test_vit", "classes": ["a", "b"]}))
    model = load_model(path, read_meta(path))  # input size and normalisation from timm's config
    assert default_method(model) == "integrated_gradients"
    maps = IntegratedGradients(model)(_inputs(model.meta, 2), [0, 1])
    assert maps.shape == (2, *model.meta.input_size) and maps.max() > 0
