"""Error-rate gaps adjusted for what else differs between the subgroups (``--adjust-for``).

A raw error-rate gap can be another column's doing: when errors depend on age and one gender's
images are older, the gap between the genders is age's. For each error-rate gap (each grouping:
each group column and their intersection), a logistic model of ``error ~ subgroup +
covariates`` is fitted on the images of the subgroups that the raw test compares, and beside
the raw gap it reports:

- the **adjusted odds ratio** of the raw gap's highest-error subgroup against its lowest-error
  one (the same pair, ``GapTest.highest`` and ``GapTest.lowest``), with its Wald interval at
  1 − α: ``exp(β ± z·SE)``, where β is the highest subgroup's coefficient with the lowest as
  the reference level (an odds ratio of 1: no difference once the covariates are held equal);
- the **likelihood-ratio test** that every subgroup term is zero given the covariates
  (chi-square on the number of subgroups − 1 degrees of freedom).

A covariate whose non-missing values all parse as finite numbers enters linearly (standardised,
which changes no subgroup coefficient and keeps the fit well conditioned); any other enters as
categorical, one indicator per value but the first (in sorted order). Images with a missing
covariate are left out of the model and counted (``n_left_out``).

When the model cannot be estimated, the result holds no numbers and ``reason`` says why
("not estimable: …"): the pair's odds ratio is infinite (a subgroup with no errors, or only
errors, among the images used: separation), a covariate value's images all share one outcome
or the fit does not converge (the covariates separate errors from correct predictions), or
the design is singular (a covariate constant among the images used, or determined by the
subgroups).

These p-values are shown beside the raw gaps, not added to the run's Holm family: they ask the
raw tests' question again under a model, and the gates judge the raw gaps.

statsmodels and scipy are imported where a model is fitted: readers of a run import this
module's names without them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from auditor.records import COVARIATE_PREFIX

if TYPE_CHECKING:  # stats imports this module; the type only is needed here
    from auditor.stats import GapTest

ADJUSTED_PREFIX = "adjusted_error/"
NOT_ESTIMABLE = "not estimable: "
MAX_ITERATIONS = 100  # Newton–Raphson steps: a fit that has not converged by then is separated
# A fitted probability this close to 0 or 1 after convergence means the covariates (nearly)
# separate errors from correct predictions: the coefficients and their errors are not finite.
SEPARATED_PROBABILITY = 1e-8
MAX_LOG_ODDS = 700.0  # exp of more overflows a float


@dataclass(frozen=True)
class AdjustedGap:
    """One error-rate gap's pair of subgroups compared at equal covariates (see the module).

    ``odds_ratio`` and ``odds_ratio_ci`` (Wald, at 1 − α) are of ``highest`` against
    ``lowest``; ``statistic`` (on ``df`` degrees of freedom) and ``p_value`` are of the
    likelihood-ratio test that every subgroup term is zero given the covariates. ``n_used``
    images entered the model; ``n_left_out`` images of the tested subgroups lacked a covariate.
    ``reason`` is None, or why the model gave no numbers ("not estimable: …").
    """

    id: str
    grouping: str
    covariates: tuple[str, ...]
    highest: str | None
    lowest: str | None
    odds_ratio: float | None
    odds_ratio_ci: tuple[float, float] | None
    statistic: float | None
    df: int | None
    p_value: float | None  # shown beside the raw gap, not in the Holm family
    n_used: int
    n_left_out: int
    reason: str | None = None


class _Fit(NamedTuple):
    params: np.ndarray
    bse: np.ndarray
    llf: float


def covariate_columns_of(records: pd.DataFrame) -> list[str]:
    """The covariate columns (``--adjust-for``) that a records table carries, by prefix."""
    return [
        c.removeprefix(COVARIATE_PREFIX) for c in records.columns if c.startswith(COVARIATE_PREFIX)
    ]


def is_numeric(cells: pd.Series) -> bool:
    """Whether a covariate enters linearly: it has values, and all of them (the missing ones
    aside) parse as finite numbers."""
    present = cells.dropna().astype(str)
    if present.empty:
        return False
    values = pd.to_numeric(present, errors="coerce")
    return bool(values.notna().all() and np.isfinite(values.to_numpy(dtype=float)).all())


def adjusted_gap(
    images: pd.DataFrame,
    labels: pd.Series,
    covariates: Sequence[str],
    gap: GapTest,
    alpha: float,
) -> AdjustedGap:
    """The error-rate ``gap`` (one grouping's raw test) adjusted for ``covariates``.

    ``images`` has one row per audited image with its boolean ``error`` and its
    ``covariate_<name>`` cells; ``labels`` is each image's subgroup in ``gap``'s grouping.
    Only the subgroups that the raw test compared (large enough) enter the model.
    """
    tested = [g.group for g in gap.groups if g.tested]
    in_test = labels.isin(tested)
    frame, groups = images[in_test], labels[in_test]
    columns = [COVARIATE_PREFIX + c for c in covariates]
    complete = frame[columns].notna().all(axis=1) if columns else pd.Series(True, frame.index)
    used, groups = frame[complete], groups[complete]
    result = AdjustedGap(
        id=ADJUSTED_PREFIX + gap.grouping,
        grouping=gap.grouping,
        covariates=tuple(covariates),
        highest=gap.highest,
        lowest=gap.lowest,
        odds_ratio=None,
        odds_ratio_ci=None,
        statistic=None,
        df=None,
        p_value=None,
        n_used=len(used),
        n_left_out=int((~complete).sum()),
    )

    def not_estimable(why: str) -> AdjustedGap:
        return replace(result, reason=NOT_ESTIMABLE + why)

    if gap.highest is None or gap.lowest is None:
        return not_estimable("fewer than two subgroups large enough to test")
    if gap.highest == gap.lowest:
        return not_estimable(
            "every subgroup tested has the same error rate, so no pair is highest and lowest"
        )
    y = used["error"].astype(bool).to_numpy()
    for name in (gap.highest, gap.lowest):
        outcomes = y[(groups == name).to_numpy()]
        if not len(outcomes):
            return not_estimable(f"no image of subgroup {name!r} has every covariate")
        if outcomes.all() or not outcomes.any():
            which = "only errors" if outcomes.all() else "no errors"
            return not_estimable(
                f"subgroup {name!r} has {which} among its {len(outcomes)} image(s) used, so the "
                "odds ratio is not finite (separation)"
            )
    numeric = {c: is_numeric(images[COVARIATE_PREFIX + c]) for c in covariates}
    design = _covariate_design(used, covariates, numeric, y)
    if isinstance(design, str):
        return not_estimable(design)
    levels = [gap.lowest, *sorted(set(groups) - {gap.lowest})]  # the lowest is the reference
    group_terms = np.column_stack([(groups == g).to_numpy(float) for g in levels[1:]])
    reduced = np.column_stack([np.ones(len(used)), design])
    full = np.column_stack([reduced, group_terms])
    if np.linalg.matrix_rank(full) < full.shape[1]:
        return not_estimable(
            "the design is singular: the covariates are determined by the subgroups or by "
            "each other"
        )
    full_fit = _fit(y, full)
    if isinstance(full_fit, str):
        return not_estimable(full_fit)
    reduced_fit = _fit(y, reduced)
    if isinstance(reduced_fit, str):
        return not_estimable(reduced_fit)
    from scipy.stats import chi2, norm

    index = reduced.shape[1] + levels.index(gap.highest) - 1
    beta, se = float(full_fit.params[index]), float(full_fit.bse[index])
    z = float(norm.ppf(1 - alpha / 2))
    if not abs(beta) + z * se < MAX_LOG_ODDS:
        return not_estimable("the odds ratio's interval is not finite")
    odds = (math.exp(beta), (math.exp(beta - z * se), math.exp(beta + z * se)))
    statistic = max(2.0 * (full_fit.llf - reduced_fit.llf), 0.0)
    df = len(levels) - 1
    return replace(
        result,
        odds_ratio=odds[0],
        odds_ratio_ci=odds[1],
        statistic=statistic,
        df=df,
        p_value=float(chi2.sf(statistic, df)),
    )


def _covariate_design(
    used: pd.DataFrame, covariates: Sequence[str], numeric: dict[str, bool], y: np.ndarray
) -> np.ndarray | str:
    """The covariates' columns of the design (numeric ones standardised, categorical ones as
    indicators of every value but the first), or why the model cannot be estimated."""
    parts: list[np.ndarray] = [np.zeros((len(used), 0))]
    for name in covariates:
        cells = used[COVARIATE_PREFIX + name]
        if numeric[name]:
            values = pd.to_numeric(cells.astype(str)).to_numpy(dtype=float)
            spread = float(values.std())
            if not spread > 0:
                return f"covariate {name!r} takes one value among the {len(used)} image(s) used"
            parts.append(((values - values.mean()) / spread)[:, None])
            continue
        text = cells.astype(str).to_numpy()
        values = sorted(set(text))
        if len(values) < 2:
            return f"covariate {name!r} takes one value among the {len(used)} image(s) used"
        for value in values:
            outcomes = y[text == value]
            if outcomes.all() or not outcomes.any():
                which = "only errors" if outcomes.all() else "no errors"
                return (
                    f"covariate {name!r} value {value!r} has {which} among its {len(outcomes)} "
                    "image(s) (separation); merge rare values or leave the covariate out"
                )
        parts.append(np.column_stack([(text == v).astype(float) for v in values[1:]]))
    return np.column_stack(parts)


def _fit(y: np.ndarray, design: np.ndarray) -> _Fit | str:
    """statsmodels' logistic maximum-likelihood fit (Newton–Raphson), or why it has none."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationError

    try:
        with warnings.catch_warnings():
            # Overflow on the way to separation and statsmodels' own convergence warnings:
            # what they mean is checked below and said in the reason.
            warnings.simplefilter("ignore")
            fit = sm.Logit(y.astype(float), design).fit(
                method="newton", maxiter=MAX_ITERATIONS, disp=False
            )
            bse = np.asarray(fit.bse, dtype=float)
    except PerfectSeparationError:
        return "the covariates separate errors from correct predictions"
    except (np.linalg.LinAlgError, ValueError, OverflowError) as exc:
        return f"the fit failed ({exc})"
    params = np.asarray(fit.params, dtype=float)
    if not fit.mle_retvals.get("converged", False):
        return (
            f"the fit did not converge in {MAX_ITERATIONS} steps (the covariates may separate "
            "errors from correct predictions)"
        )
    if not (np.isfinite(params).all() and np.isfinite(bse).all() and (bse > 0).all()):
        return "the fit's standard errors are not finite (a singular information matrix)"
    fitted = np.asarray(fit.predict(), dtype=float)
    if ((fitted < SEPARATED_PROBABILITY) | (fitted > 1 - SEPARATED_PROBABILITY)).any():
        return (
            "the covariates separate errors from correct predictions (fitted probabilities of "
            "0 or 1)"
        )
    return _Fit(params, bse, float(fit.llf))
