"""Regions come from where the map is, placebos never touch them, probes edit only their region."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import probes as probes_package
from auditor.regions import NoPlacebo, Region, face_masks, placebo_region, propose_region
from probes import PROBES, Probe


def _map_with_two_blobs() -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64]
    strong = np.exp(-((xx - 48) ** 2 + (yy - 16) ** 2) / 30.0)
    weak = 0.8 * np.exp(-((xx - 12) ** 2 + (yy - 50) ** 2) / 30.0)
    return (strong + weak).astype(np.float32)


def test_region_is_the_component_with_most_attribution() -> None:
    region = propose_region(_map_with_two_blobs(), 0.10)
    assert region is not None
    assert region.mask[16, 48] and not region.mask[50, 12]
    assert region.area <= round(0.10 * 64 * 64)
    x0, y0, x1, y1 = region.box
    assert x0 <= 48 < x1 and y0 <= 16 < y1


def test_flat_map_gives_no_region() -> None:
    assert propose_region(np.zeros((32, 32), np.float32), 0.1) is None


@pytest.mark.parametrize("seed", range(5))
def test_placebo_has_the_same_shape_and_never_overlaps(seed: int) -> None:
    region = propose_region(_map_with_two_blobs(), 0.10)
    assert region is not None
    twin = placebo_region(region, np.random.default_rng(seed))
    assert isinstance(twin, Region)
    assert twin.area == region.area
    assert not (twin.mask & region.mask).any()
    x0, y0, x1, y1 = region.box
    tx0, ty0, tx1, ty1 = twin.box
    assert (x1 - x0, y1 - y0) == (tx1 - tx0, ty1 - ty0)


def test_placebo_says_when_there_is_no_room() -> None:
    mask = np.ones((16, 16), bool)
    mask[0, 0] = False
    assert placebo_region(Region(mask), np.random.default_rng(0)) is NoPlacebo.NO_ROOM


def test_registry_lists_every_probe_class() -> None:
    classes = {
        obj
        for module in vars(probes_package).values()
        if inspect.ismodule(module)
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Probe) and obj is not Probe
    }
    assert classes == set(PROBES.values())
    assert len({p.name for p in classes}) == len(classes)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_each_probe_returns_an_image_of_the_same_kind(name: str) -> None:
    image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    region = np.zeros((48, 48), bool)
    region[10:20, 10:20] = True
    out = PROBES[name]()(image=image, region=region, keep=None)["image"]
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_region_edits_leave_other_pixels_alone() -> None:
    image = np.random.default_rng(0).integers(1, 254, (48, 48, 3), dtype=np.uint8)
    region = np.zeros((48, 48), bool)
    region[30:40, 5:25] = True
    black = PROBES["blackout"]()(image=image, region=region)["image"]
    white = PROBES["white_patch"]()(image=image, region=region)["image"]
    assert (black[region] == 0).all() and (white[region] == 255).all()
    assert np.array_equal(black[~region], image[~region]) and np.array_equal(
        white[~region], image[~region]
    )


def test_hair_crop_fills_hair_from_background_and_keeps_the_face() -> None:
    image = np.full((64, 64, 3), 200, np.uint8)  # light background
    masks = face_masks((22, 20, 42, 44), (64, 64))
    assert masks is not None
    hair, face = masks
    image[hair.mask] = (30, 20, 10)  # dark hair
    image[face.mask] = (220, 170, 140)  # skin
    out = PROBES["hair_crop"]()(image=image, region=hair.mask, keep=face.mask)["image"]
    assert np.array_equal(out[face.mask], image[face.mask])
    assert np.array_equal(out[~(hair.mask | face.mask)], image[~(hair.mask | face.mask)])
    assert out[hair.mask].mean() > 150, "hair should be replaced by the light background"
