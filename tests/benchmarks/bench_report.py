"""Benchmark: size and render time of the HTML report for 10,000 audited images.

Usage: python tests/benchmarks/bench_report.py [--out runs/bench] [--images 10000]

Audits the demo's biased model on a fresh demo split of ``--images`` portraits (Grad-CAM, the
default probes, no faithfulness curves), with an extra nine-valued group column beside gender
and race labels, so that 2 × 3 × 9 = 54 subgroups × 4 probe arms fill the gallery past the
report's cap; then renders the report once per ``--report-images`` mode and prints its size and
the time to render it. The audit itself is timed too, but bench_audit.py is the throughput
benchmark.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from auditor.config import AuditConfig
from auditor.demo import build_demo
from auditor.demo.world import Split, generate_split
from auditor.executors import Execution
from auditor.pipeline import run_audit
from reports import render_report
from reports.images import REPORT_IMAGES
from reports.view import MAX_GALLERY_FIGURES

BAND_VALUES = 9  # the extra group column's values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--images", type=int, default=10_000)
    args, _ = parser.parse_known_args()  # nox -s bench passes the same posargs to every bench
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    world = build_demo(args.out / "demo", seed=0)
    data_dir = args.out / f"report-{args.images}"
    labels = data_dir / "labels.csv"
    if not labels.is_file():
        table = generate_split(Split("bench", args.images, 0.5, 0.5), data_dir, seed=1)
        table["band"] = np.random.default_rng(1).integers(0, BAND_VALUES, len(table))
        table.drop(columns=["tie", "tie_box"]).to_csv(labels, index=False)

    run_dir = data_dir / "run"
    config = AuditConfig(
        model_path=world.biased_model,
        dataset_dir=data_dir,
        out_dir=run_dir,
        label_column="gender",
        group_columns=("gender", "race", "band"),
        faithfulness_images=0,
    )
    start = time.perf_counter()
    run_audit(config, execution=Execution(overwrite=True))
    audit_seconds = time.perf_counter() - start
    stored = (run_dir / "gallery.json").stat().st_size
    print(
        f"audited {args.images} images in {audit_seconds:.0f} s "
        f"({args.images / audit_seconds:.1f} images/s); gallery.json {stored / 1e6:.1f} MB"
    )
    print(f"report (gallery capped at {MAX_GALLERY_FIGURES} figures of 3 thumbnails):")
    for mode in REPORT_IMAGES:
        start = time.perf_counter()
        path = render_report(run_dir, mode)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        print(f"  --report-images {mode:8s} {path.stat().st_size / 1e6:6.2f} MB  {seconds:5.1f} s")


if __name__ == "__main__":
    main()
