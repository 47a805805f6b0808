"""Benchmark: one third-party-shaped custom CNN audited four ways, at 224 px on the same images.

Usage: python tests/benchmarks/bench_sources.py [--out runs/bench-sources] [--images 200]

The network is tests/third_party/gender_cnn/model.py (three conv blocks, ~112k parameters),
briefly trained on demo portraits drawn at 224 px. It is audited as ``--arch model.py:GenderCNN``
+ state_dict with Grad-CAM, as a torch.export ``.pt2`` with Grad-CAM, as TorchScript with its
default (Integrated Gradients sized to the cost budget), and as ONNX with RISE. Each row gives
images/s, the plan's estimate beside the elapsed time, and the plain forward bound of each
runtime. Faithfulness curves are off, so the rows compare the sources, not the curves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from auditor.config import AuditConfig
from auditor.cost import CostEstimate
from auditor.demo.world import draw_portrait
from auditor.executors import Execution
from auditor.models import open_model
from auditor.pipeline import run_audit
from auditor.preprocess import to_tensor
from auditor.rescore import predict

MODEL_PY = Path(__file__).resolve().parents[1] / "third_party" / "gender_cnn" / "model.py"
SIZE = 224
CLASSES = ("female", "male")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-sources"))
    parser.add_argument("--images", type=int, default=200)
    args, _ = parser.parse_known_args()  # nox -s bench passes the same posargs to every bench
    data, pixels, labels = _portraits(args.out / "data", args.images)
    folder = _save_every_way(_train(pixels, labels), args.out / "models")
    print(
        f"custom CNN {MODEL_PY.name}:GenderCNN, {args.images} images at {SIZE}x{SIZE}, "
        f"torch threads: {torch.get_num_threads()}, faithfulness curves off"
    )
    print(f"{'source':34s} {'method':22s} {'images/s':>9s} {'forward':>9s} {'est. s':>8s} "
          f"{'elapsed s':>9s} {'ratio':>6s}")  # fmt: skip
    for label, model_file in (
        ("--arch model.py:GenderCNN + weights", "weights.pt"),
        ("torch.export .pt2", "model.pt2"),
        ("TorchScript", "model.ts"),
        ("ONNX (onnxruntime)", "model.onnx"),
    ):
        _row(label, folder / model_file, data, pixels, args.out / model_file.replace(".", "-"))


def _row(label: str, model_file: Path, data: Path, pixels: np.ndarray, out: Path) -> None:
    model = open_model(model_file, device="cpu")
    predict(model, pixels[:32], 32)  # warm-up
    started = time.perf_counter()
    predict(model, pixels, 32)
    forward = len(pixels) / (time.perf_counter() - started)
    estimates: list[CostEstimate] = []
    config = AuditConfig(
        model_file, data, out, label_column="gender", faithfulness_images=0, seed=0
    )
    started = time.perf_counter()
    run_audit(config, plan=estimates.append, execution=Execution(overwrite=True))
    elapsed = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    method = summary["attribution"]["methods"][0]["name"]
    if method == "integrated_gradients":
        method += f" ({summary['attribution']['options']['ig_steps']} steps)"
    estimate = estimates[0].seconds
    print(
        f"{label:34s} {method:22s} {len(pixels) / elapsed:9.1f} {forward:9.1f} {estimate:8.0f} "
        f"{elapsed:9.0f} {elapsed / estimate:6.2f}"
    )


def _portraits(root: Path, n: int) -> tuple[Path, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows, pixels, labels = [], [], []
    for i in range(n):
        gender, race = CLASSES[i % 2], "ABC"[i % 3]
        portrait = draw_portrait(rng, gender, race, tie=gender == "male" and i % 3 == 0, size=SIZE)
        file = f"img/{i:04d}.png"
        Image.fromarray(portrait.pixels).save(root / file)
        rows.append({"file": file, "gender": gender, "race": race})
        pixels.append(portrait.pixels)
        labels.append(gender)
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root, np.stack(pixels), labels


def _train(pixels: np.ndarray, labels: list[str]) -> torch.nn.Module:
    """Two epochs of Adam: weights with some structure, so regions are not flat."""
    sys.path.insert(0, str(MODEL_PY.parent))
    from model import GenderCNN  # type: ignore[import-not-found]

    from auditor.models import ModelMeta

    torch.manual_seed(0)
    network = GenderCNN()
    x = to_tensor(pixels, ModelMeta(CLASSES, (SIZE, SIZE), MEAN, STD), torch.device("cpu"))
    y = torch.tensor([CLASSES.index(label) for label in labels])
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    network.train()
    for _ in range(2):
        for batch in torch.randperm(len(x)).split(32):
            loss = torch.nn.functional.cross_entropy(network(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return network.eval()


def _save_every_way(network: torch.nn.Module, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"classes": list(CLASSES), "input_size": SIZE, "mean": list(MEAN), "std": list(STD)}
    torch.save(network.state_dict(), folder / "weights.pt")
    (folder / "weights.json").write_text(json.dumps({**meta, "arch": f"{MODEL_PY}:GenderCNN"}))
    example = torch.zeros(2, 3, SIZE, SIZE)
    dynamic = ({0: torch.export.Dim("batch", min=1)},)
    torch.export.save(torch.export.export(network, (example,), dynamic_shapes=dynamic),
                      folder / "model.pt2")  # fmt: skip
    with warnings.catch_warnings():  # torch.jit and the TorchScript-based ONNX exporter warn
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(network), str(folder / "model.ts"))
        torch.onnx.export(network, (example,), str(folder / "model.onnx"), input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}}, dynamo=False)  # fmt: skip
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


if __name__ == "__main__":
    main()
