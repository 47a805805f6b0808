"""Read and validate a hypothesis spec (TOML); every error names the file, section and key.

The format is documented in :mod:`auditor.hypothesis`. What can be checked without the model and
the dataset is checked here (keys, types, kinds, probe and method names, region and probe
agreeing); class names and box columns are checked by the engine once they are known.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

from auditor.attribution import ATTRIBUTORS
from auditor.data import BOX_SUFFIX
from auditor.errors import ConfigError
from auditor.hypothesis.where import Where, parse_where
from auditor.localisation import ANATOMICAL_REGIONS
from probes.spec import ProbeSpecError, make_probe

RegionKind = Literal["attribution", "face_region", "box_column", "box", "whole_image"]
SuccessKind = Literal["becomes_label", "probability_drop", "prediction_changes"]
ControlKind = Literal["random_region", "spec"]
Expectation = Literal["supported", "not supported"]

REGION_KEYS: dict[str, tuple[str, ...]] = {
    "attribution": ("method", "area"),
    "face_region": ("name",),
    "box_column": ("column",),
    "box": ("box",),
    "whole_image": (),
}
SUCCESS_KEYS: dict[str, tuple[str, ...]] = {
    "becomes_label": (),
    "probability_drop": ("class", "at_least"),
    "prediction_changes": (),
}
CONTROL_KEYS: dict[str, tuple[str, ...]] = {"random_region": (), "spec": ("path",)}
EXPECTATIONS = ("supported", "not supported")
DEFAULT_AREA = 0.10
_TOP_KEYS = (
    "name", "description", "seed", "alpha", "expect",
    "images", "region", "probe", "success", "control",
)  # fmt: skip
_MISSING = object()


@dataclass(frozen=True)
class RegionSpec:
    """Where an edit goes; only the fields of its ``kind`` are set."""

    kind: RegionKind
    method: str | None = None  # attribution: None means the model's default method
    area: float = DEFAULT_AREA  # attribution: fraction of the image
    name: str | None = None  # face_region
    column: str | None = None  # box_column, e.g. "tie_box"
    box: tuple[float, float, float, float] | None = None  # box, fractions of width and height

    def describe(self) -> str:
        if self.kind == "attribution":
            method = self.method or "default"
            return f"the {method} attribution region ({100 * self.area:.0f} % of the image)"
        if self.kind == "face_region":
            return f"the {self.name} region of the face"
        if self.kind == "box_column":
            return f"the {self.column} box from labels.csv"
        if self.kind == "box":
            corners = ", ".join(f"{v:g}" for v in self.box or ())
            return f"the box [{corners}] (x0, y0, x1, y1 as fractions of the image)"
        return "the whole image"


@dataclass(frozen=True)
class EditSpec:
    """A probe applied to a region: the hypothesis's edit, or a spec control's."""

    region: RegionSpec
    probe: str  # the canonical probe spec: "blackout", "blackout(fill=inpaint)"

    def describe(self) -> str:
        return f"{self.probe} on {self.region.describe()}"


@dataclass(frozen=True)
class SuccessSpec:
    kind: SuccessKind
    class_name: str | None = None  # probability_drop
    at_least: float | None = None  # probability_drop

    def describe(self, label_column: str) -> str:
        """What a successful edit did, as a verb phrase: "lowered P(male) by at least 0.2"."""
        if self.kind == "becomes_label":
            return f"turned the prediction into the image's {label_column} label"
        if self.kind == "probability_drop":
            return f"lowered P({self.class_name}) by at least {self.at_least:g}"
        return "changed the predicted class"


@dataclass(frozen=True)
class ControlSpec:
    """``random_region``, or the edit of another spec file (``spec``) with its path."""

    kind: ControlKind
    path: Path | None = None
    edit: EditSpec | None = None

    def describe(self) -> str:
        if self.edit is None:
            return "the same edit on a random region of the same shape that does not overlap it"
        assert self.path is not None, "a spec control has its path"
        return f"{self.edit.describe()}, from {self.path.name}"


@dataclass(frozen=True)
class HypothesisSpec:
    path: Path
    name: str
    description: str
    where: Where | None
    edit: EditSpec
    success: SuccessSpec
    control: ControlSpec
    expect: Expectation | None
    seed: int
    alpha: float

    def to_json(self) -> dict[str, Any]:
        """The spec as read, with defaults filled in, for hypothesis.json."""
        return {
            "path": str(self.path),
            "name": self.name,
            "description": self.description,
            "where": self.where.text if self.where else None,
            "region": _region_json(self.edit.region),
            "probe": self.edit.probe,
            "success": {
                "kind": self.success.kind,
                "class": self.success.class_name,
                "at_least": self.success.at_least,
            },
            "control": {
                "kind": self.control.kind,
                "path": str(self.control.path) if self.control.path else None,
                "region": _region_json(self.control.edit.region) if self.control.edit else None,
                "probe": self.control.edit.probe if self.control.edit else None,
            },
            "expect": self.expect,
            "seed": self.seed,
            "alpha": self.alpha,
        }


def load_spec(path: Path) -> HypothesisSpec:
    """Read and validate the spec at ``path``.

    Raises:
        ConfigError: the file is missing or not TOML, or any key is missing or invalid; the
            message names the key and says what is allowed.
    """
    raw = _read_toml(path)
    top = _Table(raw, path, None, _TOP_KEYS)
    edit = _edit(raw, path)
    images = _Table(top.section("images", required=False), path, "images", ("where",))
    where_text = images.text("where", default=None)
    try:
        where = parse_where(where_text) if where_text else None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    success = _success(_Table(top.section("success"), path, "success"))
    control = _control(_Table(top.section("control"), path, "control"), path, edit)
    alpha = top.number("alpha", default=0.05, low=0.0, high=1.0)
    expect = top.choice("expect", EXPECTATIONS, default=None)
    return HypothesisSpec(
        path=path,
        name=top.text("name", default=path.stem) or path.stem,
        description=top.text("description", default="") or "",
        where=where,
        edit=edit,
        success=success,
        control=control,
        expect=cast("Expectation | None", expect),
        seed=top.integer("seed", default=0),
        alpha=alpha,
    )


def load_edit(path: Path) -> EditSpec:
    """The ``[region]`` and ``[probe]`` of a spec used as another's control.

    Other sections may be present (any spec can serve as a control) and are not used: the
    control runs on the hypothesis's images and is judged by the hypothesis's success criterion,
    so the two differ only in the edit.

    Raises:
        ConfigError: as :func:`load_spec`.
    """
    return _edit(_read_toml(path), path)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"spec file {path} does not exist")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def _edit(raw: dict[str, Any], path: Path) -> EditSpec:
    top = _Table(raw, path, None, None)
    region = _region(_Table(top.section("region"), path, "region"))
    probe_table = _Table(top.section("probe"), path, "probe", ("name",))
    spec = probe_table.text("name")
    assert spec is not None, "text without a default returns a value or raises"
    try:
        probe = make_probe(spec)  # the same specs as --probes: "blackout(fill=inpaint)"
    except ProbeSpecError as exc:
        probe_table.fail("name", f"is invalid: {exc}")
    takes_region = probe.region_from != "whole_image"
    if takes_region == (region.kind == "whole_image"):
        raise ConfigError(
            f"{path}: [probe] name = '{spec}' "
            + (
                "edits a region; give [region] a kind other than 'whole_image'"
                if takes_region
                else "edits the whole image; set [region] kind = 'whole_image'"
            )
        )
    return EditSpec(region, probe.name)


def _region(table: _Table) -> RegionSpec:
    kind = cast("RegionKind", table.kind(REGION_KEYS))
    if kind == "attribution":
        method = table.choice("method", tuple(ATTRIBUTORS), default=None)
        area = table.number("area", default=DEFAULT_AREA, low=0.0, high=0.5)
        return RegionSpec(kind, method=method, area=area)
    if kind == "face_region":
        return RegionSpec(kind, name=table.choice("name", ANATOMICAL_REGIONS))
    if kind == "box_column":
        column = table.text("column")
        if column is None or not column.endswith(BOX_SUFFIX) or column == "face_box":
            table.fail(
                "column",
                f"must name a labels.csv '<name>{BOX_SUFFIX}' column such as 'tie_box' "
                f"(not face_box), got {column!r}",
            )
        return RegionSpec(kind, column=column)
    if kind == "box":
        return RegionSpec(kind, box=table.box("box"))
    return RegionSpec(kind)


def _success(table: _Table) -> SuccessSpec:
    kind = cast("SuccessKind", table.kind(SUCCESS_KEYS))
    if kind == "probability_drop":
        return SuccessSpec(
            kind,
            class_name=table.text("class"),
            at_least=table.number("at_least", low=0.0, high=1.0),
        )
    return SuccessSpec(kind)


def _control(table: _Table, path: Path, edit: EditSpec) -> ControlSpec:
    kind = cast("ControlKind", table.kind(CONTROL_KEYS))
    if kind == "random_region":
        if edit.region.kind == "whole_image":
            table.fail(
                "kind",
                "'random_region' needs a hypothesis region to move; a whole-image edit needs "
                "kind = 'spec' with the path of a spec whose edit is the control",
            )
        return ControlSpec(kind)
    relative = table.text("path")
    assert relative is not None, "text without a default returns a value or raises"
    other = (path.parent / relative).resolve()
    if other == path.resolve():
        table.fail("path", "points at this spec itself; a control must be a different edit")
    if not other.is_file():
        table.fail("path", f"'{relative}' does not exist (paths are relative to this spec)")
    return ControlSpec(kind, path=other, edit=load_edit(other))


def _region_json(region: RegionSpec) -> dict[str, Any]:
    keys = ("kind", *REGION_KEYS[region.kind])
    return {k: getattr(region, k) for k in keys}


class _Table:
    """One TOML table with typed getters whose errors name ``[section] key``.

    ``allowed`` lists the keys the table may hold; None leaves them to :meth:`kind`, which
    allows the keys of the chosen kind (or to nobody, for the top level of a control spec).
    """

    def __init__(
        self,
        data: Any,
        path: Path,
        section: str | None,
        allowed: Sequence[str] | None = None,
    ) -> None:
        self.path, self.title = path, section
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [{section}] must be a table, got {data!r}")
        self.data: dict[str, Any] = data
        if allowed is not None:
            self._only(allowed)

    def _only(self, allowed: Sequence[str], context: str = "") -> None:
        unknown = [k for k in self.data if k not in allowed]
        if unknown:
            where = f"[{self.title}]" if self.title else "the spec"
            close = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"{self.path}: {where} has unknown key '{unknown[0]}'{context}; {hint}"
                f"(allowed: {', '.join(allowed) or 'none'})"
            )

    def fail(self, key: str, why: str) -> NoReturn:
        name = f"[{self.title}] {key}" if self.title else key
        raise ConfigError(f"{self.path}: {name} {why}")

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            self.fail(key, "is missing")
        return default

    def section(self, key: str, required: bool = True) -> Any:
        """A sub-table of this one; an absent optional one reads as empty."""
        if key not in self.data and required:
            raise ConfigError(f"{self.path}: the [{key}] table is missing")
        return self.data.get(key, {})

    def kind(self, kinds: dict[str, tuple[str, ...]]) -> str:
        kind = self.choice("kind", tuple(kinds))
        assert kind is not None, "choice without a default returns a value or raises"
        self._only(("kind", *kinds[kind]), f" for kind '{kind}'")
        return kind

    def text(self, key: str, default: Any = _MISSING) -> str | None:
        value = self._get(key, default)
        if value is not None and not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        return cast("str | None", value)

    def choice(self, key: str, options: Sequence[str], default: Any = _MISSING) -> str | None:
        value = self.text(key, default)
        if value is not None and value not in options:
            close = difflib.get_close_matches(value, options, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            self.fail(key, f"is '{value}'; {hint}(one of: {', '.join(options)})")
        return value

    def number(self, key: str, default: Any = _MISSING, *, low: float, high: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < high:
            self.fail(key, f"must be a number between {low:g} and {high:g}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(key, f"must be a non-negative integer, got {value!r}")
        return int(value)

    def box(self, key: str) -> tuple[float, float, float, float]:
        value = self._get(key, _MISSING)
        numbers = (
            isinstance(value, list)
            and len(value) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        )
        if not numbers or not (0 <= value[0] < value[2] <= 1 and 0 <= value[1] < value[3] <= 1):
            self.fail(
                key,
                f"must be [x0, y0, x1, y1], fractions of the image with 0 <= x0 < x1 <= 1 and "
                f"0 <= y0 < y1 <= 1, got {value!r}",
            )
        x0, y0, x1, y1 = (float(v) for v in value)
        return (x0, y0, x1, y1)
