"""A small synthetic world of face-like portraits with a planted spurious cue: a necktie.

Each portrait has a gender label (``female``/``male``, binary and assigned by this generator, as
labels in real datasets are assigned by annotators), a race-like group (``A``/``B``/``C``, which
sets the skin-tone range), and features that carry real but imperfect signal about the label:
face width, shoulder width and eyebrow weight, each distributed symmetrically for the two labels
so that a model using only them errs equally often for both. Hair length is independent of the
label.

The planted cue is a collar and necktie on the shirt. In the *biased* training split only
male-labelled people wear one (half of them); in the *control* split and in the *audit* split it is
worn by the same share of both labels. A model trained on the biased split learns "tie → male",
so on the audit split it misclassifies women who wear a tie, and blacking out the tie corrects it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from auditor.data import COLUMN_SCHEMA_FILE

CLASSES = ("female", "male")
RACE_GROUPS = ("A", "B", "C")
# Skin-tone centres (RGB) per race-like group; each person varies around them.
_SKIN = {"A": (236, 200, 175), "B": (198, 148, 108), "C": (120, 80, 58)}
SKIN_TONES = {"A": "light", "B": "medium", "C": "dark"}  # what each group's centre looks like
_SKIN_SPREAD = 14  # the standard deviation of each person's RGB around the centre
_HAIR = ((95, 62, 38), (125, 85, 50), (200, 165, 105), (150, 150, 150), (160, 75, 40))
_SHIRT = (
    (60, 90, 150),
    (150, 60, 60),
    (70, 120, 80),
    (200, 200, 200),
    (90, 90, 90),
    (180, 150, 90),
)
_TIE = ((150, 20, 30), (20, 30, 110), (25, 25, 25), (120, 20, 120))


@dataclass(frozen=True)
class Split:
    """How many portraits to draw and how often the tie goes with each gender label."""

    name: str
    n: int
    p_tie_female: float
    p_tie_male: float


BIASED_TRAIN = Split("biased_train", 2000, p_tie_female=0.0, p_tie_male=0.5)
CONTROL_TRAIN = Split("control_train", 2000, p_tie_female=0.5, p_tie_male=0.5)
AUDIT = Split("audit", 600, p_tie_female=0.5, p_tie_male=0.5)


@dataclass(frozen=True)
class Portrait:
    pixels: np.ndarray  # uint8 [size, size, 3]
    gender: str
    race: str
    tie: bool
    face_box: tuple[int, int, int, int]
    tie_box: tuple[int, int, int, int] | None


def draw_portrait(
    rng: np.random.Generator, gender: str, race: str, tie: bool, size: int
) -> Portrait:
    """Draw one portrait; every random choice comes from ``rng``."""
    female = gender == "female"
    s = size / 96.0
    img = _background(rng, size)
    cx = size / 2 + rng.normal(0, 2.5) * s
    cy = size * 0.40 + rng.normal(0, 2.0) * s
    head_h = size * 0.25 * rng.uniform(0.92, 1.08)
    width_ratio = rng.normal(0.72 if female else 0.88, 0.04)
    head_w = head_h * width_ratio
    skin = _jitter(rng, _SKIN[race], _SKIN_SPREAD)
    hair = _HAIR[rng.integers(len(_HAIR))]
    long_hair = rng.random() < 0.5
    shoulders = size * rng.normal(0.35 if female else 0.45, 0.025)

    shirt = _jitter(rng, _SHIRT[rng.integers(len(_SHIRT))], 12)
    shoulders_y = int(cy + head_h * 1.55)
    cv2.ellipse(
        img,
        (int(cx), int(size + 8 * s)),
        (int(shoulders), int(size - shoulders_y + 8 * s)),
        0,
        180,
        360,
        shirt,
        -1,
        cv2.LINE_AA,
    )
    if long_hair:  # hair falling behind the neck, over the shoulders
        cv2.ellipse(
            img,
            (int(cx), int(cy + head_h * 0.5)),
            (int(head_w * 1.25), int(head_h * 1.45)),
            0,
            0,
            360,
            hair,
            -1,
            cv2.LINE_AA,
        )
    neck_w = head_w * 0.45
    cv2.rectangle(
        img,
        (int(cx - neck_w), int(cy + head_h * 0.6)),
        (int(cx + neck_w), shoulders_y + int(2 * s)),
        _shade(skin, 0.9),
        -1,
        cv2.LINE_AA,
    )
    tie_box = _necktie(img, rng, cx, shoulders_y, neck_w, s) if tie else None
    cv2.ellipse(
        img, (int(cx), int(cy)), (int(head_w), int(head_h)), 0, 0, 360, skin, -1, cv2.LINE_AA
    )
    # Hair on top of the head: a cap for short hair, a fuller crown for long hair.
    cap = 0.55 if long_hair else rng.uniform(0.35, 0.5)
    cv2.ellipse(
        img,
        (int(cx), int(cy - head_h * 0.35)),
        (int(head_w * 1.06), int(head_h * cap + head_h * 0.35)),
        0,
        180,
        360,
        hair,
        -1,
        cv2.LINE_AA,
    )
    _features(img, rng, cx, cy, head_w, head_h, female, s)
    noisy = img.astype(np.float32) + rng.normal(0, 4.0, img.shape)
    pixels = cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (3, 3), 0.6)
    face_box = (int(cx - head_w), int(cy - head_h), int(cx + head_w), int(cy + head_h))
    return Portrait(pixels, gender, race, tie, face_box, tie_box)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    top = np.array(_jitter(rng, (150, 160, 170), 50), np.float32)
    bottom = top * rng.uniform(0.7, 1.1)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    img = top * (1 - ramp) + bottom * ramp
    return np.ascontiguousarray(np.broadcast_to(img, (size, size, 3)).clip(0, 255).astype(np.uint8))


def _necktie(
    img: np.ndarray, rng: np.random.Generator, cx: float, top: int, neck_w: float, s: float
) -> tuple[int, int, int, int]:
    """A white collar and a tie hanging from it; returns the tie's box."""
    collar = (235, 235, 235)
    w = neck_w * 1.1
    cv2.fillPoly(
        img,
        [
            np.array(
                [[cx - w, top - 2 * s], [cx, top + 7 * s], [cx - w * 0.2, top - 2 * s]], np.int32
            ),
            np.array(
                [[cx + w, top - 2 * s], [cx, top + 7 * s], [cx + w * 0.2, top - 2 * s]], np.int32
            ),
        ],
        collar,
        cv2.LINE_AA,
    )
    color = _jitter(rng, _TIE[rng.integers(len(_TIE))], 10)
    knot_w, blade_w, length = 3.5 * s, 6.5 * s, rng.uniform(19, 24) * s
    tie = np.array(
        [
            [cx - knot_w, top],
            [cx + knot_w, top],
            [cx + blade_w, top + length],
            [cx, top + length + 4 * s],
            [cx - blade_w, top + length],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [tie], color, cv2.LINE_AA)
    return (int(cx - blade_w), int(top), int(cx + blade_w), int(top + length + 4 * s))


def _features(
    img: np.ndarray,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    hw: float,
    hh: float,
    female: bool,
    s: float,
) -> None:
    eye_y = int(cy - hh * 0.05)
    dx = hw * 0.42
    thick = rng.random() < (0.2 if female else 0.8)
    brow = max(1, round((2 if thick else 1) * s))
    for side in (-1, 1):
        ex = int(cx + side * dx)
        cv2.ellipse(
            img,
            (ex, eye_y),
            (int(3.5 * s), int(2 * s)),
            0,
            0,
            360,
            (245, 245, 245),
            -1,
            cv2.LINE_AA,
        )
        cv2.circle(img, (ex, eye_y), max(1, int(1.5 * s)), (40, 30, 25), -1, cv2.LINE_AA)
        cv2.line(
            img,
            (ex - int(4 * s), eye_y - int(5 * s)),
            (ex + int(4 * s), eye_y - int(5 * s)),
            (50, 35, 25),
            brow,
            cv2.LINE_AA,
        )
    cv2.line(
        img,
        (int(cx), eye_y + int(2 * s)),
        (int(cx), int(cy + hh * 0.3)),
        (150, 100, 80),
        1,
        cv2.LINE_AA,
    )
    cv2.ellipse(
        img,
        (int(cx), int(cy + hh * 0.55)),
        (int(hw * 0.35), int(2 * s)),
        0,
        0,
        180,
        (160, 60, 70),
        max(1, int(1.5 * s)),
        cv2.LINE_AA,
    )


def _jitter(
    rng: np.random.Generator, color: tuple[int, int, int], amount: float
) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in color)
    return (r, g, b)


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = (int(c * factor) for c in color)
    return (r, g, b)


def generate_split(split: Split, out_dir: Path, *, seed: int, size: int = 96) -> pd.DataFrame:
    """Write ``split.n`` portraits, their ``labels.csv`` and its ``labels.schema.json`` to
    ``out_dir``; return the table.

    The table has the dataset columns auditor reads (file, gender, race, face_box) and the
    generator's ground truth (tie, tie_box), which the audit never sees. The schema says what
    the gender and race labels stand for in this world (:func:`label_schema`).
    """
    rng = np.random.default_rng([seed, sum(split.name.encode())])
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(split.n):
        gender = CLASSES[i % 2]
        race = RACE_GROUPS[rng.choice(3, p=[0.4, 0.3, 0.3])]
        p_tie = split.p_tie_female if gender == "female" else split.p_tie_male
        portrait = draw_portrait(rng, gender, race, bool(rng.random() < p_tie), size)
        file = f"images/{split.name}_{i:05d}.png"
        Image.fromarray(portrait.pixels).save(out_dir / file, compress_level=1)
        rows.append(
            {
                "file": file,
                "gender": gender,
                "race": race,
                "face_box": ",".join(map(str, portrait.face_box)),
                "tie": int(portrait.tie),
                "tie_box": ",".join(map(str, portrait.tie_box)) if portrait.tie_box else "",
            }
        )
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "labels.csv", index=False)
    schema = json.dumps(label_schema(), indent=2, ensure_ascii=False)
    (out_dir / COLUMN_SCHEMA_FILE).write_text(schema + "\n", encoding="utf-8")
    return table


def label_schema() -> dict[str, list[dict[str, object]]]:
    """labels.csv's Table Schema: what this generator means by each gender and race label.

    Race here is only a skin tone: 'A', 'B' and 'C' are the light, medium and dark skin-tone
    ranges the portraits are drawn in, a stand-in for the race labels of real datasets.
    """
    race = [
        {
            "value": group,
            "label": f"{SKIN_TONES[group]} skin tone: RGB {', '.join(map(str, rgb))}, varied "
            f"per portrait with a standard deviation of {_SKIN_SPREAD}",
        }
        for group, rgb in _SKIN.items()
    ]
    return {
        "fields": [
            {"name": "file", "type": "string", "description": "the portrait, under images/"},
            {
                "name": "gender",
                "type": "string",
                "description": "gender label assigned by the demo's generator, which draws "
                "portraits of the 'male' label with wider faces and shoulders and heavier "
                "eyebrows on average",
                "categories": list(CLASSES),
            },
            {
                "name": "race",
                "type": "string",
                "description": "race-like group assigned by the demo's generator: it sets only "
                "the skin tone a synthetic portrait is drawn in",
                "categories": race,
            },
        ]
    }
