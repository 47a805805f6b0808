"""Benchmark: what each probe costs per image besides the model's passes: placing its region,
drawing its control, and making its edit, at the demo's 96 px and at 224 px.

Usage: python tests/benchmarks/bench_probes.py [--out runs/bench] [--images 100] [--repeat 3]
                                               [--photos DIR]

The images are the demo's audit portraits (generated, no model trained) or, with ``--photos``,
a folder with a labels.csv (real photographs: their faces are found by the Haar cascade, which
is then part of the hair's cost). A region probe's region is the top 10 % of a smooth random
map, as an attribution map's would be; its control is its same-shape placebo. The hair crop's
region is GrabCut's hair (the geometric ring where GrabCut finds none) and its control the
same-shape placebo, or the area-matched blob where the shape fits nowhere else. Whole-image
probes share one control, the noise floor (one edit per image, whatever their number). Every
edit or control is also one forward pass of the model when audited; the audit benchmark
(bench_audit.py) gives that rate.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from auditor.data import Sample, load_dataset
from auditor.demo.world import AUDIT, generate_split
from auditor.preprocess import read_image
from auditor.region_sources import (
    AttributionRegion,
    HairRegion,
    ImageView,
    Placement,
    random_control,
)
from auditor.regions import Region, area_matched_region, face_masks
from auditor.step import apply_edit
from probes import Probe
from probes.crop_shift import CropShift
from probes.spec import make_probe

SPECS = (
    "blackout", "blackout(fill=inpaint)", "white_patch", "blur", "noise", "flip", "grayscale",
    "crop_shift", "hair_crop",
)  # fmt: skip
SIZES = (96, 224)
AREA = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--photos", type=Path, default=None)
    args, _ = parser.parse_known_args()  # nox -s bench passes the same posargs to every bench
    folder = args.photos or _portraits(args.out / "probe_portraits")
    samples = load_dataset(folder, ("female", "male"), label_column="gender").samples
    samples = samples[: args.images]
    print(f"{len(samples)} images of {folder}, best of {args.repeat}, ms per image")
    for size in SIZES:
        print(f"\n{size} x {size} px")
        for name, milliseconds in _timings(samples, size, args.repeat):
            print(f"  {name:48s} {milliseconds:8.2f}")


def _portraits(folder: Path) -> Path:
    if not (folder / "labels.csv").is_file():
        generate_split(AUDIT, folder, seed=0)
    return folder


def _timings(samples: Sequence[Sample], size: int, repeat: int) -> list[tuple[str, float]]:
    """(what, ms per image): each region and control, then each probe's edit and its total."""
    views = [
        ImageView(s, read_image(s.path, (size, size)), {"map": _smooth_map(size, i)})
        for i, s in enumerate(samples)
    ]
    for view in views:
        _ = view.geometry  # a detected face is found once, outside the timings, as in a run
    regions = {
        "attribution": [AttributionRegion("map", AREA).place(v) for v in views],
        "face": [HairRegion().place(v) for v in views],
        "whole_image": [(None, None)] * len(views),
    }
    salts = {"attribution": "map", "face": "face"}

    def controls(kind: str) -> float:
        pairs = list(zip(regions[kind], views, strict=True))
        return _per_image(
            repeat,
            pairs,
            lambda p: random_control(p[0], seed=0, image_id=p[1].sample.id, salt=salts[kind]),
        )

    rings = [r for r in map(_ring, views) if not isinstance(r, str)]
    placing = {
        "attribution": _per_image(repeat, views, AttributionRegion("map", AREA).place),
        "face": _per_image(repeat, views, HairRegion().place),
        "whole_image": 0.0,
    }
    control = {
        "attribution": controls("attribution"),
        "face": controls("face"),
        "whole_image": _edit_time(repeat, views, regions["whole_image"], CropShift(1 / size)),
    }
    timings = [
        ("attribution region (top 10 % of a map)", placing["attribution"]),
        ("  its control: the same shape moved at random", control["attribution"]),
        ("hair: geometric ring", _per_image(repeat, views, _ring)),
        ("hair: GrabCut (with the ring and the kept features)", placing["face"]),
        ("  its control: same shape, else area-matched", control["face"]),
        (
            "  area-matched blob alone, for the geometric ring",
            _per_image(repeat, rings, lambda r: area_matched_region(*r, np.random.default_rng(0))),
        ),
        ("noise floor: one edit shared by the whole-image probes", control["whole_image"]),
    ]
    for spec in SPECS:
        probe = make_probe(spec)
        kind = probe.region_from
        edit = _edit_time(repeat, views, regions[kind], probe)
        # A region probe edits its region and its control; whole-image probes share the floor.
        edits = edit if kind == "whole_image" else 2 * edit
        timings.append((f"{spec}: edit", edit))
        timings.append(
            (f"{spec}: region, control and edits", placing[kind] + control[kind] + edits)
        )
    return timings


def _smooth_map(size: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal((size, size))
    return ndimage.gaussian_filter(noise, size / 8).astype(np.float32)


def _ring(view: ImageView) -> tuple[Region, np.ndarray] | str:
    """The geometric hair ring and the face it keeps, as before GrabCut."""
    box = view.geometry.face_box
    masks = face_masks(box, view.shape) if box is not None else None
    return "no face" if masks is None else (masks[0], masks[1].mask)


def _per_image(repeat: int, items: Sequence[object], work: Callable[..., object]) -> float:
    """The best of ``repeat`` passes of ``work`` over ``items``, in ms per item."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            work(item)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / max(len(items), 1)


def _edit_time(
    repeat: int, views: Sequence[ImageView], placed: Sequence[Placement], probe: Probe
) -> float:
    """ms per image of ``probe``'s edit on each view's placement (skipped where it has none)."""
    jobs = [
        (view.image.pixels, p[0], p[1])
        for view, p in zip(views, placed, strict=True)
        if not isinstance(p, str)
    ]
    return _per_image(repeat, jobs, lambda job: apply_edit(probe, *job))


if __name__ == "__main__":
    main()
