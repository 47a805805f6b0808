"""Benchmark: audit throughput vs the bound of plain batched forward passes.

Usage: python tests/benchmarks/bench_audit.py [--out runs/bench] [--batch-size 32] [--repeat 3]

Each audited image costs one forward pass, one Grad-CAM forward+backward pass and one forward pass
per probed image (7 with the default probes and their placebos), so the ratio printed at the end
is bounded by roughly 1/9 even with zero overhead.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from auditor.config import AuditConfig
from auditor.data import load_dataset
from auditor.demo import build_demo
from auditor.models import load_model, read_meta
from auditor.pipeline import run_audit
from auditor.preprocess import read_image
from auditor.rescore import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
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

    audit = []
    for i in range(args.repeat):
        config = AuditConfig(
            model_path=world.biased_model,
            dataset_dir=world.audit_dir,
            out_dir=args.out / f"run{i}",
            label_column="gender",
            batch_size=args.batch_size,
        )
        start = time.perf_counter()
        run_audit(config)
        audit.append(time.perf_counter() - start)

    forward_rate = n / min(forward)
    audit_rate = n / min(audit)
    print(
        f"device: {model.device}, torch threads: {torch.get_num_threads()}, images: {n}, "
        f"input {meta.input_size[0]}x{meta.input_size[1]}, batch {args.batch_size}, "
        f"best of {args.repeat}"
    )
    print(f"plain forward (bound): {forward_rate:8.1f} images/s")
    print(
        f"full audit:            {audit_rate:8.1f} images/s  "
        "(load, Grad-CAM, 7 probed images, stats, files)"
    )
    print(f"audit / forward ratio: {audit_rate / forward_rate:8.3f}")


if __name__ == "__main__":
    main()
