"""The ``[images] where`` filter: a tiny expression language, parsed, checked and interpreted.

A spec comes from whoever wrote it, so its filter is never handed to ``eval`` (nor to
``DataFrame.query``, whose ``@`` names and method calls reach Python objects). It is parsed with
:mod:`ast` and only these nodes are accepted: ``and``/``or``/``not``, comparisons, column names,
and string, number or boolean constants (lists or tuples of them after ``in``). Anything else, a
call such as ``__import__('os')`` or an attribute, is refused when the spec is read.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from auditor.errors import ConfigError

_ORDER: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_SYNTAX = (
    "use comparisons (==, !=, <, <=, >, >=, in, not in) of columns with strings or numbers, "
    "joined by and, or, not"
)


@dataclass(frozen=True)
class Where:
    """A checked filter expression; :meth:`select` applies it to a table."""

    text: str
    tree: ast.expr

    @property
    def columns(self) -> set[str]:
        return {node.id for node in ast.walk(self.tree) if isinstance(node, ast.Name)}

    def select(self, table: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows of ``table`` that match.

        Raises:
            ConfigError: the filter names a column the table lacks, or compares a column of
                numbers with text (or text with a number), which would silently match nothing.
        """
        missing = sorted(self.columns - set(table.columns))
        if missing:
            raise ConfigError(
                f"[images] where names unknown column(s) {', '.join(map(repr, missing))}; "
                f"columns: {', '.join(map(str, table.columns))}"
            )
        return np.asarray(_truth(self.tree, table), dtype=bool)


def parse_where(text: str) -> Where:
    """Parse and check ``text``.

    Raises:
        ConfigError: a syntax error or a construct outside the filter language, quoted.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ConfigError(f"[images] where is not a valid expression ({exc.msg}): {text}") from exc
    _check(tree, text.strip())
    return Where(text, tree)


def typed(table: pd.DataFrame) -> pd.DataFrame:
    """labels.csv as read (all text) with every column whose values are all numbers as numbers.

    Empty cells do not count against a column being numeric; they become NaN, which no
    comparison matches.
    """
    out = table.copy()
    for column in out.columns:
        values = out[column].astype(str).str.strip()
        present = values[values != ""]
        numbers = pd.to_numeric(present, errors="coerce")
        if len(present) and numbers.notna().all():
            out[column] = pd.to_numeric(values.where(values != ""), errors="coerce")
    return out


def _check(node: ast.expr, text: str) -> None:
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, text)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check(node.operand, text)
    elif isinstance(node, ast.Compare):
        _check_value(node.left, text)
        last = len(node.ops) - 1
        for i, (op, right) in enumerate(zip(node.ops, node.comparators, strict=True)):
            if isinstance(op, ast.In | ast.NotIn) and i == last:
                _check_list(right, text)
            elif type(op) in _ORDER:
                _check_value(right, text)
            else:
                _refuse(node, text, f"the comparison {type(op).__name__} is not supported here")
    else:
        _refuse(node, text, "expected a comparison")


def _check_value(node: ast.expr, text: str) -> None:
    if isinstance(node, ast.Name):
        if node.id.startswith("_"):
            _refuse(node, text, "names starting with '_' are not columns")
        return
    if _constant(node) is None:
        _refuse(node, text, f"{type(node).__name__} is not allowed")


def _check_list(node: ast.expr, text: str) -> None:
    if not isinstance(node, ast.List | ast.Tuple):
        _refuse(node, text, '\'in\' takes a list such as ["A", "B"]')
    for element in node.elts:
        if _constant(element) is None:
            _refuse(element, text, "lists may hold only strings and numbers")


def _constant(node: ast.expr) -> str | float | int | bool | None:
    """The value of a string, number or boolean literal (a negative number too), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _constant(node.operand)
        return -inner if isinstance(inner, int | float) and not isinstance(inner, bool) else None
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool):
        return node.value
    return None


def _refuse(node: ast.expr, text: str, why: str) -> NoReturn:
    part = ast.get_source_segment(text, node) or text
    raise ConfigError(f"[images] where: {why} in `{part}`; {_SYNTAX}")


def _truth(node: ast.expr, table: pd.DataFrame) -> pd.Series:
    if isinstance(node, ast.BoolOp):
        parts = [_truth(v, table) for v in node.values]
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part if isinstance(node.op, ast.And) else combined | part
        return combined
    if isinstance(node, ast.UnaryOp):
        return ~_truth(node.operand, table)
    assert isinstance(node, ast.Compare), "parse_where admits no other node"
    result = pd.Series(True, index=table.index)
    left = node.left
    for op, right in zip(node.ops, node.comparators, strict=True):
        result &= _compare(op, left, right, table)
        left = right
    return result


def _compare(op: ast.cmpop, left: ast.expr, right: ast.expr, table: pd.DataFrame) -> pd.Series:
    a, b = _operand(left, table), _operand(right, table)
    _same_kind(left, a, right, b)
    if isinstance(op, ast.In | ast.NotIn):
        found = pd.Series(a, index=table.index).isin(b)
        return ~found if isinstance(op, ast.NotIn) else found
    outcome = _ORDER[type(op)](a, b)  # a missing value (NaN) compares False
    if isinstance(outcome, pd.Series):
        return outcome
    return pd.Series(bool(outcome), index=table.index)


def _operand(node: ast.expr, table: pd.DataFrame) -> Any:
    if isinstance(node, ast.Name):
        return table[node.id]
    if isinstance(node, ast.List | ast.Tuple):
        return [_constant(e) for e in node.elts]
    return _constant(node)


def _same_kind(left: ast.expr, a: Any, right: ast.expr, b: Any) -> None:
    """Refuse text compared with numbers: ``tie == "1"`` would quietly select no image."""
    kinds = [(_kind(v), n) for v, n in ((a, left), (b, right))]
    found = {k for k, _ in kinds if k is not None}
    if len(found) > 1:
        names = [n.id for _, n in kinds if isinstance(n, ast.Name)]
        raise ConfigError(
            f"[images] where compares text with numbers ({', '.join(names)}); "
            "quote text values and leave numbers unquoted (labels.csv columns whose values "
            "are all numbers are numbers)"
        )


def _kind(value: Any) -> str | None:
    if isinstance(value, pd.Series):
        return "number" if pd.api.types.is_numeric_dtype(value) else "text"
    if isinstance(value, list):
        kinds = {_kind(v) for v in value}
        return kinds.pop() if len(kinds) == 1 else None
    if isinstance(value, str):
        return "text"
    return "number" if isinstance(value, int | float) else None
