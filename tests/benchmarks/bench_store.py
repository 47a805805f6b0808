"""Benchmark: what the run store costs and keeps bounded.

Usage: python tests/benchmarks/bench_store.py [--out runs/bench] [--small 1000] [--large 20000]

1. Start-up: the import time of what `audit report`, `audit gate` and `audit compare` load before
   they read a run (a fresh interpreter each, median of 5, less an empty interpreter's start).
2. Peak RSS of a local `audit run` of the demo's biased model on ``--small`` and ``--large``
   fresh demo portraits at the model's 96 px, each audit in its own process; memory should not
   grow with the number of images. Grad-CAM with the blackout and flip probes and no
   faithfulness curves keeps 20,000 images to about half an hour on two cores; what the store
   holds per image (records, measures) is the same for every probe.
3. The size of the large run's report.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from auditor.demo import build_demo
from auditor.demo.world import Split, generate_split

READERS = {
    "audit report": "import auditor.cli, reports",
    "audit gate": "import auditor.cli, auditor.policy",
    "audit compare": "import auditor.cli, auditor.compare, auditor.policy, reports.comparison",
}
# Runs the CLI in this process and reports its own peak RSS (kB on Linux) on the last line.
MEASURED_CLI = (
    "import resource, sys\n"
    "from auditor.cli import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "    print('peak_rss_kb', peak, file=sys.stderr)\n"
)


def import_seconds(statement: str, repeats: int = 5) -> float:
    def once(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - start

    empty = statistics.median(once("pass") for _ in range(repeats))
    return statistics.median(once(statement) for _ in range(repeats)) - empty


def audit_peak_rss(model: Path, data: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one `audit run` in a fresh process."""
    args = [
        "run", str(model), str(data), "--out", str(out), "--label-column", "gender",
        "--method", "gradcam", "--probes", "blackout,flip", "--faithfulness-images", "0",
        "--overwrite",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED_CLI, *args], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    last = done.stderr.strip().splitlines()[-1].split()
    return int(last[1]) / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=20_000)
    args, _ = parser.parse_known_args()  # nox -s bench passes the same posargs to every bench

    print("start-up import time (median of 5, fresh interpreter):")
    for command, statement in READERS.items():
        print(f"  {command:14s} {import_seconds(statement):5.2f} s")

    world = build_demo(args.out / "demo", seed=0)
    peaks = {}
    for images in (args.small, args.large):
        data = args.out / f"store-{images}"
        if not (data / "labels.csv").is_file():
            table = generate_split(Split("bench", images, 0.5, 0.5), data, seed=2)
            table.drop(columns=["tie", "tie_box"]).to_csv(data / "labels.csv", index=False)
        peak, seconds = audit_peak_rss(world.biased_model, data, data / "run")
        peaks[images] = peak
        report = (data / "run" / "report.html").stat().st_size / 1e6
        print(
            f"audit of {images:6d} images: peak RSS {peak:7.0f} MB, {seconds:5.0f} s "
            f"({images / seconds:.1f} images/s end to end), report {report:.2f} MB"
        )
    growth = peaks[args.large] / peaks[args.small] - 1
    print(f"peak RSS, {args.large} vs {args.small} images: {growth:+.1%}")


if __name__ == "__main__":
    main()
