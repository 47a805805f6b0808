"""Read a dataset directory into samples (what can be audited) and skips (what cannot, and why).

Two layouts: ``labels.csv`` at the root with a ``file`` column, or an ImageFolder tree (one folder
per class) with an optional ``labels.csv`` for subgroup columns. A bad row never stops the run:
it becomes a :class:`Skip` with its reason, so the report can count it. An optional
``labels.schema.json`` beside it says what the label and group columns and their values stand
for (:func:`column_descriptions`), so a report can explain labels such as 'A', 'B', 'C'.

This is the input boundary for labels.csv: every cell is parsed here, once, by one small
function per field, into typed values. What the file as a whole gets wrong (not UTF-8, another
separator, empty, no ``file`` column) stops the run with a :class:`DatasetError` naming the file
and the fix; what one row gets wrong (its file, its label) makes that row a skip; geometry that
does not parse (a box or landmarks that are not finite numbers) is dropped for that row, which
is still audited (edits that need it are then skipped with their reason).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from auditor.errors import DatasetError
from auditor.records import MISSING_GROUP

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
DEFAULT_GROUP_COLUMNS = ("gender", "race")
LANDMARK_COLUMNS = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)  # fmt: skip

LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
BOX_SUFFIX = "_box"  # labels.csv columns "<name>_box" hold per-image region boxes, e.g. tie_box
COLUMN_SCHEMA_FILE = "labels.schema.json"  # a Frictionless Table Schema of labels.csv
_SCHEMA_SHAPE = (
    'write it as a Table Schema: {"fields": [{"name": COLUMN, "description": TEXT, '
    '"categories": [{"value": VALUE, "label": TEXT}, ...]}, ...]}'
)

# Cells that spreadsheets and pandas write for "no value": a group cell holding one of them is
# the missing group, not a subgroup called "NaN" (compared case-insensitively).
MISSING_VALUES = frozenset({"", "nan", "na", "n/a", "<na>", "none", "null"})
_SAVE_AS = (
    "save it as comma-separated UTF-8 (a header row with a 'file' column, then one row per image)"
)

Box = tuple[float, float, float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class Sample:
    """One image to audit, with the geometry labels.csv gives for it, in the file's own pixels.

    ``face_box`` is (x0, y0, x1, y1); ``landmarks`` are CelebA's five points by name;
    ``boxes`` are the other ``<name>_box`` columns (e.g. a shirt collar or an object), by name.
    ``covariates`` are the ``--adjust-for`` cells as stripped strings; a missing cell is absent.
    """

    id: str
    path: Path
    label: str
    groups: dict[str, str]
    face_box: Box | None = None
    landmarks: dict[str, Point] | None = None
    boxes: dict[str, Box] = field(default_factory=dict)
    covariates: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Skip:
    """A row that cannot be audited, kept so that it is counted rather than lost."""

    id: str
    reason: str
    label: str | None = None
    groups: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnDescription:
    """What a label or group column stands for, as the dataset's labels.schema.json says:
    the column's ``description`` and, by value, what each value stands for (``values``)."""

    description: str
    values: dict[str, str]


@dataclass(frozen=True)
class Dataset:
    root: Path
    samples: list[Sample]
    skips: list[Skip]
    label_column: str
    group_columns: tuple[str, ...]
    labels_csv: Path | None
    covariate_columns: tuple[str, ...] = ()  # --adjust-for
    # The label and group columns that labels.schema.json describes, by name.
    column_descriptions: dict[str, ColumnDescription] = field(default_factory=dict)


def load_dataset(
    root: Path,
    classes: Sequence[str],
    *,
    label_column: str = "label",
    group_columns: Sequence[str] | None = None,
    adjust_for: Sequence[str] = (),
) -> Dataset:
    """Read ``root`` and check every row against the model's ``classes``.

    Args:
        root: the dataset directory.
        classes: the model's class names; a label outside them makes its row a skip.
        label_column: the labels.csv column holding the true class.
        group_columns: subgroup columns; None means ``gender`` and ``race`` where present.
        adjust_for: covariate columns (``--adjust-for``) that the error-rate gaps are adjusted
            for; each must be a column of labels.csv other than the label and group columns.

    Raises:
        DatasetError: the directory, the ``file`` column, or a requested column is missing, or
            a covariate column is the label or a group column, or labels.schema.json is not a
            Table Schema.
    """
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist")
    labels_csv = root / "labels.csv"
    # An ImageFolder tree: some top-level folders of images are named after the model's classes.
    folder_classes = [c for c in _folder_classes(root) if c in set(classes)]
    table = _read_labels(labels_csv) if labels_csv.is_file() else None
    if table is None and not folder_classes:
        raise DatasetError(
            f"{root} has neither labels.csv nor one folder of images per class; see README"
        )
    if table is None:
        table = pd.DataFrame(
            {"file": [p.relative_to(root).as_posix() for p in _folder_images(root)]}
        )
    if label_column not in table.columns and not folder_classes:
        raise DatasetError(
            f"labels.csv has no column '{label_column}' (columns: {', '.join(table.columns)}); "
            "name the label column with --label-column"
        )
    groups = _group_columns(table, group_columns)
    covariates = _covariate_columns(table, adjust_for, label_column, groups)
    descriptions = column_descriptions(root / COLUMN_SCHEMA_FILE, (label_column, *groups))
    samples: list[Sample] = []
    skips: list[Skip] = []
    seen: dict[Path, tuple[str, str]] = {}  # resolved file → (the first row's file, label)
    resolved_root = root.resolve()
    known = set(classes)
    for row in table.to_dict("records"):
        file_id = str(row["file"]).strip()
        row_groups = {c: group_value(row[c]) for c in groups}
        if label_column in row:
            label = str(row[label_column]).strip()
        else:
            label = Path(file_id).parts[0] if len(Path(file_id).parts) > 1 else ""
        reason = _row_problem(root, resolved_root, file_id, label, known, seen)
        if reason:
            skips.append(Skip(file_id, reason, label or None, row_groups))
            continue
        samples.append(
            Sample(
                file_id,
                root / file_id,
                label,
                row_groups,
                face_box=_face_box(row),
                landmarks=_landmarks(row),
                boxes=_named_boxes(row),
                covariates=_covariates(row, covariates),
            )
        )
    return Dataset(
        root,
        samples,
        skips,
        label_column,
        groups,
        labels_csv if labels_csv.is_file() else None,
        covariates,
        descriptions,
    )


def column_descriptions(path: Path, columns: Sequence[str]) -> dict[str, ColumnDescription]:
    """What ``path`` (a dataset's labels.schema.json, if it has one) says of ``columns``.

    The file is a `Frictionless Table Schema <https://specs.frictionlessdata.io/table-schema/>`_
    of labels.csv, the standard way for a table to describe its columns. Of each field, this
    reads ``name``, ``description`` and ``categories`` (``[{"value": "A", "label": "light skin
    tone"}, ...]``: what each value stands for); other keys and fields of other columns are left
    to the schema. A column with neither is not described.

    Raises:
        DatasetError: the file is not JSON, or a key read here does not have the schema's shape.
    """
    if not path.is_file():
        return {}
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} is not UTF-8 JSON ({exc}); {_SCHEMA_SHAPE}") from None
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(fields, list):
        raise DatasetError(f"{path} has no 'fields' list; {_SCHEMA_SHAPE}")
    described = {}
    for index, spec in enumerate(fields):
        where = f"{path}: fields[{index}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise DatasetError(f"{where} has no 'name' string; {_SCHEMA_SHAPE}")
        if spec["name"] not in columns:
            continue
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise DatasetError(f"{where}.description is not a string; {_SCHEMA_SHAPE}")
        values = _category_labels(spec.get("categories", []), where)
        if description.strip() or values:
            described[spec["name"]] = ColumnDescription(description.strip(), values)
    return described


def _category_labels(categories: object, where: str) -> dict[str, str]:
    """A field's ``categories`` as {value: label}; plain values (without a label) say nothing."""
    if not isinstance(categories, list):
        raise DatasetError(f"{where}.categories is not a list; {_SCHEMA_SHAPE}")
    labels = {}
    for index, category in enumerate(categories):
        if isinstance(category, str | int):
            continue  # a plain value: allowed, and nothing to explain
        shaped = isinstance(category, dict) and isinstance(category.get("value"), str | int)
        if not shaped or not isinstance(category.get("label", ""), str):
            raise DatasetError(
                f"{where}.categories[{index}] needs a string or integer 'value' and a string "
                f"'label'; {_SCHEMA_SHAPE}"
            )
        if category.get("label", "").strip():
            labels[group_value(category["value"])] = category["label"].strip()
    return labels


def _read_labels(path: Path) -> pd.DataFrame:
    """labels.csv as a table of stripped strings, or a :class:`DatasetError` that says what to
    change: the file is checked for what a spreadsheet export gets wrong before it is parsed."""
    text = _labels_text(path)
    try:
        table = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"cannot parse {path}: {str(exc).strip()}; {_SAVE_AS}") from None
    table.columns = [str(c).strip() for c in table.columns]
    if "file" not in table.columns:
        separator = _other_separator(table.columns)
        if separator:
            raise DatasetError(f"{path} looks {separator}-separated; {_SAVE_AS}")
        raise DatasetError(
            f"{path} has no 'file' column (columns: {', '.join(table.columns)}); "
            "it must name each image relative to the dataset root"
        )
    return table


def _labels_text(path: Path) -> str:
    """The file decoded as UTF-8 (a byte-order mark dropped), refused when empty or not text."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise DatasetError(f"{path} is empty; {_SAVE_AS}")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DatasetError(f"{path} is UTF-16 (it starts with its byte-order mark); {_SAVE_AS}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{path} is not UTF-8 (byte {exc.start} is 0x{data[exc.start]:02x}; a Windows or "
            f"Latin-1 export?); {_SAVE_AS}"
        ) from None


def _other_separator(columns: Sequence[str]) -> str | None:
    """The separator that splits the header into a ``file`` column, when it is not the comma."""
    header = ",".join(columns)
    for name, mark in (("tab", "\t"), ("semicolon", ";"), ("pipe", "|")):
        if "file" in [c.strip() for c in header.split(mark)]:
            return name
    return None


def group_value(cell: object) -> str:
    """A group cell: stripped, with the spellings of "no value" made the missing group and
    control characters written out (``\\x08``), so that every output can show the value."""
    text = str(cell).strip()
    if text.lower() in MISSING_VALUES:
        return MISSING_GROUP
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _folder_classes(root: Path) -> list[str]:
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir())
    )


def _folder_images(root: Path) -> list[Path]:
    return sorted(
        p
        for d in root.iterdir()
        if d.is_dir()
        for p in d.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _group_columns(table: pd.DataFrame, requested: Sequence[str] | None) -> tuple[str, ...]:
    if requested is None:
        return tuple(c for c in DEFAULT_GROUP_COLUMNS if c in table.columns)
    absent = [c for c in requested if c not in table.columns]
    if absent:
        raise DatasetError(
            f"labels.csv has no column {', '.join(map(repr, absent))} "
            f"(columns: {', '.join(table.columns)}); fix --group-columns"
        )
    return tuple(requested)


def _covariate_columns(
    table: pd.DataFrame, requested: Sequence[str], label_column: str, groups: Sequence[str]
) -> tuple[str, ...]:
    """The ``--adjust-for`` columns, checked: present, and neither the label nor a group."""
    absent = [c for c in requested if c not in table.columns]
    if absent:
        raise DatasetError(
            f"labels.csv has no column {', '.join(map(repr, absent))} "
            f"(columns: {', '.join(table.columns)}); fix --adjust-for"
        )
    taken = [c for c in requested if c == label_column or c in groups]
    if taken:
        raise DatasetError(
            f"--adjust-for names {', '.join(map(repr, taken))}, the label or a group column "
            f"(label: {label_column!r}; groups: {', '.join(groups) or 'none'}); adjust for other "
            "columns, such as age or image quality"
        )
    return tuple(requested)


def _covariates(row: dict[str, str], columns: Sequence[str]) -> dict[str, str]:
    """A row's covariate cells that hold a value (a "no value" spelling counts as missing)."""
    values = {c: group_value(row[c]) for c in columns}
    return {c: v for c, v in values.items() if v != MISSING_GROUP}


def _row_problem(
    root: Path,
    resolved_root: Path,
    file_id: str,
    label: str,
    known: set[str],
    seen: dict[Path, tuple[str, str]],
) -> str | None:
    """Why a row cannot be audited, or None when it can (and it is then ``seen``).

    An image is identified by its resolved path inside the root, so a second name for the
    same file (``./a.png``, ``img/../a.png``, a link) is a duplicate of the first row.
    """
    if not file_id:
        return "empty 'file' value"
    try:
        path = (root / file_id).resolve()
        if not path.is_relative_to(resolved_root):
            return "path escapes the dataset root"
        if not path.is_file():
            return "file not found" if not path.exists() else "not a regular file"
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long, a loop of links
        return f"the file system cannot open this name: {getattr(exc, 'strerror', None) or exc}"
    if path in seen:
        first, first_label = seen[path]
        same = "this file" if first == file_id else f"'{first}' (the same image file)"
        if label != first_label:
            labels = f"'{label}' here, '{first_label}' there"
            return f"duplicate row for {same} with another label ({labels})"
        return f"duplicate row for {same}"
    seen[path] = (file_id, label)
    if not label:
        return "missing label"
    if label not in known:
        return f"unknown label value '{label}' (model classes: {', '.join(sorted(known))})"
    return None


def _face_box(row: dict[str, str]) -> Box | None:
    """A face box from a ``face_box`` column, else from CelebA's five landmarks, else None."""
    if row.get("face_box", ""):
        return _box(row["face_box"])
    landmarks = _landmarks(row)
    if landmarks is None:
        return None
    return box_from_landmarks([v for name in LANDMARK_NAMES for v in landmarks[name]])


def _box(text: str) -> Box | None:
    """``"x0,y0,x1,y1"`` as a box, or None when malformed, not finite, empty or of no area
    (the row is still audited)."""
    values = _finite_numbers(str(text).strip().strip("()[]").split(","))
    if values is None or len(values) != 4:
        return None
    x0, y0, x1, y1 = values
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _landmarks(row: dict[str, str]) -> dict[str, Point] | None:
    """CelebA's five points, or None unless all ten cells are finite numbers."""
    values = _finite_numbers([row.get(c, "") for c in LANDMARK_COLUMNS])
    if values is None:
        return None
    return {name: (values[2 * i], values[2 * i + 1]) for i, name in enumerate(LANDMARK_NAMES)}


def _finite_numbers(cells: Sequence[object]) -> list[float] | None:
    """The cells as finite floats, or None if any is empty, not a number, NaN or infinite."""
    try:
        values = [float(str(cell)) for cell in cells]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def _named_boxes(row: dict[str, str]) -> dict[str, Box]:
    """Every ``<name>_box`` column but ``face_box`` with a usable box in this row."""
    boxes = {
        column.removesuffix(BOX_SUFFIX): _box(text)
        for column, text in row.items()
        if column.endswith(BOX_SUFFIX) and column != "face_box" and text
    }
    return {name: box for name, box in boxes.items() if box is not None}


def box_from_landmarks(values: Sequence[float]) -> Box:
    """Face box from CelebA landmarks (eyes, nose, mouth corners), in their pixels.

    The box spans the eyes widened by one eye distance, from one eye-to-mouth height above the
    eyes to half of it below the mouth: the proportions of an average frontal face.
    """
    lx, ly, rx, ry, _nx, _ny, mlx, mly, mrx, mry = values
    eye_dist = max(abs(rx - lx), 1.0)
    eye_y = (ly + ry) / 2
    mouth_y = (mly + mry) / 2
    height = max(mouth_y - eye_y, 1.0)
    cx = (lx + rx + mlx + mrx) / 4
    return (cx - eye_dist, eye_y - height, cx + eye_dist, mouth_y + 0.5 * height)
