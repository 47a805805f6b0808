"""Probe specs, as ``--probes`` and hypothesis specs name probes: ``name`` or
``name(key=value, ...)``, e.g. ``blackout(fill=inpaint),blur(sigma=8)``.

Values are coerced to the type of the probe's ``__init__`` argument (int, float, str, or one
of a ``Literal``'s choices), so a typo is refused before any image is read. Errors are
:class:`ProbeSpecError`; the engine reports them as configuration errors.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from collections.abc import Sequence
from typing import Any, Literal

from probes import PROBES
from probes.base import ParamValue, Probe

_SPEC = re.compile(r"\s*(?P<name>\w+)\s*(?:\((?P<args>[^()]*)\))?\s*")


class ProbeSpecError(ValueError):
    """A spec that names no probe, an argument its probe lacks, or a value it cannot take."""


def split_specs(text: str) -> tuple[str, ...]:
    """``text`` split on the commas outside parentheses, so that a probe's own arguments
    (``blackout(fill=blur,sigma=4),flip``) stay together; blank entries are dropped."""
    parts: list[str] = []
    depth = start = 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            raise ProbeSpecError(f"{text!r} closes a parenthesis it never opened")
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth:
        raise ProbeSpecError(f"{text!r} leaves a parenthesis open")
    parts.append(text[start:])
    return tuple(part.strip() for part in parts if part.strip())


def make_probe(spec: str) -> Probe:
    """The probe that ``spec`` describes; its ``name`` is the spec's canonical form.

    Raises:
        ProbeSpecError: the spec is malformed, names an unknown probe or argument, or gives a
            value of the wrong type or outside the argument's choices.
    """
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ProbeSpecError(f"probe {spec!r} should be written name or name(key=value, ...)")
    name = match["name"]
    if name not in PROBES:
        close = difflib.get_close_matches(name, PROBES, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ProbeSpecError(f"unknown probe '{name}'; {hint}(known: {', '.join(PROBES)})")
    kind = PROBES[name]
    arguments = _arguments(kind, match["args"] or "", spec)
    try:
        return kind(**arguments)
    except ValueError as exc:  # a value of the right type that the probe refuses
        raise ProbeSpecError(f"probe {spec}: {exc}") from exc


def make_probes(specs: Sequence[str]) -> list[Probe]:
    """The probes of ``specs`` in order, refusing two that are the same probe however spelt
    (``blackout`` and ``blackout(fill=black)``): their results would share one name."""
    probes: list[Probe] = []
    spelt: dict[str, str] = {}
    for spec in specs:
        probe = make_probe(spec)
        if probe.name in spelt:
            other = spelt[probe.name]
            as_ = f" (as '{other}' and '{spec}')" if other != spec else ""
            raise ProbeSpecError(f"probe {probe.name} is listed twice{as_}; list it once")
        spelt[probe.name] = spec
        probes.append(probe)
    return probes


def _arguments(kind: type[Probe], text: str, spec: str) -> dict[str, ParamValue]:
    """The ``key=value`` pairs of ``text`` as ``kind``'s keyword arguments."""
    defaults = kind.defaults()
    hints = typing.get_type_hints(kind.__init__)
    arguments: dict[str, ParamValue] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, equals, value = (part.strip() for part in item.partition("="))
        if not (equals and key and value):
            raise ProbeSpecError(f"probe {spec}: '{item}' should be written key=value")
        if key not in defaults:
            known = f"its arguments: {', '.join(defaults)}" if defaults else "it takes none"
            raise ProbeSpecError(f"probe {spec}: {kind.name} has no argument '{key}' ({known})")
        if key in arguments:
            raise ProbeSpecError(f"probe {spec}: '{key}' is given twice")
        arguments[key] = _coerce(hints[key], value, f"probe {spec}: {key}")
    return arguments


def _coerce(hint: Any, text: str, where: str) -> ParamValue:
    """``text`` as a value of the argument type ``hint``; ``where`` names it in errors."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if text not in choices:
            raise ProbeSpecError(f"{where} must be one of {', '.join(choices)}, got '{text}'")
        return text
    if hint is int or hint is float:
        try:
            value: int | float | None = hint(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            what = "a whole number" if hint is int else "a finite number"
            raise ProbeSpecError(f"{where} must be {what}, got '{text}'")
        return value
    if hint is str:
        return text
    raise TypeError(f"{where}: a probe argument is int, float, str or a Literal, not {hint!r}")
