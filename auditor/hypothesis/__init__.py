"""Test a researcher's "fooling" hypothesis against a control, and give a verdict with a p-value.

Published audits made claims such as "blacking out the shirt collar turns women misclassified as
men back into women" on a handful of images, with no control. ``audit hypothesis SPEC.toml MODEL
DATASET`` runs such a claim on every matching image, runs a control edit on the same images, and
compares the two with an exact paired test. A spec is a small TOML file::

    name = "tie-blackout"
    description = "Blacking out the Grad-CAM region corrects women predicted 'male'."
    seed = 0          # random control regions are seeded per image from it (default 0)
    alpha = 0.05      # significance level of the one-sided test (default 0.05)
    expect = "supported"   # optional: "supported" or "not supported"; a mismatch exits 1

    [images]          # optional; without it every readable image is selected
    where = 'gender == "female" and pred == "male"'

    [region]          # where the edit goes
    kind = "attribution"   # method (default: the model's, Grad-CAM for CNNs), area (0.10)
    # kind = "face_region" with name = eyes | nose | mouth | rest_of_face | neck_collar | hair |
    #        background (from face_box or landmarks; the face is kept intact by inpainting edits)
    # kind = "box_column" with column = "tie_box" (a per-image "<name>_box" column of labels.csv)
    # kind = "box" with box = [x0, y0, x1, y1] as fractions of the image's width and height
    # kind = "whole_image" for probes that take no region (flip)

    [probe]
    name = "blackout"      # any probe of probes.PROBES, with arguments as --probes takes them:
                           # "blackout(fill=inpaint)", "blur(sigma=4)"

    [success]         # what counts as the edit working, for the hypothesis and the control alike
    kind = "becomes_label"   # the edited prediction equals the image's true label
    # kind = "probability_drop" with class = "male" and at_least = 0.2: P(class) falls by >= 0.2
    # kind = "prediction_changes": the predicted class changes

    [control]
    kind = "random_region"   # the same edit on a random region of the same shape that does not
                             # overlap the hypothesis region, seeded per image
    # kind = "spec" with path = "controls/corner.toml": the [region] and [probe] of another spec
    #        (relative to this file), run on this spec's images and judged by this [success]

``where`` is a boolean expression over the columns of labels.csv (columns whose values are all
numbers compare as numbers), ``pred`` (the model's predicted class) and ``p_<class>`` (its
probability for each class): comparisons (``== != < <= > >= in`` and ``not in``) of columns with
strings, numbers or lists of them, joined by ``and``, ``or``, ``not`` and parentheses. It is
parsed, never evaluated as code. See :mod:`auditor.hypothesis.verdict` for the statistics.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.hypothesis.engine import HypothesisResult, run_hypothesis
    from auditor.hypothesis.plan import RunOptions
    from auditor.hypothesis.spec import HypothesisSpec, load_spec
    from auditor.hypothesis.verdict import Verdict, decide

# Imported on first use (PEP 562): the engine needs torch, and the readers of a hypothesis run
# (reports.hypothesis, through auditor.hypothesis.files) must not pay for it.
_EXPORTS = {
    "HypothesisResult": "engine",
    "RunOptions": "plan",
    "run_hypothesis": "engine",
    "HypothesisSpec": "spec",
    "load_spec": "spec",
    "Verdict": "verdict",
    "decide": "verdict",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = [
    "HypothesisResult",
    "HypothesisSpec",
    "RunOptions",
    "Verdict",
    "decide",
    "load_spec",
    "run_hypothesis",
]
