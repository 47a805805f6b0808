"""Benchmark: what cue discovery (``audit run --cues``, the default) adds to an audit, in seconds
per 1,000 images, on the demo's two models.

Usage: python tests/benchmarks/bench_cues.py [--out runs/bench-cues] [--batch-size 32] [--repeat 3]

Each model's demo audit is run once with ``--no-cues`` (default probes, no faithfulness curves),
then the discovery stage alone (:func:`auditor.cues.discover_cues`) on that run, best of
``--repeat``. Discovery re-reads every image with a region and embeds its crop (one forward
pass each), clusters the misclassified images' regions, and re-scores four edits per
misclassified member of each cue (blackout and inpaint, each with its placebo), so its cost
grows with the images and with the errors that the cues explain.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from auditor.config import AuditConfig
from auditor.cues import RECORD_COLUMNS, CueOptions, discover_cues
from auditor.data import load_dataset
from auditor.demo import build_demo
from auditor.executors import Execution
from auditor.models import open_model
from auditor.pipeline import run_audit
from auditor.store import RunStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cues"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args, _ = parser.parse_known_args()  # nox -s bench passes the same posargs to every bench
    world = build_demo(args.out / "demo", seed=0)
    print(
        f"torch threads: {torch.get_num_threads()}, batch {args.batch_size}, best of {args.repeat}"
    )
    print(f"{'model':8s} {'images':>6s} {'errors':>6s} {'cues':>4s} {'audit s':>8s} "
          f"{'cues s':>7s} {'s/1000 img':>10s} {'of audit':>8s}")  # fmt: skip
    for name, model_path in (("biased", world.biased_model), ("control", world.control_model)):
        config = AuditConfig(
            model_path=model_path,
            dataset_dir=world.audit_dir,
            out_dir=args.out / name,
            label_column="gender",
            batch_size=args.batch_size,
            faithfulness_images=0,
            cues=False,
        )
        started = time.perf_counter()
        run_dir = run_audit(config, execution=Execution(overwrite=True))
        audit_seconds = time.perf_counter() - started
        model = open_model(model_path)
        dataset = load_dataset(world.audit_dir, model.meta.classes, label_column="gender")
        groups = [f"group_{c}" for c in dataset.group_columns]
        records = RunStore.open(run_dir).records([*RECORD_COLUMNS, *groups])
        options = CueOptions(
            method="gradcam",
            seed=0,
            alpha=config.alpha,
            mid_p=False,
            batch_size=args.batch_size,
            label_column="gender",
            group_columns=dataset.group_columns,
        )
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            summary = discover_cues(run_dir, records, dataset.samples, model, options)
            timings.append(time.perf_counter() - started)
        seconds = min(timings)
        print(
            f"{name:8s} {summary.images:6d} {summary.errors:6d} {len(summary.cues):4d} "
            f"{audit_seconds:8.1f} {seconds:7.1f} {1000 * seconds / summary.images:10.1f} "
            f"{100 * seconds / audit_seconds:7.0f} %"
        )


if __name__ == "__main__":
    main()
