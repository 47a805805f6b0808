"""Attribution maps: every method, on CNNs and vision transformers, with softmax, single-logit
and multi-label heads, gives raw, finite, non-negative maps at input resolution.

The models are trained here, in seconds, on 64 px grey images with coloured 16 px squares:
the colour is the class (or, multi-label, each colour present is an attribute), so the
evidence sits inside the squares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

from auditor.attribution import (
    ATTRIBUTORS,
    CAM_METHODS,
    AttributionOptions,
    ChannelsLastToMap,
    TargetLayer,
    TokensToMap,
    default_method,
    find_target_layer,
    make_attributor,
    passes_per_image,
)
from auditor.attribution.cams import UNSUPPORTED_CAMS
from auditor.errors import AttributionError
from auditor.models import LoadedModel, ModelMeta, build_architecture, load_model
from auditor.preprocess import to_tensor
from tests.conftest import save_torchscript

SIZE = 64
SQUARE = 16
# red, green, blue, yellow, magenta: class c (or attribute c) is a square of colour c.
COLOURS = np.array([[230, 30, 30], [30, 200, 30], [30, 30, 230], [230, 230, 30], [230, 30, 230]])
# Few steps and samples: the tests check the maps' contract, not their fidelity.
FAST = AttributionOptions(
    ig_steps=8, samples=24, noise_samples=4, superpixels=16, occlusion_window=0.25
)


@dataclass(frozen=True)
class Subject:
    """A trained model and a few test images with the class each map should explain."""

    model: LoadedModel
    inputs: torch.Tensor
    targets: list[int]
    boxes: list[list[tuple[int, int]]]  # top-left corners of each image's squares


def _draw(rng: np.random.Generator, colours: list[int]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A grey, slightly noisy image with one square per colour index, and the squares' corners."""
    image = rng.normal(128, 12, (SIZE, SIZE, 3))
    corners = []
    for colour in colours:
        top, left = (int(v) for v in rng.integers(0, SIZE - SQUARE, 2))
        image[top : top + SQUARE, left : left + SQUARE] = COLOURS[colour]
        corners.append((top, left))
    return image.clip(0, 255).astype(np.uint8), corners


def _batch(
    rng: np.random.Generator, colour_sets: list[list[int]], meta: ModelMeta
) -> tuple[torch.Tensor, list[list[tuple[int, int]]]]:
    drawn = [_draw(rng, colours) for colours in colour_sets]
    pixels = np.stack([image for image, _ in drawn])
    return to_tensor(pixels, meta, torch.device("cpu")), [corners for _, corners in drawn]


def _meta(
    classes: tuple[str, ...],
    arch: str,
    attributes: tuple[str, ...] | None = None,
    target_index: int | None = None,
) -> ModelMeta:
    grey = (0.5, 0.5, 0.5)
    return ModelMeta(
        classes, (SIZE, SIZE), grey, (0.25, 0.25, 0.25), arch, None, attributes, target_index
    )


def _train(
    meta: ModelMeta,
    outputs: int,
    labels: Callable[[np.random.Generator], list[int]],
    loss: Callable[[torch.Tensor, list[list[int]]], torch.Tensor],
    **arch_options: Any,
) -> nn.Module:
    """``meta.arch`` with ``outputs`` outputs, trained by 30 Adam steps on batches of 32
    images; ``labels`` draws one image's colours. Seeded, so test order does not matter."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = timm.create_model(meta.arch or "", num_classes=outputs, **arch_options)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(30):
        colour_sets = [labels(rng) for _ in range(32)]
        inputs, _ = _batch(rng, colour_sets, meta)
        optimiser.zero_grad()
        loss(net(inputs), colour_sets).backward()
        optimiser.step()
    return net.eval()


def _loaded(tmp_path: Path, net: nn.Module, meta: ModelMeta, pickled: bool = False) -> LoadedModel:
    """The trained network as the audit gets it, through load_model: a state_dict, or a
    trusted pickle where the architecture is not timm's default one (built with options, or
    with more outputs than classes, as a multi-label head has)."""
    path = tmp_path / "model.pt"
    torch.save(net if pickled else net.state_dict(), path)
    return load_model(path, meta, trust_model=pickled, device="cpu")


def _softmax_loss(logits: torch.Tensor, colour_sets: list[list[int]]) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, torch.tensor([c[0] for c in colour_sets]))


def _red_or_blue(rng: np.random.Generator) -> list[int]:
    return [int(rng.choice([0, 2]))]


def _red_vs_blue_loss(logits: torch.Tensor, colour_sets: list[list[int]]) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, torch.tensor([c[0] // 2 for c in colour_sets]))


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    """A batch-norm ResNet (timm test_resnet), three classes: red, green or blue square."""
    meta = _meta(("red", "green", "blue"), "test_resnet")
    net = _train(meta, 3, lambda rng: [int(rng.integers(3))], _softmax_loss)
    inputs, boxes = _batch(np.random.default_rng(1), [[0], [1], [2], [0]], meta)
    return Subject(_loaded(tmp_path_factory.mktemp("cnn"), net, meta), inputs, [0, 1, 2, 0], boxes)


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    """A vision transformer (timm test_vit) that pools its patch tokens: red or blue square."""
    meta = _meta(("red", "blue"), "test_vit")
    net = _train(meta, 2, _red_or_blue, _red_vs_blue_loss, global_pool="avg", class_token=False)
    inputs, boxes = _batch(np.random.default_rng(1), [[0], [2], [0], [2]], meta)
    model = _loaded(tmp_path_factory.mktemp("vit"), net, meta, pickled=True)
    return Subject(model, inputs, [0, 1, 0, 1], boxes)


@pytest.fixture(scope="module")
def vit_cls(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    """timm's test_vit as it comes, with a class token: red or blue square."""
    meta = _meta(("red", "blue"), "test_vit")
    net = _train(meta, 2, _red_or_blue, _red_vs_blue_loss)
    inputs, boxes = _batch(np.random.default_rng(1), [[0], [2], [0], [2]], meta)
    model = _loaded(tmp_path_factory.mktemp("vit_cls"), net, meta)
    return Subject(model, inputs, [0, 1, 0, 1], boxes)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    """A single-logit head (sigmoid): the logit is for 'red', and 'blue' is its negative."""
    meta = _meta(("blue", "red"), "test_resnet")

    def loss(logits: torch.Tensor, colour_sets: list[list[int]]) -> torch.Tensor:
        red = torch.tensor([float(c[0] == 0) for c in colour_sets])
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], red)

    net = _train(meta, 1, _red_or_blue, loss)
    inputs, boxes = _batch(np.random.default_rng(1), [[0], [2], [0], [2]], meta)
    model = _loaded(tmp_path_factory.mktemp("binary"), net, meta)
    assert model.single_logit
    return Subject(model, inputs, [1, 0, 1, 0], boxes)


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    """Five sigmoid outputs, one per colour present; the audit explains output 'red'."""
    attributes = ("red", "green", "blue", "yellow", "magenta")
    meta = _meta(("absent", "present"), "test_resnet", attributes=attributes, target_index=0)

    def loss(logits: torch.Tensor, colour_sets: list[list[int]]) -> torch.Tensor:
        present = torch.zeros_like(logits)
        for row, colours in enumerate(colour_sets):
            present[row, colours] = 1.0
        return nn.functional.binary_cross_entropy_with_logits(logits, present)

    net = _train(meta, 5, lambda rng: [int(c) for c in rng.choice(5, 2, replace=False)], loss)
    inputs, boxes = _batch(np.random.default_rng(1), [[0, 3], [1, 2], [4, 0], [2, 3]], meta)
    model = _loaded(tmp_path_factory.mktemp("multilabel"), net, meta, pickled=True)
    assert model.single_logit and model.head is not model.module
    return Subject(model, inputs, [1, 0, 1, 0], boxes)


SUBJECTS = ("cnn", "vit", "vit_cls", "binary", "multilabel")
# Guided Grad-CAM needs a convolutional layer; see test_guided_gradcam_refuses_a_transformer.
CANNOT_RUN = {("vit", "guided_gradcam"), ("vit_cls", "guided_gradcam")}
# Gradient-weighted CAMs of a class-token ViT see patch tokens only through the last block's
# attention; in a ViT trained for seconds that gradient is tiny and of arbitrary sign, so the
# maps may be all negative (empty). Pretrained ViTs, pytorch-grad-cam's reference case, and
# the token-pooling ViT above get real maps.
MAY_BE_EMPTY = {
    ("vit_cls", method)
    for method in (
        *("gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise"),
        *("layercam", "eigengradcam", "shapleycam", "finercam"),
    )
}


@pytest.mark.parametrize(
    ("subject", "method"),
    [(s, m) for s in SUBJECTS for m in ATTRIBUTORS if (s, m) not in CANNOT_RUN],
)
def test_every_method_maps_every_class(
    subject: str, method: str, request: pytest.FixtureRequest
) -> None:
    """Float32 [N, H, W], finite, non-negative, and a real (non-empty) map for every image,
    so each class, including a single-logit head's negative class, gets evidence."""
    case: Subject = request.getfixturevalue(subject)
    maps = make_attributor(method, case.model, None, FAST)(case.inputs, case.targets)
    assert maps.shape == (len(case.inputs), SIZE, SIZE)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all() and (maps >= 0).all()
    empty = [t for t, m in zip(case.targets, maps, strict=True) if not m.any()]
    assert not empty or (subject, method) in MAY_BE_EMPTY, f"empty map for target(s) {empty}"


def test_the_registry_covers_every_pytorch_grad_cam_method() -> None:
    """A CAM class that pytorch-grad-cam adds must be offered or turned down with a reason."""
    import pytorch_grad_cam

    helpers = {"ActivationsAndGradients", "AblationLayer", "AblationLayerVit"}
    exported = {
        name
        for name, value in vars(pytorch_grad_cam).items()
        if isinstance(value, type) and name not in helpers and "FasterRCNN" not in name
    }
    offered = {*CAM_METHODS.values(), "FullGrad"}  # fullgrad weighs every bias, not one layer
    assert exported - offered - set(UNSUPPORTED_CAMS) == set()
    assert set(CAM_METHODS) | {"fullgrad"} <= set(ATTRIBUTORS)


def test_cam_maps_are_raw_not_rescaled_per_image(cnn: Subject) -> None:
    """pytorch-grad-cam scales every map to [0, 1]; ours keep magnitudes comparable across
    images, and scaled per image they are exactly upstream's maps."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    attributor = make_attributor("gradcam", cnn.model, None, FAST)
    maps = attributor(cnn.inputs, cnn.targets)
    peaks = maps.max(axis=(1, 2))
    assert not np.allclose(peaks, peaks[0]), "maps look min-max scaled per image"

    layer = cnn.model.module.get_submodule(attributor.target_layer or "")
    with GradCAM(cnn.model.module, [layer]) as cam:
        upstream = cam(cnn.inputs, [ClassifierOutputTarget(t) for t in cnn.targets])
    low = maps.min(axis=(1, 2), keepdims=True)
    scaled = (maps - low) / (maps.max(axis=(1, 2), keepdims=True) - low + 1e-7)
    np.testing.assert_allclose(scaled, upstream, atol=1e-4)


LOCALISING = ("integrated_gradients", "input_x_gradient", "guided_gradcam", "occlusion")
SUPERPIXEL = ("feature_ablation", "lime", "kernel_shap")


@pytest.mark.parametrize(
    ("subject", "method"),
    [(s, m) for s in ("cnn", "binary") for m in LOCALISING + SUPERPIXEL]
    + [("vit", "occlusion"), ("vit", "feature_ablation")],
)
def test_maps_find_the_planted_evidence(
    subject: str, method: str, request: pytest.FixtureRequest
) -> None:
    """The square that decides the class holds over three times its share of the map, for
    the negative class of a single-logit head too. (At 64 px the CNN's CAM layer is 2x2, too
    coarse to localise a square: CAMs are checked against upstream instead.)"""
    case: Subject = request.getfixturevalue(subject)
    maps = make_attributor(method, case.model, None, FAST)(case.inputs, case.targets)
    for image_map, [(top, left)] in zip(maps, case.boxes, strict=True):
        inside = image_map[top : top + SQUARE, left : left + SQUARE].sum()
        assert inside / image_map.sum() > 3 * (SQUARE / SIZE) ** 2


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("test_resnet", "layer4"),
        ("test_efficientnet", "bn2"),
        ("test_convnext", "stages"),
        ("torchvision:resnet18", "layer4"),
        ("torchvision:mobilenet_v3_small", "features"),
        ("torchvision:regnet_x_400mf", "trunk_output"),
        ("torchvision:densenet121", "features"),
        ("torchvision:vgg11", "features"),
    ],
)
def test_cnn_target_layer_is_the_last_spatial_block(arch: str, expected: str) -> None:
    layer = find_target_layer(build_architecture(arch, 2).eval(), (SIZE, SIZE))
    assert layer == TargetLayer(expected, layer.channels) and layer.is_spatial


@pytest.mark.parametrize(
    ("arch", "expected", "prefix", "grid"),
    [
        ("test_vit", "blocks.5.norm1", 1, (4, 4)),  # class token
        ("deit_tiny_distilled_patch16_224", "blocks.11.norm1", 2, (14, 14)),  # + distillation
    ],
)
def test_transformer_target_layer_is_the_first_norm_of_the_last_block(
    arch: str, expected: str, prefix: int, grid: tuple[int, int]
) -> None:
    """Not the final norm: with class-token pooling its patch tokens get no gradient."""
    module = build_architecture(arch, 2).eval()
    size = (SIZE, SIZE) if arch.startswith("test_") else (224, 224)
    layer = find_target_layer(module, size)
    assert layer.name == expected and layer.reshape == TokensToMap(prefix, grid)
    tokens = torch.arange(2 * (prefix + grid[0] * grid[1]) * 3.0).view(2, -1, 3)
    maps = layer.reshape(tokens)
    assert maps.shape == (2, 3, *grid)
    torch.testing.assert_close(maps[:, :, 0, 1], tokens[:, prefix + 1, :])


def test_swin_target_layer_is_channels_last() -> None:
    module = build_architecture("swin_tiny_patch4_window7_224", 2).eval()
    layer = find_target_layer(module, (224, 224))
    assert layer.name == "layers.3.blocks.1.norm1" and layer.reshape == ChannelsLastToMap()
    assert layer.reshape(torch.zeros(1, 7, 7, 768)).shape == (1, 768, 7, 7)


def test_a_named_layer_overrides_detection(cnn: Subject, vit: Subject, vit_cls: Subject) -> None:
    """meta.target_layer / --target-layer wins, and its reshape is inferred all the same."""
    assert find_target_layer(cnn.model.module, (SIZE, SIZE), "layer3").name == "layer3"
    earlier = find_target_layer(vit_cls.model.module, (SIZE, SIZE), "blocks.2.norm1")
    assert earlier.reshape == TokensToMap(prefix_tokens=1, grid=(4, 4))
    pooled = find_target_layer(vit.model.module, (SIZE, SIZE), "blocks.2.norm1")
    assert pooled.reshape == TokensToMap(prefix_tokens=0, grid=(4, 4))
    attributor = make_attributor("gradcam", vit.model, "blocks.2.norm1", FAST)
    assert attributor.target_layer == "blocks.2.norm1"
    assert attributor(vit.inputs, vit.targets).shape == (len(vit.inputs), SIZE, SIZE)


def test_an_unknown_layer_is_a_clear_error(cnn: Subject) -> None:
    with pytest.raises(AttributionError, match=r"'layer5' is not a module.*did you mean 'layer4'"):
        make_attributor("gradcam", cnn.model, "layer5")
    with pytest.raises(AttributionError, match=r"'fc' outputs \[1, 3\].*--target-layer"):
        make_attributor("gradcam", cnn.model, "fc")


def test_a_model_without_maps_or_tokens_falls_back_to_pixels() -> None:
    """A plain MLP has no CAM layer: the error says so, and the default is a pixel method."""
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 2)).eval()
    with pytest.raises(AttributionError, match="no module outputs a spatial map"):
        find_target_layer(mlp, (SIZE, SIZE))
    model = LoadedModel(mlp, _meta(("a", "b"), "mlp"), "pickle", False, torch.device("cpu"), mlp)
    assert default_method(model) == "integrated_gradients"
    with pytest.raises(AttributionError, match="integrated_gradients"):
        make_attributor("gradcam", model)


def test_guided_gradcam_refuses_a_transformer(vit: Subject) -> None:
    with pytest.raises(
        AttributionError, match=r"needs a convolutional layer.*use --method gradcam"
    ):
        make_attributor("guided_gradcam", vit.model)


def test_vision_transformers_default_to_gradcam(vit: Subject, cnn: Subject) -> None:
    assert default_method(vit.model) == default_method(cnn.model) == "gradcam"


def test_torchscript_gets_pixel_methods_only(binary: Subject, tmp_path: Path) -> None:
    """TorchScript modules take no hooks: CAMs refuse clearly, pixel methods run."""
    scripted = tmp_path / "scripted.pt"
    save_torchscript(binary.model.module, scripted, binary.inputs[:1])
    model = load_model(scripted, binary.model.meta, device="cpu")
    assert default_method(model) == "integrated_gradients"
    for method in ("gradcam", "fullgrad", "guided_gradcam"):
        with pytest.raises(AttributionError, match="TorchScript"):
            make_attributor(method, model)
    for method in ("integrated_gradients", "occlusion"):
        maps = make_attributor(method, model, None, FAST)(binary.inputs, binary.targets)
        assert maps.shape == (len(binary.inputs), SIZE, SIZE) and (maps > 0).any(axis=(1, 2)).all()


def test_cost_estimates(cnn: Subject) -> None:
    """What the CLI states before a slow run: passes per image."""
    channels = find_target_layer(cnn.model.module, (SIZE, SIZE)).channels
    assert passes_per_image("scorecam", FAST, cnn.model) == channels + 1
    assert passes_per_image("gradcam", FAST, cnn.model) == 1
    assert passes_per_image("integrated_gradients", FAST) == FAST.ig_steps
    assert passes_per_image("lime", FAST) == FAST.samples
    # 16 px windows moving by 8 px: 7 positions per side at 64 px, plus the unoccluded image.
    assert passes_per_image("occlusion", FAST, cnn.model) == 7 * 7 + 1
    with pytest.raises(AttributionError, match="pass the model"):
        passes_per_image("ablationcam", FAST)


def test_unknown_method_and_bad_options_are_clear_errors(cnn: Subject) -> None:
    with pytest.raises(AttributionError, match="did you mean 'gradcam'"):
        make_attributor("gradcm", cnn.model)
    with pytest.raises(AttributionError, match="ig_steps=0"):
        AttributionOptions(ig_steps=0)
    with pytest.raises(AttributionError, match="one target per image"):
        make_attributor("saliency", cnn.model)(cnn.inputs, [0])


def test_random_methods_are_repeatable(cnn: Subject) -> None:
    for method in ("smoothgrad", "lime", "kernel_shap"):
        attributor = make_attributor(method, cnn.model, None, FAST)
        np.testing.assert_array_equal(
            attributor(cnn.inputs, cnn.targets), attributor(cnn.inputs, cnn.targets)
        )


def test_torchvision_vit_layer() -> None:
    """Detection is structural, not a table of timm names: torchvision's ViT works too."""
    module = torchvision.models.vit_b_16(weights=None, image_size=64, num_classes=2).eval()
    layer = find_target_layer(module, (SIZE, SIZE))
    assert layer.name == "encoder.layers.encoder_layer_11.ln_1"
    assert layer.reshape == TokensToMap(1, (4, 4))
