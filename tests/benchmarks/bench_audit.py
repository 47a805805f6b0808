"""Benchmark: audit throughput vs the bound of plain batched forward passes, and maps/s of
every attribution method on the demo model.

Usage: python tests/benchmarks/bench_audit.py [--out runs/bench] [--batch-size 32] [--repeat 3]

Each audited image costs one forward pass, one Grad-CAM forward+backward pass and one forward pass
per probed image (7 with the default probes and their placebos), so the ratio printed for the
audit without faithfulness curves is bounded by roughly 1/9 even with zero overhead. The
default audit also draws deletion/insertion/ROAD curves for 100 images (about 50 passes each
per method, plus the random baseline).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from auditor.attribution import ATTRIBUTORS, AttributionOptions, make_attributor, passes_per_image
from auditor.config import AuditConfig
from auditor.data import load_dataset
from auditor.demo import build_demo
from auditor.errors import AttributionError
from auditor.executors import Execution
from auditor.models import LoadedModel, load_model, read_meta
from auditor.pipeline import run_audit
from auditor.preprocess import read_image, to_tensor
from auditor.rescore import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args, _ = parser.parse_known_args()  # nox -s bench passes the same posargs to every bench
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    world = build_demo(args.out / "demo", seed=0)
    meta = read_meta(world.biased_model)
    model = load_model(world.biased_model, meta)
    dataset = load_dataset(world.audit_dir, meta.classes, label_column="gender")
    pixels = np.stack([read_image(s.path, meta.input_size).pixels for s in dataset.samples])
    n = len(pixels)

    predict(model, pixels[: args.batch_size], args.batch_size)  # warm-up
    forward = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        predict(model, pixels, args.batch_size)
        forward.append(time.perf_counter() - start)

    def audit_seconds(faithfulness_images: int) -> float:
        runs = []
        for i in range(args.repeat):
            config = AuditConfig(
                model_path=world.biased_model,
                dataset_dir=world.audit_dir,
                out_dir=args.out / f"run{i}",
                label_column="gender",
                batch_size=args.batch_size,
                faithfulness_images=faithfulness_images,
            )
            start = time.perf_counter()
            run_audit(config, execution=Execution(overwrite=True))
            runs.append(time.perf_counter() - start)
        return min(runs)

    forward_rate = n / min(forward)
    bare_rate = n / audit_seconds(0)
    default_rate = n / audit_seconds(AuditConfig.faithfulness_images)
    print(
        f"device: {model.device}, torch threads: {torch.get_num_threads()}, images: {n}, "
        f"input {meta.input_size[0]}x{meta.input_size[1]}, batch {args.batch_size}, "
        f"best of {args.repeat}"
    )
    print(f"plain forward (bound): {forward_rate:8.1f} images/s")
    print(
        f"audit, no curves:      {bare_rate:8.1f} images/s  "
        "(load, Grad-CAM, 7 probed images, localisation, stats, files)"
    )
    print(f"audit / forward ratio: {bare_rate / forward_rate:8.3f}")
    print(
        f"audit, default:        {default_rate:8.1f} images/s  "
        f"(plus faithfulness curves on {AuditConfig.faithfulness_images} images)"
    )
    print("attribution maps/s per method (one forward pass per batch is not included):")
    for name, seconds, count in method_timings(model, pixels, args.batch_size):
        print(f"  {name:22s} {count / seconds:8.1f} maps/s  ({count} maps)")


def method_timings(
    model: LoadedModel, pixels: np.ndarray, batch_size: int
) -> Iterator[tuple[str, float, int]]:
    """(method, seconds, maps) for every method; slow ones on fewer images to bound the run."""
    options = AttributionOptions()
    for name in ATTRIBUTORS:
        try:
            attributor = make_attributor(name, model, model.meta.target_layer, options)
        except AttributionError as exc:
            print(f"  {name:22s} skipped: {exc}")
            continue
        count = batch_size if passes_per_image(name, options, model) <= 64 else 8
        inputs = to_tensor(pixels[:count], model.meta, model.device)
        targets = [1] * count
        attributor(inputs[:2], targets[:2])  # warm-up
        start = time.perf_counter()
        attributor(inputs, targets)
        yield name, time.perf_counter() - start, count


if __name__ == "__main__":
    main()
