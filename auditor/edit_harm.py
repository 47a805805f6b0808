"""Edit harm or reliance: does a painted edit's gap exceed what erasing the same regions shows?

A black or white square is an object where the model looks, so a painted arm's excess gap (its
flips beyond the placebo's, differing between two subgroups) can be the paint's own effect on
one group's images rather than reliance on what the region shows. Its erasing twin (the same
regions inpainted from their surroundings, ``probes.base.Cover``) measures the region alone.
That the twin finds no significant gap is not proof that it has none, so the claim "the gap is
the paint's" rests on a test of its own: per image, the painted arm's excess minus the erased
arm's, ``d ∈ {−2, …, 2}``, and whether its mean differs between the painted test's highest and
lowest subgroups. It is the same paired-difference linear model with HC3 errors as the excess
test (:mod:`auditor.excess`), fitted on ``d`` over every subgroup the painted test compared,
and the pair's contrast gets the interval simultaneous over every pair (the painted test chose
the pair after looking) and its Bonferroni p-value. The run's edit-harm tests are
Holm-corrected in a family of their own: they classify findings, they add none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from auditor.excess import ExcessTest, compare_groups, group_design


@dataclass
class EditHarmTest:
    """Does the painted arm's excess gap between two subgroups exceed its erased twin's on the
    same images?"""

    id: str  # edit_harm/<painted arm>/<grouping>
    painted: str  # the painted arm's excess test id
    erased: str  # its erasing twin's excess test id
    grouping: str
    highest: str | None  # the painted test's pair, highest excess first
    lowest: str | None
    n_images: int  # images of the compared subgroups with both arms' pairs
    effect: float | None = None  # painted minus erased excess gap of the pair
    effect_ci: tuple[float, float] | None = None  # simultaneous over every pair of subgroups
    p_value: float | None = None  # the pair's, Bonferroni over every pair
    reason: str | None = None  # why it is not testable
    p_adjusted: float | None = None  # Holm over the run's edit-harm tests
    significant: bool = False


def erased_twin(
    painted: ExcessTest, excess: list[ExcessTest], covers: Mapping[str, str | None]
) -> ExcessTest | None:
    """The excess test of an erasing probe on ``painted``'s regions (same method, region source
    and grouping), where ``painted``'s probe paints them."""
    if covers.get(painted.probe) != "paint":
        return None
    return next(
        (
            twin
            for twin in excess
            if covers.get(twin.probe) == "erase"
            and (twin.method, twin.region_source, twin.grouping)
            == (painted.method, painted.region_source, painted.grouping)
        ),
        None,
    )


def edit_harm_test(
    painted: ExcessTest,
    erased: ExcessTest,
    painted_pairs: pd.DataFrame,
    erased_pairs: pd.DataFrame,
    labels: pd.Series,
    alpha: float,
) -> EditHarmTest:
    """The test for ``painted`` and its twin ``erased``, from each arm's per-image pairs
    (:func:`auditor.excess.paired_arms`) and the subgroup of each image (``labels``, indexed
    like ``painted_pairs``)."""
    levels = sorted(g.group for g in painted.groups if g.tested)
    both = painted_pairs[["excess"]].join(
        erased_pairs[["excess"]].rename(columns={"excess": "erased"}), how="inner"
    )
    both = both[labels.reindex(both.index).isin(levels)]
    in_test = labels.reindex(both.index)
    result = EditHarmTest(
        id=f"edit_harm/{painted.id.removeprefix('excess_flip/')}",
        painted=painted.id,
        erased=erased.id,
        grouping=painted.grouping,
        highest=painted.highest,
        lowest=painted.lowest,
        n_images=int(in_test.isin([painted.highest, painted.lowest]).sum()),
    )
    if painted.highest is None or painted.lowest is None:
        result.reason = "the painted arm's gap was not tested"
        return result
    if set(in_test) != set(levels):
        result.reason = "a compared subgroup has no image with both arms' pairs"
        return result
    difference = both["excess"] - both["erased"]
    comparison = compare_groups(
        difference, group_design(both, in_test, levels, by_confidence=False), levels, alpha
    )
    if comparison is None:
        result.reason = "the model's covariance could not be estimated"
        return result
    result.effect, result.effect_ci = comparison.gap(painted.highest, painted.lowest)
    result.p_value = comparison.gap_p_value(painted.highest, painted.lowest)
    return result
