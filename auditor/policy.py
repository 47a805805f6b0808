"""Release gating: a policy of thresholds, judged on a run's stored results.

A policy lives in ``audit.toml`` (keys at the top level), in ``[tool.audit]`` of a
pyproject.toml, or on the command line as ``--fail-on`` expressions such as
``flip_rate_gap[blackout] > 0.1`` (and ``--require``, which wins over the file's). Keys:

- ``max_error_rate_gap``: the largest allowed difference in error rate between a subgroup and
  the subgroup with the lowest error rate, in each grouping (gender label, race label, …).
- ``max_flip_rate_gap``: the same for each probe's flip rate.
- ``max_excess_flip_rate_gap``: the same for each region probe's excess flip rate (guided minus
  placebo on the same images, :mod:`auditor.excess`): reliance on the attributed region, net of
  what the edit does anywhere. Under ``require = "equivalence"`` it passes when the simultaneous
  interval of the largest excess gap lies within the maximum.
- ``max_flip_rate``: the largest allowed flip rate of any subgroup under each probe.
- ``require``: what the evidence must show, one of

  - ``"significance"`` (the default): a gap fails only when the grouping's test across
    subgroups is also significant after Holm correction, and a flip rate only when its whole
    interval (at 1 − α) lies above the maximum; so a gap that noise alone could make never
    fails a release. A gap that passes this way may still be real but too small to see at the
    run's sample sizes: the message says how large a gap could have gone unseen.
  - ``"estimate"``: point estimates, no test: a gap or rate above the maximum fails.
  - ``"equivalence"``: a gate passes only for the right reason, the data ruling a violation
    out. A gap gate passes when the grouping's equivalence bound (two one-sided tests on every
    pair of tested subgroups, simultaneous over the pairs: :mod:`auditor.power`) lies below
    the maximum; a flip rate when its whole interval (the run's, at 1 − α) lies below it; a
    regression when the upper end of B − A's interval (at 1 − α) does. Each still fails as
    under ``"significance"`` (a significant gap above the maximum, an interval wholly above
    it), and is "insufficient data" in between, with the bound and the minimum detectable gap
    in its message. Combine it with ``fail_on_insufficient_data = true`` so that a gate the
    data cannot settle blocks a release.

  ``require_significance = true`` / ``false``, the older spelling, still reads as
  ``require = "significance"`` / ``"estimate"``; giving both keys is refused.
- ``min_group_size`` and ``alpha``: the statistics are recomputed from ``results.parquet`` with
  these (default: the run's own). Smaller subgroups are judged "insufficient data": listed in
  every output, never passed silently.
- ``fail_on_insufficient_data``: true fails the policy on any "insufficient data"; false never
  does. Unset (the default), a policy passes with some subgroups unjudged but fails when no gate
  could be judged at all (nothing audited, or no subgroup large enough): a gate never passes on
  nothing.
- ``groupings``: which groupings are gated (default: all, including intersections).
- ``max_regression`` (``audit compare`` only): the largest allowed increase of the candidate's
  (run B's) error rate or flip rate over the baseline's (run A's) in any subgroup, on the same
  images. With ``require = "significance"`` it fails only where B is worse after Holm
  correction, so ``max_regression = 0`` reads "fail if the candidate is worse than the baseline
  for anyone".

The probe thresholds take one number for every probe, or a table keyed by probe
(``blackout``), by arm (``blackout@gradcam``) or ``default``; the most specific key wins and a
probe matched by none is not gated. ``max_regression`` takes the same keys, and ``error_rate``
for the error rate.

Each gate is judged per grouping and subgroup, so a CI dashboard shows which subgroup failed
which gate and by how much. Judging needs no model: ``audit gate RUN_DIR`` re-judges a stored run
and gives the same verdict as ``audit run --policy``, because both call :func:`judge_run`; one
policy file can hold the keys of both ``audit run`` and ``audit compare``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from auditor.compare import Comparison, ComparisonRow
from auditor.errors import ConfigError
from auditor.excess import ExcessTest
from auditor.power import unseen_text
from auditor.records import PLACEBO
from auditor.stats import GapTest, GroupRate, Statistics, arm, compute_statistics
from auditor.store import ALL, RunStore

Outcome = Literal["pass", "fail", "insufficient data"]
PASS: Outcome = "pass"
FAIL: Outcome = "fail"
INSUFFICIENT: Outcome = "insufficient data"
Require = Literal["significance", "estimate", "equivalence"]  # what a pass or a fail needs
SIGNIFICANCE: Require = "significance"
ESTIMATE: Require = "estimate"
EQUIVALENCE: Require = "equivalence"
REQUIRE: tuple[Require, ...] = (SIGNIFICANCE, ESTIMATE, EQUIVALENCE)
LEGACY_REQUIRE = "require_significance"  # true: "significance", false: "estimate"
POLICY_FILE = "audit.toml"
PYPROJECT = "pyproject.toml"
DEFAULT_KEY = "default"
Command = Literal["run", "compare"]
THRESHOLD_KEYS: dict[Command, tuple[str, ...]] = {
    "run": ("max_error_rate_gap", "max_flip_rate_gap", "max_flip_rate", "max_excess_flip_rate_gap"),
    "compare": ("max_regression",),
}
# The keys that take one number or a table keyed by probe, arm or DEFAULT_KEY.
PROBE_THRESHOLDS = (
    "max_flip_rate_gap", "max_flip_rate", "max_excess_flip_rate_gap", "max_regression",
)  # fmt: skip
ERROR_RATE_KEY = "error_rate"  # max_regression's key for the error rate
_FAIL_ON = re.compile(
    r"^\s*(?P<metric>error_rate_gap|excess_flip_rate_gap|flip_rate_gap|flip_rate|regression)\s*"
    r"(?:\[\s*(?P<probe>[^\]\s]+)\s*\])?\s*>\s*(?P<value>[0-9]*\.?[0-9]+)\s*$"
)

Thresholds = Mapping[str, float]  # probe, arm or DEFAULT_KEY → maximum


@dataclass(frozen=True)
class Policy:
    """Thresholds and how to judge them; None everywhere means "not gated"."""

    max_error_rate_gap: float | None = None
    max_flip_rate_gap: Thresholds = field(default_factory=dict)
    max_excess_flip_rate_gap: Thresholds = field(default_factory=dict)
    max_flip_rate: Thresholds = field(default_factory=dict)
    max_regression: Thresholds = field(default_factory=dict)
    require: Require = SIGNIFICANCE
    min_group_size: int | None = None
    alpha: float | None = None
    groupings: tuple[str, ...] | None = None
    fail_on_insufficient_data: bool | None = None  # None: only when nothing could be judged
    source: str = "command line"  # where the policy came from, for the outputs

    def gates(self, command: Command) -> bool:
        """Whether any threshold of ``command`` is set."""
        return any(getattr(self, key) not in (None, {}) for key in THRESHOLD_KEYS[command])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in PROBE_THRESHOLDS:
            data[key] = dict(getattr(self, key))
        return data


@dataclass(frozen=True)
class GateResult:
    """One gate judged for one subgroup: what was measured, against what, and the outcome."""

    gate: str  # e.g. "flip_rate_gap[blackout@gradcam]"
    grouping: str
    group: str
    outcome: Outcome
    value: float | None
    maximum: float
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    policy: Policy
    results: list[GateResult]

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if r.outcome == FAIL]

    @property
    def insufficient(self) -> list[GateResult]:
        return [r for r in self.results if r.outcome == INSUFFICIENT]

    @property
    def nothing_judged(self) -> bool:
        """No gate passed or failed: every one lacked the data (or none had a test to judge)."""
        return all(r.outcome == INSUFFICIENT for r in self.results)

    @property
    def holds(self) -> bool:
        return not any(self.counts_against(r) for r in self.results)

    def counts_against(self, result: GateResult) -> bool:
        """Whether ``result`` fails the policy: a failed gate, or insufficient data where the
        policy says so (by default: when no gate at all could be judged)."""
        if result.outcome == FAIL:
            return True
        if result.outcome != INSUFFICIENT:
            return False
        strict = self.policy.fail_on_insufficient_data
        return self.nothing_judged if strict is None else strict

    def to_json(self) -> dict[str, Any]:
        return {
            "holds": self.holds,
            "policy": self.policy.to_json(),
            "counts": {
                outcome: sum(r.outcome == outcome for r in self.results)
                for outcome in (PASS, FAIL, INSUFFICIENT)
            },
            "results": [r.to_json() for r in self.results],
        }


# --- reading a policy ------------------------------------------------------------------------


def load_policy(
    path: Path | None,
    fail_on: Sequence[str] = (),
    command: Command = "run",
    require: str | None = None,
) -> Policy | None:
    """The policy for ``command`` from ``path`` (or found in the working directory), with
    ``fail_on`` and ``require`` (``--require``) on top.

    Without ``path``, ``audit.toml`` and then ``pyproject.toml`` with a ``[tool.audit]`` table
    are looked for in the current directory, as black and coverage.py find their settings.
    Returns None when there is no policy anywhere, or when the policy found there sets no
    threshold of ``command`` (it is then another command's policy).

    Raises:
        ConfigError: unreadable file, unknown key, a value of the wrong type, a bad expression,
            an unknown ``require``, or a policy given explicitly that sets no threshold of
            ``command``.
    """
    found = path or _discover(Path.cwd())
    policy = _read_file(found) if found else None
    if fail_on:
        policy = with_expressions(policy or Policy(), fail_on)
    if require is not None:
        policy = policy or Policy()
        checked = _checked_value("require", require, "--require")
        policy = replace(policy, require=checked, source=_with_option(policy, "--require"))
    if policy is None or policy.gates(command):
        return policy
    if path is None and not fail_on and require is None:
        return None
    raise ConfigError(
        f"the policy from {policy.source} sets no threshold for audit {command}; give at least "
        f"one of {', '.join(THRESHOLD_KEYS[command])}"
    )


def parse_policy(table: Mapping[str, Any], source: str) -> Policy:
    """A Policy from a TOML table, every key and type checked."""
    known = {f for f in Policy.__dataclass_fields__ if f != "source"}
    unknown = sorted(set(table) - known - {LEGACY_REQUIRE})
    if unknown:
        raise ConfigError(
            f"{source}: unknown policy key(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    values: dict[str, Any] = {"source": source}
    for key, value in _require_spelt_once(table, source).items():
        values[key] = _checked_value(key, value, source)
    return Policy(**values)


def _require_spelt_once(table: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """``table`` with ``require_significance``, the older spelling, read as ``require``;
    refused beside ``require``, since the two could disagree."""
    if LEGACY_REQUIRE not in table:
        return table
    if "require" in table:
        raise ConfigError(
            f"{source}: give require or {LEGACY_REQUIRE}, not both ({LEGACY_REQUIRE} = true is "
            f'require = "{SIGNIFICANCE}", false is require = "{ESTIMATE}")'
        )
    legacy = _checked_value(LEGACY_REQUIRE, table[LEGACY_REQUIRE], source)
    rest = {key: value for key, value in table.items() if key != LEGACY_REQUIRE}
    return {**rest, "require": SIGNIFICANCE if legacy else ESTIMATE}


def with_expressions(policy: Policy, expressions: Sequence[str]) -> Policy:
    """``policy`` with each ``--fail-on`` expression's threshold set (it wins over the file)."""
    changes: dict[str, Any] = {}
    for expression in expressions:
        match = _FAIL_ON.match(expression)
        if not match:
            raise ConfigError(
                f"--fail-on '{expression}' is not understood; write METRIC[PROBE] > NUMBER with "
                "METRIC one of error_rate_gap, flip_rate_gap, excess_flip_rate_gap, flip_rate "
                "(audit run and gate) or "
                "regression (audit compare), e.g. 'flip_rate_gap[blackout] > 0.1'"
            )
        key = f"max_{match['metric']}"
        value = _fraction(float(match["value"]), key, "--fail-on")
        if key == "max_error_rate_gap":
            if match["probe"]:
                raise ConfigError("--fail-on error_rate_gap takes no [probe]")
            changes[key] = value
        else:
            current = dict(changes.get(key, getattr(policy, key)))
            current[match["probe"] or DEFAULT_KEY] = value
            changes[key] = current
    return replace(policy, **changes, source=_with_option(policy, "--fail-on"))


def _with_option(policy: Policy, option: str) -> str:
    """Where a policy came from once a command-line option changed it."""
    return policy.source if policy.source == "command line" else f"{policy.source} + {option}"


def _discover(directory: Path) -> Path | None:
    if (directory / POLICY_FILE).is_file():
        return directory / POLICY_FILE
    pyproject = directory / PYPROJECT
    if pyproject.is_file() and "audit" in _toml(pyproject).get("tool", {}):
        return pyproject
    return None


def _read_file(path: Path) -> Policy:
    data = _toml(path)
    if path.name == PYPROJECT:
        table = data.get("tool", {}).get("audit")
        if not isinstance(table, dict):
            raise ConfigError(f"{path} has no [tool.audit] table")
        return parse_policy(table, f"{path} [tool.audit]")
    return parse_policy(data, str(path))


def _toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {path} is not valid TOML: {exc}") from exc


def _checked_value(key: str, value: Any, source: str) -> Any:
    where = f"{source}: {key}"
    if key == "max_error_rate_gap":
        return _fraction(value, key, source)
    if key in PROBE_THRESHOLDS:
        if isinstance(value, dict):
            return {str(k): _fraction(v, f"{key}.{k}", source) for k, v in value.items()}
        return {DEFAULT_KEY: _fraction(value, key, source)}
    if key in (LEGACY_REQUIRE, "fail_on_insufficient_data"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if key == "require":
        if value not in REQUIRE:
            allowed = ", ".join(f'"{r}"' for r in REQUIRE)
            raise ConfigError(f"{where} must be one of {allowed}, got {value!r}")
        return value
    if key == "min_group_size":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where} must be a whole number >= 1, got {value!r}")
        return value
    if key == "alpha":
        if not isinstance(value, float | int) or not 0 < value < 1:
            raise ConfigError(f"{where} must be a number between 0 and 1, got {value!r}")
        return float(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of grouping names, got {value!r}")
    return tuple(value)


def _fraction(value: Any, key: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, float | int) or not 0 <= value <= 1:
        raise ConfigError(f"{source}: {key} must be a rate between 0 and 1, got {value!r}")
    return float(value)


# --- judging a run ---------------------------------------------------------------------------


def judge_run(run_dir: Path, policy: Policy) -> Verdict:
    """Judge a finished run against ``policy`` from its stored results; no model needed.

    The statistics are recomputed from ``results.parquet`` with the policy's alpha and minimum
    group size (the run's own where the policy sets none), seeded as the run was, so that they
    equal the run's summary.json when the settings agree.
    """
    run = RunStore.open(run_dir)
    summary = run.summary()
    config = summary.config
    statistics = compute_statistics(
        run.records(),
        alpha=policy.alpha or config.alpha,
        min_group_size=policy.min_group_size or config.min_group_size,
        seed=config.seed,
        mcnemar=config.mcnemar,
        covers={p.name: p.cover for p in summary.probes},
    )
    _check_groupings(policy, statistics)
    return Verdict(policy, judge(statistics, policy))


def judge(statistics: Statistics, policy: Policy) -> list[GateResult]:
    """Every gate of ``policy`` for every gated grouping and subgroup, in a stable order."""
    gated = policy.groupings or statistics.groupings
    minimum_n = statistics.min_group_size
    results: list[GateResult] = []
    if policy.max_error_rate_gap is not None:
        for test in statistics.error_gaps:
            if test.grouping in gated:
                results += _gap_results(
                    "error_rate_gap", test, policy.max_error_rate_gap, policy, minimum_n
                )
    for test in statistics.flip_gaps:
        if test.grouping not in gated or test.region_source == PLACEBO:
            continue
        assert test.probe is not None
        name = arm(test.probe, test.method)
        gap_maximum = threshold(policy.max_flip_rate_gap, test.probe, name)
        if gap_maximum is not None:
            results += _gap_results(f"flip_rate_gap[{name}]", test, gap_maximum, policy, minimum_n)
        rate_maximum = threshold(policy.max_flip_rate, test.probe, name)
        if rate_maximum is not None:
            results += [
                _rate_result(
                    f"flip_rate[{name}]", test.grouping, g, rate_maximum, policy, minimum_n
                )
                for g in test.groups
            ]
    for excess in statistics.excess:
        name = arm(excess.probe, excess.method)
        maximum = threshold(policy.max_excess_flip_rate_gap, excess.probe, name)
        if excess.grouping in gated and maximum is not None:
            results += _excess_results(f"excess_flip_rate_gap[{name}]", excess, maximum, policy)
    return results or _unjudged(policy, statistics)


def _excess_results(
    gate: str, test: ExcessTest, maximum: float, policy: Policy
) -> list[GateResult]:
    """One result per subgroup: its excess flip rate's distance above the lowest tested one's.

    Under equivalence the bound is the larger end of the largest gap's simultaneous interval.
    """
    tested = [g for g in test.groups if g.tested and g.excess is not None]
    if test.p_value is None or test.effect_ci is None or len(tested) < 2:
        why = test.reason or "fewer than two subgroups to compare"
        return [
            _insufficient(gate, test.grouping, g.group, g.excess, maximum, why) for g in test.groups
        ]
    lowest = min(tested, key=lambda g: g.excess or 0.0)
    bound = max(abs(end) for end in test.effect_ci)
    p = "p < 0.001" if (test.p_adjusted or 0) < 0.001 else f"p = {test.p_adjusted:.3g}"
    results = []
    for group in test.groups:
        if group not in tested:
            why = f"{group.n_pairs} pair(s), fewer than the minimum group size"
            results.append(
                _insufficient(gate, test.grouping, group.group, group.excess, maximum, why)
            )
            continue
        gap = (group.excess or 0.0) - (lowest.excess or 0.0)
        outcome = _outcome(policy.require, gap > maximum, test.significant, bound < maximum)
        message = (
            f"{gate} for {test.grouping} label '{group.group}': excess {_pct(group.excess or 0.0)}"
            f" vs {_pct(lowest.excess or 0.0)} for '{lowest.group}' (n = {group.n_pairs}, "
            f"{lowest.n_pairs} pairs), gap {_pct(gap)}, maximum {_pct(maximum)}; {test.test}, "
            f"{p} after Holm ({'significant' if test.significant else 'not significant'})"
        )
        if outcome == INSUFFICIENT:
            message += (
                f"; insufficient data ({_said(policy.require)}): the data cannot rule out a "
                f"gap of {_points(bound)}"
            )
        results.append(GateResult(gate, test.grouping, group.group, outcome, gap, maximum, message))
    return results


def _unjudged(policy: Policy, statistics: Statistics) -> list[GateResult]:
    """One "insufficient data" result per gate of ``policy`` when no test exists to judge it
    (nothing was audited, or no subgroup columns): the verdict then lists them, not nothing."""
    audited = statistics.overall_error.n
    why = f"no subgroup test to judge ({audited} image(s) audited)"
    gates = [("error_rate_gap", policy.max_error_rate_gap)] if policy.max_error_rate_gap else []
    for name, thresholds in (
        ("flip_rate_gap", policy.max_flip_rate_gap),
        ("flip_rate", policy.max_flip_rate),
        ("excess_flip_rate_gap", policy.max_excess_flip_rate_gap),
    ):
        gates += [
            (name if key == DEFAULT_KEY else f"{name}[{key}]", maximum)
            for key, maximum in thresholds.items()
        ]
    return [
        GateResult(
            gate,
            ALL,
            ALL,
            INSUFFICIENT,
            None,
            maximum,
            f"{gate}: insufficient data ({why}); not judged",
        )
        for gate, maximum in gates
    ]


def judge_comparison(comparison: Comparison, policy: Policy) -> Verdict:
    """Judge B against A with ``max_regression``: one result per compared rate and subgroup.

    The comparison must have been made with the policy's alpha and minimum group size (the CLI
    passes them to :func:`auditor.compare.compare_runs`), so "significant" means the same here.
    """
    gated = policy.groupings or comparison.groupings
    unknown = sorted(set(gated) - set(comparison.groupings))
    if unknown:
        raise ConfigError(
            f"{policy.source}: groupings {', '.join(unknown)} are not in this comparison "
            f"(it has: {', '.join(comparison.groupings)})"
        )
    results = []
    for row in comparison.rows:
        name = row.arm or ERROR_RATE_KEY
        maximum = threshold(policy.max_regression, name.split("@")[0], name)
        if row.grouping in gated and maximum is not None:
            results.append(_regression_result(row, maximum, policy, comparison.min_group_size))
    return Verdict(policy, results)


def _regression_result(
    row: ComparisonRow, maximum: float, policy: Policy, minimum_n: int
) -> GateResult:
    """B's rate minus A's against a maximum: B must be worse after Holm correction to fail, and
    under equivalence the upper end of its interval must lie below the maximum to pass."""
    gate = f"regression[{row.arm or ERROR_RATE_KEY}]"
    what = f"{gate} for {row.grouping} label '{row.group}'"
    if row.insufficient:
        message = (
            f"{what}: insufficient data (n = {row.n} < {minimum_n}, the minimum group size)"
            "; not judged"
        )
        return GateResult(gate, row.grouping, row.group, INSUFFICIENT, None, maximum, message)
    exceeds = row.difference > maximum
    upper = row.ci[1]
    outcome = _outcome(
        policy.require, exceeds, row.significant and row.worse == "B", upper < maximum
    )
    p = "not testable" if row.p_adjusted is None else f"{row.test} p = {row.p_adjusted:.3g}"
    message = (
        f"{what}: B {_pct(row.rate_b)} vs A {_pct(row.rate_a)} on the same {row.n} images, "
        f"B − A {_pct(row.difference)} ({_pct(row.ci[0])} to {_pct(upper)}), maximum "
        f"{_pct(maximum)}; {p} after Holm"
    )
    if policy.require == SIGNIFICANCE and exceeds and outcome == PASS:
        message += f"; B is not significantly worse, so it does not fail ({_said(SIGNIFICANCE)})"
    elif policy.require == EQUIVALENCE and outcome == PASS:
        message += f"; the interval's upper end lies below the maximum ({_said(EQUIVALENCE)})"
    elif outcome == INSUFFICIENT:
        message += (
            f"; insufficient data ({_said(EQUIVALENCE)}): the data cannot rule out B being "
            f"{_points(upper)} worse than A"
        )
    return GateResult(gate, row.grouping, row.group, outcome, row.difference, maximum, message)


def threshold(thresholds: Thresholds, probe: str, probe_arm: str) -> float | None:
    """The most specific maximum for an arm: the arm itself, then its probe, then the default."""
    for key in (probe_arm, probe, DEFAULT_KEY):
        if key in thresholds:
            return thresholds[key]
    return None


def _gap_results(
    gate: str, test: GapTest, maximum: float, policy: Policy, minimum_n: int
) -> list[GateResult]:
    """One result per subgroup: its rate's distance above the lowest tested subgroup's rate."""
    tested = [g for g in test.groups if g.tested]
    if len(tested) < 2:
        return [
            _insufficient(
                gate,
                test.grouping,
                g.group,
                g.rate.rate,
                maximum,
                "fewer than two subgroups to compare",
            )
            for g in test.groups
        ]
    lowest = min(tested, key=lambda g: _rate(g))
    results = []
    for group in test.groups:
        if not group.tested:
            why = _too_small(group, minimum_n)
            results.append(
                _insufficient(gate, test.grouping, group.group, group.rate.rate, maximum, why)
            )
            continue
        gap = _rate(group) - _rate(lowest)
        outcome, why = _gap_outcome(test, gap, maximum, policy.require)
        figures = (
            f"{gate} for {test.grouping} label '{group.group}': {_pct(_rate(group))} vs "
            f"{_pct(_rate(lowest))} for '{lowest.group}' (n = {group.rate.n}, {lowest.rate.n}), "
            f"gap {_pct(gap)}, maximum {_pct(maximum)}; {_p_text(test)}{why}"
        )
        results.append(GateResult(gate, test.grouping, group.group, outcome, gap, maximum, figures))
    return results


def _gap_outcome(
    test: GapTest, gap: float, maximum: float, require: Require
) -> tuple[Outcome, str]:
    """One subgroup's gap judged under ``require``, and what the message adds to say why.

    Where the test found no significant gap, the message says how large a gap could have gone
    unseen (its minimum detectable gap); under equivalence it gives the grouping's equivalence
    bound, which decides the pass.
    """
    assert test.min_detectable_gap is not None and test.equivalence_bound is not None, (
        f"{test.id}: run_gap_test fills both for two or more tested subgroups"
    )
    exceeds, bound = gap > maximum, test.equivalence_bound
    outcome = _outcome(require, exceeds, test.significant, bound < maximum)
    # What a test that found nothing could have missed; said only where it found nothing.
    unseen = "" if test.significant else f"; {unseen_text(test.min_detectable_gap)}"
    if require == SIGNIFICANCE:
        spared = exceeds and outcome == PASS
        why = f"; the gap is not significant, so it does not fail ({_said(SIGNIFICANCE)})"
        return outcome, (why if spared else "") + unseen
    if require == EQUIVALENCE and outcome == PASS:
        return outcome, (
            f"; the data rule out a gap of {_points(bound)} or more between any two tested "
            f"subgroups ({_said(EQUIVALENCE)})"
        )
    if outcome == INSUFFICIENT:
        return outcome, (
            f"; insufficient data ({_said(EQUIVALENCE)}): the data cannot rule out a gap of "
            f"{_points(bound)}{unseen}"
        )
    return outcome, ""


def _outcome(require: Require, exceeds: bool, shown_above: bool, shown_below: bool) -> Outcome:
    """The rule every gate follows. ``exceeds``: the estimate is above the maximum;
    ``shown_above``: the test shows a violation (a significant gap or regression, an interval
    wholly above the maximum); ``shown_below``: the data rule one out (the equivalence bound or
    the interval's upper end below the maximum)."""
    if require == ESTIMATE:
        return FAIL if exceeds else PASS
    if exceeds and shown_above:
        return FAIL
    if require == SIGNIFICANCE or shown_below:
        return PASS
    return INSUFFICIENT


def _rate_result(
    gate: str, grouping: str, group: GroupRate, maximum: float, policy: Policy, minimum_n: int
) -> GateResult:
    """A subgroup's rate against a maximum: its whole interval must lie above it to fail, and
    under equivalence below it to pass."""
    if not group.tested:
        why = _too_small(group, minimum_n)
        return _insufficient(gate, grouping, group.group, group.rate.rate, maximum, why)
    rate = group.rate
    point, low, high = rate.rate or 0.0, rate.ci_low or 0.0, rate.ci_high or 0.0
    outcome = _outcome(policy.require, point > maximum, low > maximum, high < maximum)
    message = (
        f"{gate} for {grouping} label '{group.group}': {_pct(point)} "
        f"({_pct(low)}–{_pct(high)}, {rate.k} of {rate.n}), maximum {_pct(maximum)}"
    )
    if policy.require == SIGNIFICANCE and point > maximum and outcome == PASS:
        message += "; the interval reaches below the maximum, so it does not fail"
    elif policy.require == EQUIVALENCE and outcome == PASS:
        message += f"; the whole interval lies below the maximum ({_said(EQUIVALENCE)})"
    elif outcome == INSUFFICIENT:
        message += (
            f"; insufficient data ({_said(EQUIVALENCE)}): the interval reaches above the "
            f"maximum, so the data cannot rule out a rate of {_pct(high)}"
        )
    return GateResult(gate, grouping, group.group, outcome, rate.rate, maximum, message)


def _insufficient(
    gate: str, grouping: str, group: str, value: float | None, maximum: float, why: str
) -> GateResult:
    """A subgroup the gate could not judge, and why."""
    return GateResult(
        gate,
        grouping,
        group,
        INSUFFICIENT,
        value,
        maximum,
        f"{gate} for {grouping} label '{group}': insufficient data ({why}); not judged",
    )


def _check_groupings(policy: Policy, statistics: Statistics) -> None:
    unknown = sorted(set(policy.groupings or ()) - set(statistics.groupings))
    if unknown:
        raise ConfigError(
            f"{policy.source}: groupings {', '.join(unknown)} are not in this run "
            f"(it has: {', '.join(statistics.groupings)})"
        )


def _too_small(group: GroupRate, minimum_n: int) -> str:
    return f"n = {group.rate.n} < {minimum_n}, the minimum group size"


def _rate(group: GroupRate) -> float:
    return group.rate.rate or 0.0


def _p_text(test: GapTest) -> str:
    if test.p_adjusted is None:
        return "not testable"
    p = "p < 0.001" if test.p_adjusted < 0.001 else f"p = {test.p_adjusted:.3g}"
    verdict = "significant" if test.significant else "not significant"
    return f"{test.test} across subgroups, {p} after Holm ({verdict})"


def _said(require: Require) -> str:
    """The policy setting a message invokes, as it is written in audit.toml."""
    return f'require = "{require}"'


def _points(value: float) -> str:
    """A difference of rates in percentage points: "7.9 points"."""
    return f"{100 * value:.1f} points"


def _pct(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{100 * value:.1f} %"
