"""Probes take parameters, as a person editing a photo would choose them: each edit changes only
its region and does what its parameter says, specs parse to one canonical name per probe, and
the parameters are recorded in summary.json next to results named by that canonical name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from auditor.config import DEFAULT_PROBES, AuditConfig
from auditor.errors import ConfigError
from auditor.hypothesis import load_spec
from auditor.records import RESULTS_FILE
from auditor.store import RunStore
from auditor.summary import SCHEMA_PATH
from probes import PROBES
from probes.blackout import Blackout
from probes.blur import Blur
from probes.functional import region_sigma
from probes.grayscale import Grayscale
from probes.noise import Noise
from probes.spec import ProbeSpecError, make_probe, make_probes, split_specs
from tests.conftest import audit, load_summary

SIZE = 64


def square(top: int = 24, left: int = 20, side: int = 16) -> np.ndarray:
    region = np.zeros((SIZE, SIZE), bool)
    region[top : top + side, left : left + side] = True
    return region


def random_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def gradient() -> np.ndarray:
    """A smooth left-to-right ramp: what is cut from it can be recovered from its neighbours."""
    ramp = np.linspace(20, 230, SIZE)
    return np.repeat(np.stack([ramp, ramp[::-1], np.full(SIZE, 128.0)], -1)[None], SIZE, 0).astype(
        np.uint8
    )


def apply(spec: str, image: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    out: np.ndarray = make_probe(spec)(image=image, region=region)["image"]
    return out


# --- the pixels of each edit -----------------------------------------------------------------

REGION_EDITS = (
    "blackout(fill=mean)",
    "blackout(fill=blur)",
    "blackout(fill=noise)",
    "blackout(fill=inpaint)",
    "blackout(fill=blur,sigma=3)",
    "blur",
    "noise",
)


@pytest.mark.parametrize("spec", REGION_EDITS)
def test_each_region_edit_changes_its_region_and_nothing_else(spec: str) -> None:
    image, region = random_image(), square()
    out = apply(spec, image, region)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~region], image[~region])
    assert (out[region] != image[region]).any(axis=-1).mean() > 0.5


def test_mean_fill_paints_the_image_mean_colour() -> None:
    image, region = random_image(), square()
    image[..., 0] //= 2  # a colour, not grey, so a per-channel mean is tested
    out = apply("blackout(fill=mean)", image, region)
    expected = np.rint(image.reshape(-1, 3).mean(axis=0))
    assert (out[region] == expected).all()


def test_inpaint_makes_a_cut_from_a_gradient_disappear_where_black_does_not() -> None:
    image, region = gradient(), square()
    error = {
        fill: np.abs(
            apply(f"blackout(fill={fill})", image, region)[region] - image[region].astype(int)
        ).mean()
        for fill in ("inpaint", "black")
    }
    assert error["inpaint"] < 8, "the inpainted region should continue the ramp"
    assert error["black"] > 60


@pytest.mark.parametrize("spec", ["blackout(fill=blur)", "blur", "blur(sigma=2)"])
def test_blurs_reduce_the_region_variance(spec: str) -> None:
    image, region = random_image(), square()
    before = image[region].astype(float).var()
    assert apply(spec, image, region)[region].astype(float).var() < before / 4


def test_a_larger_blur_sigma_smooths_more_and_the_relative_sigma_grows_with_the_region() -> None:
    image, region = random_image(), square()
    spread = [apply(f"blur(sigma={s})", image, region)[region].std() for s in (1, 4, 16)]
    assert spread[0] > spread[1] > spread[2]
    assert region_sigma(square(side=8)) < region_sigma(square(side=32))


def test_noise_is_deterministic_and_has_the_asked_std() -> None:
    image, region = np.full((SIZE, SIZE, 3), 128, np.uint8), square(side=32)
    first, again = apply("noise(std=0.1)", image, region), apply("noise(std=0.1)", image, region)
    assert np.array_equal(first, again), "a run and its resume must draw the same noise"
    added = first[region].astype(float) - 128
    assert added.std() == pytest.approx(0.1 * 255, rel=0.05)
    assert abs(added.mean()) < 1.0
    assert not np.array_equal(apply("noise(std=0.1,salt=1)", image, region), first)
    other = image.copy()
    other[0, 0] = 0  # other content (outside the region): other noise
    assert not np.array_equal(apply("noise(std=0.1)", other, region)[region], first[region])


def test_noise_fill_is_deterministic_around_the_image_mean() -> None:
    image, region = random_image(), square(side=32)
    first = apply("blackout(fill=noise)", image, region)
    assert np.array_equal(first, apply("blackout(fill=noise)", image, region))
    means = first[region].reshape(-1, 3).mean(axis=0)
    assert means == pytest.approx(image.reshape(-1, 3).mean(axis=0), abs=6)


def test_grayscale_has_equal_channels_and_keeps_the_brightness() -> None:
    image = random_image()
    out = apply("grayscale", image)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    luminance = image.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out[..., 0] - luminance).max() <= 1


@pytest.mark.parametrize("shift", [0.125, -0.125])
def test_crop_shift_moves_the_content_by_its_fraction_and_repeats_the_edge(shift: float) -> None:
    """The window moves right and down by shift × side (left and up when negative): the image
    moves the other way, and the edge it left behind repeats the last row and column."""
    image, offset = random_image(), round(abs(shift) * SIZE)
    out = apply(f"crop_shift(shift={shift})", image)
    kept = slice(0, SIZE - offset) if shift > 0 else slice(offset, SIZE)
    source = slice(offset, SIZE) if shift > 0 else slice(0, SIZE - offset)
    assert np.array_equal(out[kept, kept], image[source, source])
    edge = -1 if shift > 0 else 0
    outside = slice(SIZE - offset, SIZE) if shift > 0 else slice(0, offset)
    assert np.array_equal(out[kept, outside], np.repeat(image[source, edge][:, None], offset, 1))


def test_crop_shift_zoom_tightens_the_crop_about_its_centre() -> None:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[24:40, 24:40] = 255  # a centred 16 px square
    out = apply("crop_shift(shift=0,zoom=2)", image)
    white = out[..., 0] > 127
    assert white.sum() == pytest.approx(32 * 32, rel=0.1), "twice as tight: twice as wide"
    assert white[SIZE // 2, SIZE // 2] and not white[10, 10]
    assert np.array_equal(out[:, ::-1], out) and np.array_equal(out[::-1], out)  # centred


# --- spec strings ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROBES))
def test_default_arguments_give_the_bare_registry_name(name: str) -> None:
    probe = make_probe(name)
    assert probe.name == make_probe(f"{name}()").name == name
    spelt_out = ",".join(f"{k}={v}" for k, v in probe.get_transform_init_args().items())
    assert make_probe(f"{name}({spelt_out})").name == name


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("blackout(fill=inpaint)", "blackout(fill=inpaint)"),
        ("blackout( sigma = 4.0 , fill = blur )", "blackout(fill=blur,sigma=4)"),
        ("blur(sigma=8)", "blur"),
        ("blur(sigma=2.5)", "blur(sigma=2.5)"),
        ("noise(salt=3, std=0.2)", "noise(salt=3)"),
        ("noise(std=0.05,salt=0)", "noise(std=0.05)"),
    ],
)
def test_a_spec_has_one_canonical_name_that_builds_the_same_probe(
    spec: str, canonical: str
) -> None:
    probe = make_probe(spec)
    assert probe.name == canonical
    again = make_probe(canonical)
    assert again.name == canonical
    assert again.get_transform_init_args() == probe.get_transform_init_args()


def test_values_take_their_argument_type() -> None:
    assert make_probe("blur(sigma=4)").get_transform_init_args() == {"sigma": 4.0}
    assert isinstance(make_probe("blur(sigma=4)").get_transform_init_args()["sigma"], float)
    assert make_probe("noise(salt=7)").get_transform_init_args() == {"std": 0.2, "salt": 7}
    assert isinstance(make_probe("noise(salt=7)").get_transform_init_args()["salt"], int)


def test_probes_built_directly_are_named_as_their_specs() -> None:
    assert (
        Blackout().name == "blackout" and Blackout(fill="inpaint").name == "blackout(fill=inpaint)"
    )
    assert Blur(sigma=8.0).name == "blur" and Noise(std=0.5).name == "noise(std=0.5)"
    assert Grayscale().name == "grayscale" and Grayscale.region_from == "whole_image"
    assert {Blur.region_from, Noise.region_from} == {"attribution"}


def test_the_description_shows_what_the_parameters_change() -> None:
    assert make_probe("blackout").description == "blacking out the attribution region"
    assert "inpainted" in make_probe("blackout(fill=inpaint)").description
    assert "mean colour" in make_probe("blackout(fill=mean)").description
    assert "sigma 3 px" in make_probe("blackout(fill=blur,sigma=3)").description
    assert "sigma 2.5 px" in make_probe("blur(sigma=2.5)").description
    assert "salt 4" in make_probe("noise(salt=4)").description


def test_commas_inside_parentheses_do_not_split_specs() -> None:
    assert split_specs(" blackout(fill=blur, sigma=4),flip ,, blur(sigma=8)") == (
        "blackout(fill=blur, sigma=4)",
        "flip",
        "blur(sigma=8)",
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blackoot", r"unknown probe 'blackoot'; did you mean 'blackout'\? \(known: blackout, "),
        ("sepia", r"unknown probe 'sepia'; \(known: .*grayscale"),
        ("blackout(color=red)", r"blackout has no argument 'color' \(its arguments: fill, sigma\)"),
        ("grayscale(amount=1)", r"grayscale has no argument 'amount' \(it takes none\)"),
        ("blackout(fill=purple)", r"fill must be one of black, mean, blur, noise, inpaint"),
        ("blur(sigma=wide)", r"sigma must be a finite number, got 'wide'"),
        ("blur(sigma=inf)", r"sigma must be a finite number"),
        ("blur(sigma=0)", r"sigma must be a positive number of pixels"),
        ("noise(salt=1.5)", r"salt must be a whole number, got '1.5'"),
        ("noise(std=2)", r"std must be a fraction of 255"),
        ("blackout(sigma=4)", r"sigma applies to fill=blur only"),
        ("crop_shift(shift=0)", r"shift 0 at zoom 1 is the image itself"),
        ("crop_shift(zoom=0.5)", r"zoom must be between 1 \(no tightening\) and 4"),
        ("crop_shift(shift=0.6)", r"shift must be a fraction of the image within ±0.5"),
        ("blur(8)", r"'8' should be written key=value"),
        ("blur(sigma=2,sigma=3)", r"'sigma' is given twice"),
        ("blur(sigma=2", r"should be written name or name\(key=value, \.\.\.\)"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ProbeSpecError, match=message):
        make_probe(spec)


def test_two_specs_of_one_probe_are_refused() -> None:
    with pytest.raises(ProbeSpecError, match=r"blackout is listed twice \(as 'blackout' and "):
        make_probes(["blackout", "flip", "blackout(fill=black)"])
    assert [p.name for p in make_probes(["blackout", "blackout(fill=mean)"])] == [
        "blackout",
        "blackout(fill=mean)",
    ]
    with pytest.raises(ProbeSpecError, match="leaves a parenthesis open"):
        split_specs("blackout(fill=mean,flip")


def test_the_config_keeps_canonical_specs_and_the_defaults_add_inpaint_to_the_classic_four() -> (
    None
):
    assert DEFAULT_PROBES == (
        "blackout",
        "blackout(fill=inpaint)",
        "white_patch",
        "flip",
        "hair_crop",
    )
    config = AuditConfig(
        model_path=None,
        dataset_dir=Path("data"),
        out_dir=Path("run"),
        probes=("blackout(fill=black)", "blur(sigma=4.0)", "grayscale"),
    )
    assert config.probes == ("blackout", "blur(sigma=4)", "grayscale")
    with pytest.raises(ConfigError, match=r"^--probes: .*fill must be one of"):
        AuditConfig(
            model_path=None,
            dataset_dir=Path("data"),
            out_dir=Path("run"),
            probes=("blackout(fill=red)",),
        )


def test_a_hypothesis_spec_names_its_probe_with_the_same_specs(tmp_path: Path) -> None:
    def spec(probe: str) -> Path:
        path = tmp_path / "h.toml"
        path.write_text(
            'name = "h"\n[region]\nkind = "attribution"\n'
            f"[probe]\nname = {json.dumps(probe)}\n"
            '[success]\nkind = "prediction_changes"\n[control]\nkind = "random_region"\n',
            encoding="utf-8",
        )
        return path

    assert load_spec(spec("blackout(fill = inpaint)")).edit.probe == "blackout(fill=inpaint)"
    with pytest.raises(ConfigError, match=r"\[probe\] name is invalid: .*one of black, mean"):
        load_spec(spec("blackout(fill=purple)"))


@pytest.mark.parametrize(
    ("spec", "cover"),
    [
        ("blackout", "paint"),
        ("white_patch", "paint"),
        ("blackout(fill=inpaint)", "erase"),
        ("blackout(fill=mean)", None),
        ("blur", None),
        ("flip", None),
    ],
)
def test_black_and_white_paint_the_region_and_inpaint_erases_it(
    spec: str, cover: str | None
) -> None:
    """What tells a painted edit's own effect from reliance: a black or white square is a new
    object, an inpainted region is gone; the other fills are neither."""
    assert make_probe(spec).cover == cover


# --- a real run ------------------------------------------------------------------------------


def test_parameters_round_trip_through_summary_json(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, output = audit(
        tiny_model(),
        small_dataset(n=12),
        out,
        "--probes",
        "blackout(fill=mean),grayscale,crop_shift(shift=-0.05,zoom=1.25)",
        "--faithfulness-images",
        "0",
    )
    assert code == 0, output
    summary = load_summary(out)
    jsonschema.validate(summary, json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    shifted = "crop_shift(shift=-0.05,zoom=1.25)"
    assert summary["config"]["probes"] == ["blackout(fill=mean)", "grayscale", shifted]
    by_name = {p["name"]: p for p in summary["probes"]}
    assert by_name["blackout(fill=mean)"]["params"] == {"fill": "mean", "sigma": 0.0}
    assert "mean colour" in by_name["blackout(fill=mean)"]["description"]
    assert by_name["grayscale"] == {
        "name": "grayscale",
        "description": "turning the image to grayscale",
        "region_from": "whole_image",
        "cover": None,
        "params": {},
    }
    assert by_name[shifted]["params"] == {"shift": -0.05, "zoom": 1.25}
    assert by_name[shifted]["region_from"] == "whole_image"
    typed = RunStore.open(out).summary().probes
    assert [dict(p.params) for p in typed] == [
        {"fill": "mean", "sigma": 0.0},
        {},
        {"shift": -0.05, "zoom": 1.25},
    ]
    for stored in (typed[0], typed[2]):
        assert make_probe(stored.name).get_transform_init_args() == dict(stored.params)
    assert [p.cover for p in typed] == [None, None, None]
    results = pd.read_parquet(out / RESULTS_FILE)
    assert set(results["probe"].dropna()) == {"blackout(fill=mean)", "grayscale", shifted}


def test_an_unknown_fill_exits_2_naming_the_allowed_fills(
    tiny_model: Callable[..., Path], small_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    code, output = audit(
        tiny_model(), small_dataset(n=4), tmp_path / "run", "--probes", "blackout(fill=purple)"
    )
    assert code == 2
    assert "fill must be one of black, mean, blur, noise, inpaint, got 'purple'" in output
    assert not (tmp_path / "run" / RESULTS_FILE).exists()
