"""Any model an auditor is handed: the same trained network as model.py + state_dict, torch.export,
TorchScript, ONNX and a prediction function predicts the same; hooks work wherever the source
has layers; black boxes get black-box methods; every wrong input is one clear line, exit 2."""

from __future__ import annotations

import json
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from auditor import cost
from auditor.attribution import BLACK_BOX_METHODS, AttributionOptions, make_attributor
from auditor.cli import cli
from auditor.config import AuditConfig
from auditor.demo.world import draw_portrait
from auditor.errors import AttributionError
from auditor.models import LoadedModel, open_model
from auditor.preprocess import to_tensor
from auditor.rescore import predict
from probes.spec import make_probes
from tests.conftest import load_summary, save_torchscript

MODEL_PY = Path(__file__).parent / "third_party" / "gender_cnn" / "model.py"
ARCH = f"{MODEL_PY}:GenderCNN"
SIZE = 64
CLASSES = ("female", "male")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
ARCH_KWARGS = {"width": 8}


@dataclass(frozen=True)
class Sources:
    """One trained network saved every way an auditor may be handed it."""

    folder: Path
    data: Path
    pixels: np.ndarray  # uint8 [N, H, W, 3] of the dataset's images
    predict_py: Path

    def path(self, name: str) -> Path:
        return self.folder / name


def _portraits(root: Path, n: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(3)
    (root / "img").mkdir(parents=True)
    rows, pixels, labels = [], [], []
    for i in range(n):
        gender, race = CLASSES[i % 2], "ABC"[i % 3]
        portrait = draw_portrait(rng, gender, race, tie=gender == "male" and i % 4 == 1, size=SIZE)
        file = f"img/{i:03d}.png"
        Image.fromarray(portrait.pixels).save(root / file)
        rows.append({"file": file, "gender": gender, "race": race})
        pixels.append(portrait.pixels)
        labels.append(gender)
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return np.stack(pixels), labels


def _train(pixels: np.ndarray, labels: list[str]) -> torch.nn.Module:
    sys.path.insert(0, str(MODEL_PY.parent))
    from model import GenderCNN  # type: ignore[import-not-found]

    torch.manual_seed(0)
    network = GenderCNN(**ARCH_KWARGS)
    x = to_tensor(pixels, _meta(), torch.device("cpu"))
    y = torch.tensor([CLASSES.index(label) for label in labels])
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    network.train()
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return network.eval()


def _meta() -> object:
    from auditor.models import ModelMeta

    return ModelMeta(CLASSES, (SIZE, SIZE), MEAN, STD)


PREDICT_PY = '''
import numpy as np
import torch

from model import GenderCNN

_network = GenderCNN(width={width})
_network.load_state_dict(torch.load({weights!r}, weights_only=True))
_network.eval()


def predict(images):
    """uint8 [N, H, W, 3] -> probabilities [N, 2], the way a hosted model answers."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    x = (x - 0.5) / 0.25
    with torch.no_grad():
        return torch.softmax(_network(x), dim=1).numpy()


def wrong_shape(images):
    return np.full((len(images), 3), 1 / 3)


def not_a_number(images):
    return np.full((len(images), 2), np.nan)


def logits(images):
    return np.tile([2.0, -1.0], (len(images), 1))
'''


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    folder = tmp_path_factory.mktemp("sources")
    pixels, labels = _portraits(folder / "data", 48)
    network = _train(pixels, labels)
    meta = {"classes": list(CLASSES), "input_size": SIZE, "mean": list(MEAN), "std": list(STD)}

    torch.save(network.state_dict(), folder / "weights.pt")
    sidecar = {**meta, "arch": ARCH, "arch_kwargs": ARCH_KWARGS}
    (folder / "weights.json").write_text(json.dumps(sidecar))
    example = torch.zeros(2, 3, SIZE, SIZE)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, folder / "model.pt2")
    save_torchscript(network, folder / "model.ts")
    with warnings.catch_warnings():  # the TorchScript-based exporter warns of its successor
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(folder / "model.onnx"),
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
            dynamo=False,
        )
    for stem in ("model",):
        (folder / f"{stem}.json").write_text(json.dumps(meta))
    predict_py = folder / "predict.py"
    predict_py.write_text(
        PREDICT_PY.format(width=ARCH_KWARGS["width"], weights=str(folder / "weights.pt"))
    )
    sys.path.insert(0, str(MODEL_PY.parent))  # predict.py imports model.py as its author would
    return Sources(folder, folder / "data", pixels, predict_py)


def _open(sources: Sources, name: str) -> LoadedModel:
    if name == "function":
        return open_model(
            None,
            predict=f"{sources.predict_py}:predict",
            meta_overrides={"classes": ",".join(CLASSES), "input_size": str(SIZE)},
            device="cpu",
        )
    return open_model(sources.path(name), device="cpu")


FILES = {
    "weights.pt": "state_dict",
    "model.pt2": "export",
    "model.ts": "torchscript",
    "model.onnx": "onnx",
    "function": "function",
}


def test_every_source_of_one_network_predicts_the_same(sources: Sources) -> None:
    reference = predict(_open(sources, "weights.pt"), sources.pixels, 16)
    assert 0.1 < (reference.argmax(1) == 1).mean() < 0.9  # a trained model, not a constant
    for name, kind in FILES.items():
        model = _open(sources, name)
        assert model.kind == kind
        np.testing.assert_allclose(predict(model, sources.pixels, 16), reference, atol=1e-5)


def test_gradcam_maps_are_identical_for_the_python_and_export_sources(sources: Sources) -> None:
    maps, layers = {}, set()
    for name in ("weights.pt", "model.pt2"):
        model = _open(sources, name)
        attributor = make_attributor("gradcam", model)
        layers.add(attributor.target_layer)  # the export keeps the module tree and its names
        x = to_tensor(sources.pixels[:8], model.meta, model.device)
        maps[name] = attributor(x, [1] * 8)
    assert layers == {"features"}
    assert (maps["weights.pt"] > 0).any()
    np.testing.assert_allclose(maps["model.pt2"], maps["weights.pt"], rtol=1e-5, atol=1e-7)


def test_torchscript_loads_without_torchs_deprecation_warning(sources: Sources) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _open(sources, "model.ts").kind == "torchscript"


def _weighted_passes(model: LoadedModel, config: AuditConfig, images: int) -> float:
    """Passes of a run as forward-equivalents, a gradient pass counted as GRADIENT_PASS_COST."""
    probes = make_probes(config.probes)
    choice = cost.choose_methods(model, probes, images, config)
    unit = cost.Speeds(forward=cost.GRADIENT_PASS_COST, gradient=1.0)  # seconds = weighted passes
    return cost.estimate_cost(model, choice, probes, images, config, unit).seconds


@pytest.mark.parametrize("faithfulness_images", [0, 50])
def test_torchscript_default_costs_at_most_three_gradcam_audits(
    sources: Sources, faithfulness_images: int
) -> None:
    """Without hooks there is no Grad-CAM; the default IG is sized to the budget, and says so."""
    config = AuditConfig(
        sources.path("model.ts"), sources.data, Path("unused"),
        faithfulness_images=faithfulness_images,
    )  # fmt: skip
    scripted = _open(sources, "model.ts")
    choice = cost.choose_methods(scripted, make_probes(config.probes), 600, config)
    assert choice.methods == ("integrated_gradients",)
    assert choice.note is not None and "no layer hooks" in choice.note
    assert 4 <= choice.options.ig_steps < 32
    gradcam = _weighted_passes(_open(sources, "weights.pt"), config, 600)
    assert _weighted_passes(scripted, config, 600) <= cost.HOOKLESS_BUDGET * gradcam


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _audit(sources: Sources, out: Path, *model: str) -> tuple[int, str]:
    return _run(
        "run", *model, str(sources.data), "--out", str(out), "--label-column", "gender",
        "--min-group-size", "2", "--faithfulness-images", "4",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model", "kind", "method"),
    [
        ("weights.pt", "state_dict", "gradcam"),
        ("model.pt2", "export", "gradcam"),
        ("model.ts", "torchscript", "integrated_gradients"),
        ("model.onnx", "onnx", "rise"),
    ],
)
def test_each_file_source_is_audited_end_to_end(
    sources: Sources, tmp_path: Path, model: str, kind: str, method: str
) -> None:
    code, output = _audit(sources, tmp_path / "run", str(sources.path(model)), "--rise-masks", "32")
    assert code == 0, output
    summary = load_summary(tmp_path / "run")
    assert summary["model"]["kind"] == kind
    assert [m["name"] for m in summary["attribution"]["methods"]] == [method]
    assert summary["dataset"]["images_audited"] == len(sources.pixels)
    if kind == "state_dict":  # the architecture's own source is part of what was audited
        assert summary["model"]["arch_sha256"] is not None
    if method != "gradcam":  # the console and summary.json say why the default is what it is
        assert "Attribution: " in output and method in output
        assert summary["attribution"]["default_note"].startswith(method)


def test_a_prediction_function_is_audited_end_to_end(sources: Sources, tmp_path: Path) -> None:
    code, output = _audit(
        sources, tmp_path / "run", "--predict", f"{sources.predict_py}:predict",
        "--classes", "female,male", "--input-size", str(SIZE), "--rise-masks", "32",
    )  # fmt: skip
    assert code == 0, output
    summary = load_summary(tmp_path / "run")
    assert summary["model"]["kind"] == "function"
    assert summary["model"]["path"] == f"{sources.predict_py}:predict"
    assert summary["model"]["sha256"] is not None  # of predict.py, the file that defines it
    assert summary["attribution"]["methods"][0]["name"] == "rise"


def test_a_package_module_factory_with_arch_kwargs(tmp_path: Path) -> None:
    """``--arch package.module:factory``: here torchvision's own resnet18 builder."""
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "r.pt")
    meta = {
        "arch": "torchvision.models:resnet18",
        "arch_kwargs": {"num_classes": 2},
        "classes": ["a", "b"],
        "input_size": 64,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    (tmp_path / "r.json").write_text(json.dumps(meta))
    model = open_model(tmp_path / "r.pt", device="cpu")
    assert model.takes_hooks and make_attributor("gradcam", model).target_layer == "layer4"


def test_black_boxes_refuse_gradient_methods_naming_the_black_box_ones(sources: Sources) -> None:
    for name in ("model.onnx", "function"):
        model = _open(sources, name)
        for method in ("gradcam", "integrated_gradients", "saliency"):
            with pytest.raises(AttributionError, match="forward passes only") as error:
                make_attributor(method, model)
            assert all(m in str(error.value) for m in BLACK_BOX_METHODS)
        x = to_tensor(sources.pixels[:4], model.meta, model.device)
        options = AttributionOptions(rise_masks=16, samples=8, superpixels=8)
        for method in BLACK_BOX_METHODS:
            maps = make_attributor(method, model, None, options)(x, [0, 1, 0, 1])
            assert maps.shape == (4, SIZE, SIZE) and np.isfinite(maps).all()


def _one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0]


def _weights_with_arch(sources: Sources, tmp_path: Path, arch: str, **extra: object) -> Path:
    weights = tmp_path / "w.pt"
    weights.write_bytes(sources.path("weights.pt").read_bytes())
    meta = {"classes": list(CLASSES), "input_size": SIZE, "mean": list(MEAN), "std": list(STD)}
    (tmp_path / "w.json").write_text(json.dumps({**meta, "arch": arch, **extra}))
    return weights


@pytest.mark.parametrize(
    ("arch", "extra", "message"),
    [
        ("missing/model.py:GenderCNN", {}, r"file missing/model\.py does not exist"),
        (f"{MODEL_PY}:Nope", {}, r"defines no 'Nope' \(it defines: .*GenderCNN"),
        (ARCH, {"arch_kwargs": {"width": 8, "depth": 3}}, r"building the model.*'depth'"),
        (ARCH, {"arch_kwargs": {"width": 16}}, r"shape mismatch.*features\.0\.0\.weight \[8, 3"),
        (f"{MODEL_PY}:build", {}, r"do not fit.*shape mismatch"),
        ("no_such_package.models:Net", {}, r"no module named 'no_such_package\.models'"),
    ],
)
def test_a_wrong_arch_is_one_line_exit_2(
    sources: Sources, tmp_path: Path, arch: str, extra: dict, message: str
) -> None:
    weights = _weights_with_arch(sources, tmp_path, arch, **extra)
    code, output = _audit(sources, tmp_path / "run", str(weights))
    assert code == 2, output
    assert re.search(message, _one_error_line(output)), output


def test_a_state_dict_of_another_network_lists_the_differing_keys(
    sources: Sources, tmp_path: Path
) -> None:
    weights = _weights_with_arch(sources, tmp_path, ARCH, arch_kwargs=ARCH_KWARGS)
    state = torch.load(weights, weights_only=True)
    state["head.weight"] = state.pop("classifier.weight")
    torch.save(state, weights)
    code, output = _audit(sources, tmp_path / "run", str(weights))
    assert code == 2
    line = _one_error_line(output)
    assert "1 missing key(s): classifier.weight" in line
    assert "1 unexpected key(s): head.weight" in line


def test_an_onnx_model_without_the_extra_says_how_to_install_it(
    sources: Sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    code, output = _audit(sources, tmp_path / "run", str(sources.path("model.onnx")))
    assert code == 2
    assert "pip install 'auditor[onnx]'" in _one_error_line(output)


def test_a_program_exported_for_one_batch_size_is_refused(sources: Sources, tmp_path: Path) -> None:
    network = open_model(sources.path("weights.pt"), device="cpu").module
    fixed = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(network, (torch.zeros(1, 3, SIZE, SIZE),)), fixed)
    fixed.with_suffix(".json").write_text(sources.path("model.json").read_text())
    code, output = _audit(sources, tmp_path / "run", str(fixed))
    assert code == 2
    assert "dynamic_shapes" in _one_error_line(output)


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("wrong_shape", r"returned shape \[2, 3\].*probabilities \[2, 2\]"),
        ("not_a_number", r"returned NaN or infinite values"),
        ("logits", r"not probabilities.*apply softmax"),
        ("missing", r"defines no 'missing'"),
    ],
)
def test_a_bad_prediction_function_is_one_line_exit_2(
    sources: Sources, tmp_path: Path, function: str, message: str
) -> None:
    code, output = _audit(
        sources, tmp_path / "run", "--predict", f"{sources.predict_py}:{function}",
        "--classes", "female,male", "--input-size", str(SIZE),
    )  # fmt: skip
    assert code == 2, output
    assert re.search(message, _one_error_line(output)), output


def test_predict_and_a_model_file_together_is_a_usage_error(sources: Sources) -> None:
    code, output = _run(
        "run", str(sources.path("weights.pt")), str(sources.data),
        "--predict", f"{sources.predict_py}:predict",
    )  # fmt: skip
    assert code == 2 and "expected 1 path(s), got 2" in output
