"""The run store: a run directory written batch by batch, combined once, read through one API.

Modelled on coverage.py's parallel data files. Each batch's result is a part, written
atomically under its batch id (files into a temporary folder, each fsynced, a ``part.json``
listing their SHA-256 last, then one rename), so a part on disk is whole or absent. A resumed
run keeps every part that checks out and redoes the rest. :meth:`RunStore.combine` merges the
parts in batch-id order, so the final files are the same whichever order or worker the batches
ran in. The run is complete only once :func:`seal` renames ``manifest.json`` into place, after
every final file; readers (:meth:`RunStore.open`) refuse a run without one, so no reader sees
results of one attempt beside a summary of another.

One writer per directory: :meth:`RunStore.lock` holds an exclusive ``flock`` on ``.lock`` for
the run; the kernel drops it when the process dies, so a killed run leaves no stale lock.

This module imports no torch: reports, gates and comparisons read runs through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from auditor import __version__
from auditor.errors import RunDirError
from auditor.records import (
    COVARIATE_PREFIX,
    GROUP_PREFIX,
    MEASURES_FILE,
    RESULTS_FILE,
    Measure,
    Record,
    flatten,
    measures_schema,
    schema,
)
from auditor.run_summary import JsonShapeError, RunSummary, StoredGalleryItem, decode

if TYPE_CHECKING:  # the engine's types; the store itself imports no torch
    from auditor.gallery import GalleryCandidate
    from auditor.localisation import MeanMaps
    from auditor.step import BatchResult

PLAN_FILE = "plan.json"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
PARTS_DIR = "parts"
GALLERY_FILE = "gallery.json"
MEAN_MAPS_FILE = "mean_maps.npz"
REPORT_FILE = "report.html"
GATE_FILE = "gate.json"
T = TypeVar("T")
ALL = "all"  # the grouping / group / outcome of a mean map that takes every image
MapKey = tuple[str, str, str, str]  # a mean map's (method, grouping, group, outcome)
_TEMPORARY = ".tmp-"
# Everything an audit writes into its directory: what --overwrite removes and what marks a
# directory as holding a run. Anything else in the directory is the user's and left alone.
RUN_ENTRIES = (
    PLAN_FILE, MANIFEST_FILE, PARTS_DIR, RESULTS_FILE, MEASURES_FILE, GALLERY_FILE,
    MEAN_MAPS_FILE, SUMMARY_FILE, REPORT_FILE, GATE_FILE,
)  # fmt: skip
_PART_RECORDS, _PART_MEASURES, _PART_MAPS, _PART_GALLERY = (
    "records.parquet", "measures.parquet", "maps.npz", "gallery.json",
)  # fmt: skip
_PART_INDEX = "part.json"


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temporary file beside ``path``, fsync it, rename it to ``path``.

    A reader (or a kill) sees the old file or the new one, never half of one.
    """
    temporary = path.with_name(f"{_TEMPORARY}{path.name}")
    write(temporary)
    _fsync(temporary)
    os.replace(temporary, path)
    _fsync(path.parent)


def seal(run_dir: Path, files: Sequence[str]) -> Path:
    """Mark the run complete: ``manifest.json`` lists ``files`` (which must all exist) with
    their sizes and SHA-256, and is renamed into place after them."""
    entries = {name: _file_entry(run_dir / name) for name in files}
    manifest = {"tool_version": __version__, "sealed": _now(), "files": entries}
    path = run_dir / MANIFEST_FILE
    write_atomically(path, lambda p: p.write_text(json.dumps(manifest, indent=2), "utf-8"))
    return path


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run directory's lock, as the holder wrote it."""

    pid: int
    host: str
    since: str
    command: str

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (since {self.since}: {self.command})"


@dataclass(frozen=True)
class StoredPart:
    """A part that checks out: its batch id, folder, image count, and what its writer said of
    it in the index (``extra``: an audit part's mean-map keys and counts)."""

    batch_id: str
    folder: Path
    images: int
    extra: dict[str, Any]

    def mean_map_counts(self) -> list[tuple[MapKey, int]]:
        """The (key, count) of each array in an audit part's maps.npz, in array order."""
        return [(cast(MapKey, tuple(m["key"])), int(m["count"])) for m in self.extra["mean_maps"]]


class RunStore:
    """Writes one run directory. Readers use :meth:`open`, which needs no engine."""

    def __init__(
        self,
        run_dir: Path,
        group_columns: Sequence[str] = (),
        entries: Sequence[str] = RUN_ENTRIES,
        covariate_columns: Sequence[str] = (),
    ) -> None:
        """``entries`` are the names the run writes into ``run_dir`` (an audit's by default):
        what marks the directory as holding a run and what ``overwrite`` removes;
        ``covariate_columns`` (``--adjust-for``) become the records' ``covariate_<name>``
        cells."""
        self.run_dir = run_dir
        self.parts_dir = run_dir / PARTS_DIR
        self._entries = tuple(entries)
        self._groups = tuple(group_columns)
        self._covariates = tuple(covariate_columns)
        self._records_schema = schema(self._groups, self._covariates)
        self._measures_schema = measures_schema(self._groups)

    # -- one writer ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's lock for the block.

        Raises:
            RunDirError: another process holds it (the message names that process).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_FILE
        handle = path.open("a+", encoding="utf-8")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = _read_holder(path)
                who = holder.describe() if holder else "another process"
                raise RunDirError(
                    f"{self.run_dir} is being written by {who}; wait for it to finish or "
                    "choose another --out"
                ) from None
            handle.seek(0)
            handle.truncate()
            holder = LockHolder(os.getpid(), socket.gethostname(), _now(), " ".join(sys.argv))
            handle.write(json.dumps(asdict(holder)))
            handle.flush()
            yield
        finally:
            handle.close()  # closing the file drops the flock

    # -- starting, resuming -------------------------------------------------------------------

    def prepare(self, fingerprint: dict[str, Any], *, resume: bool, overwrite: bool) -> bool:
        """Make the directory ready for this plan; True when it already holds the finished run.

        A directory with another run's files is refused unless ``resume`` (continue it: the
        stored plan must match ``fingerprint``) or ``overwrite`` (remove the run's files; the
        user's other files stay).

        Raises:
            RunDirError: the directory holds a run and neither flag was given, or ``resume``
                was given and the stored plan differs (the message lists what differs).
        """
        present = [name for name in self._entries if (self.run_dir / name).exists()]
        if present and overwrite:
            self._remove(present)
        elif present and not resume:
            raise RunDirError(
                f"{self.run_dir} already holds a run ({', '.join(present)}); pass --resume to "
                "continue it or --overwrite to replace it"
            )
        elif present:
            stored = self._stored_fingerprint()
            if stored != fingerprint:
                raise RunDirError(
                    f"cannot resume {self.run_dir}: it was planned differently "
                    f"({'; '.join(_differences(stored, fingerprint))}); use --overwrite to "
                    "start it again"
                )
            if (self.run_dir / MANIFEST_FILE).is_file():
                return True
        plan = {"tool_version": __version__, "planned": _now(), "fingerprint": fingerprint}
        path = self.run_dir / PLAN_FILE
        write_atomically(path, lambda p: p.write_text(json.dumps(plan, indent=2), "utf-8"))
        self.parts_dir.mkdir(exist_ok=True)
        return False

    def done(self) -> dict[str, StoredPart]:
        """The parts that check out, by batch id. Temporary folders a kill left behind and
        parts whose files do not match their index (cut short, or changed) are removed, so
        their batches run again."""
        parts: dict[str, StoredPart] = {}
        for folder in sorted(self.parts_dir.iterdir()) if self.parts_dir.is_dir() else []:
            part = None if folder.name.startswith(_TEMPORARY) else _check_part(folder)
            if part is None:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                parts[part.batch_id] = part
        return parts

    # -- writing ------------------------------------------------------------------------------

    def write(self, result: BatchResult) -> None:
        """Store one audit batch's result as a whole part under its batch id."""
        keys = sorted(result.mean_maps)
        self.write_part(
            result.batch_id,
            result.images,
            {
                _PART_RECORDS: lambda p: pq.write_table(self._records_table(result.records), p),
                _PART_MEASURES: lambda p: pq.write_table(self._measures_table(result.measures), p),
                _PART_MAPS: lambda p: np.savez(p, *[result.mean_maps[k][0] for k in keys]),
                _PART_GALLERY: lambda p: p.write_text(
                    json.dumps([asdict(c) for c in result.gallery]), encoding="utf-8"
                ),
            },
            {"mean_maps": [{"key": list(k), "count": result.mean_maps[k][1]} for k in keys]},
        )

    def write_part(
        self,
        batch_id: str,
        images: int,
        files: dict[str, Callable[[Path], object]],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Store a part atomically: each ``files`` writer fills its file in a temporary folder,
        the index (with ``extra``) is written last, and one rename puts the folder in place."""
        temporary = self.parts_dir / f"{_TEMPORARY}{batch_id}-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        for name, write in files.items():
            write(temporary / name)
        index = {
            "batch_id": batch_id,
            "images": images,
            "extra": extra or {},
            "files": {name: _file_entry(temporary / name) for name in files},
        }
        for name in files:
            _fsync(temporary / name)
        (temporary / _PART_INDEX).write_text(json.dumps(index), encoding="utf-8")
        _fsync(temporary / _PART_INDEX)
        _fsync(temporary)
        target = self.parts_dir / batch_id
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temporary, target)
        _fsync(self.parts_dir)

    def combine(
        self, batch_ids: Sequence[str], skips: Sequence[Record], gallery_size: int
    ) -> MeanMaps:
        """Merge the parts of ``batch_ids`` (in that order) into the run's final files.

        ``results.parquet`` (the ``skips`` first) and ``attribution.parquet`` are streamed part
        by part, so memory stays one part whatever the run's size; mean-map sums and gallery
        candidates merge as they are read, and the merged mean maps are returned.

        Raises:
            RunDirError: a batch has no part that checks out.
        """
        from auditor.gallery import Gallery
        from auditor.localisation import MeanMaps

        parts = self.parts(batch_ids)
        mean_maps, gallery = MeanMaps(), Gallery(gallery_size)
        with (
            _ParquetStream(self.run_dir / RESULTS_FILE, self._records_schema) as results,
            _ParquetStream(self.run_dir / MEASURES_FILE, self._measures_schema) as measures,
        ):
            results.write(self._records_table(skips))
            for part in parts:
                folder = part.folder
                results.write(pq.read_table(folder / _PART_RECORDS, schema=self._records_schema))
                measures.write(pq.read_table(folder / _PART_MEASURES, schema=self._measures_schema))
                with np.load(folder / _PART_MAPS) as sums:
                    for i, (key, count) in enumerate(part.mean_map_counts()):
                        mean_maps.merge(key, sums[f"arr_{i}"], count)
                for candidate in _read_candidates(folder / _PART_GALLERY):
                    gallery.add(candidate)
        items = gallery.items()
        write_atomically(
            self.run_dir / GALLERY_FILE, lambda p: p.write_text(json.dumps(items), "utf-8")
        )
        return mean_maps

    def parts(self, batch_ids: Sequence[str]) -> list[StoredPart]:
        """The stored parts of ``batch_ids``, in that order, for combining. The manifest is
        removed first: until :func:`seal` runs again, the directory reads as incomplete.

        Raises:
            RunDirError: a batch has no part that checks out.
        """
        (self.run_dir / MANIFEST_FILE).unlink(missing_ok=True)
        done = self.done()
        missing = [b for b in batch_ids if b not in done]
        if missing:
            raise RunDirError(f"{len(missing)} batch(es) have no stored result, e.g. {missing[0]}")
        return [done[b] for b in batch_ids]

    def records(self, columns: Sequence[str]) -> pd.DataFrame:
        """``columns`` (and the group and covariate columns) of the combined ``results.parquet``,
        for the writer's statistics before sealing; a large run's probabilities stay on disk."""
        groups = [GROUP_PREFIX + c for c in self._groups]
        covariates = [COVARIATE_PREFIX + c for c in self._covariates]
        return pd.read_parquet(
            self.run_dir / RESULTS_FILE, columns=[*columns, *groups, *covariates]
        )

    def measures(self) -> pd.DataFrame:
        """The combined ``attribution.parquet``."""
        return pd.read_parquet(self.run_dir / MEASURES_FILE)

    def finish(self, files: Sequence[str]) -> None:
        """Seal the run with its final ``files`` and drop the parts they were combined from."""
        seal(self.run_dir, files)
        shutil.rmtree(self.parts_dir, ignore_errors=True)

    # -- reading ------------------------------------------------------------------------------

    @staticmethod
    def open(
        run_dir: Path, *, command: str = "audit run", main_file: str = SUMMARY_FILE
    ) -> CompletedRun:
        """A finished run, for reading; ``command`` wrote it and ``main_file`` is what its
        readers look for (errors name them).

        Raises:
            RunDirError: ``run_dir`` holds no finished run (never ran, still running, or cut
                short: the message says to resume it).
        """
        manifest_path = run_dir / MANIFEST_FILE
        if not manifest_path.is_file():
            if (run_dir / PLAN_FILE).is_file():
                raise RunDirError(
                    f"{run_dir} holds an unfinished run (no {MANIFEST_FILE}): it is still "
                    f"running or was interrupted; finish it with `{command} ... --resume`"
                )
            raise RunDirError(
                f"{run_dir} holds no {main_file}; pass the --out directory of a finished run"
            )
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = tuple(manifest["files"])
        missing = [name for name in files if not (run_dir / name).is_file()]
        if missing:
            raise RunDirError(f"{run_dir} is missing {', '.join(missing)} that its manifest lists")
        return CompletedRun(run_dir, files)

    # -- internals ----------------------------------------------------------------------------

    def _records_table(self, records: Sequence[Record]) -> pa.Table:
        rows = [flatten(asdict(r), self._groups, self._covariates) for r in records]
        return pa.Table.from_pylist(rows, schema=self._records_schema)

    def _measures_table(self, measures: Sequence[Measure]) -> pa.Table:
        rows = [flatten(asdict(m), self._groups) for m in measures]
        return pa.Table.from_pylist(rows, schema=self._measures_schema)

    def _stored_fingerprint(self) -> dict[str, Any]:
        path = self.run_dir / PLAN_FILE
        if not path.is_file():
            return {}
        try:
            stored: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["fingerprint"]
        except (ValueError, KeyError):
            return {}
        return stored

    def _remove(self, names: Sequence[str]) -> None:
        for name in names:
            path = self.run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


@dataclass(frozen=True)
class CompletedRun:
    """A sealed run directory and the typed ways to read it."""

    run_dir: Path
    files: tuple[str, ...]

    def summary(self) -> RunSummary:
        """summary.json as typed objects.

        Raises:
            RunDirError: it does not have the shape that this auditor reads (another version
                wrote it, or it was edited); the message names the key that does not fit.
        """
        return read_typed(self.run_dir / SUMMARY_FILE, RunSummary.from_json, "audit run")

    def records(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """``results.parquet``: one row per image × probe × method × region source."""
        return pd.read_parquet(self.run_dir / RESULTS_FILE, columns=columns)

    def measures(self) -> pd.DataFrame:
        """``attribution.parquet``; empty when the run made no attribution measures."""
        path = self.run_dir / MEASURES_FILE
        return pd.read_parquet(path) if path.is_file() else pd.DataFrame()

    def gallery(self) -> list[StoredGalleryItem]:
        """gallery.json: the most-affected images, best first within each arm and subgroup;
        empty when the run kept none."""
        path = self.run_dir / GALLERY_FILE
        if not path.is_file():
            return []
        return read_typed(path, lambda data: decode(list[StoredGalleryItem], data), "audit run")

    def mean_maps(self) -> dict[MapKey, np.ndarray]:
        """The stored mean maps by (method, grouping, group, outcome); empty if none were made.

        summary.json's ``attribution.mean_maps`` says which key each ``map_<i>`` array holds.
        """
        path = self.run_dir / MEAN_MAPS_FILE
        if not path.is_file():
            return {}
        listing = self.summary().attribution.mean_maps
        with np.load(path) as stored:
            return {entry.key: stored[f"map_{i}"] for i, entry in enumerate(listing)}


class _ParquetStream:
    """A Parquet file written table by table into a temporary name, renamed on success."""

    def __init__(self, path: Path, table_schema: pa.Schema) -> None:
        self._path = path
        self._temporary = path.with_name(f"{_TEMPORARY}{path.name}")
        self._writer = pq.ParquetWriter(self._temporary, table_schema)

    def __enter__(self) -> _ParquetStream:
        return self

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)

    def __exit__(self, kind: object, *_: object) -> None:
        self._writer.close()
        if kind is None:
            _fsync(self._temporary)
            os.replace(self._temporary, self._path)
        else:
            self._temporary.unlink(missing_ok=True)


def _read_candidates(path: Path) -> list[GalleryCandidate]:
    from auditor.gallery import GalleryCandidate

    return [
        GalleryCandidate(tuple(c["key"]), c["effect"], c["image_id"], c["item"])
        for c in json.loads(path.read_text(encoding="utf-8"))
    ]


def _check_part(folder: Path) -> StoredPart | None:
    """The part in ``folder`` if its index exists and every file matches it, else None."""
    try:
        index = json.loads((folder / _PART_INDEX).read_text(encoding="utf-8"))
        for name, entry in index["files"].items():
            if _file_entry(folder / name) != entry:
                return None
        return StoredPart(index["batch_id"], folder, int(index["images"]), dict(index["extra"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_typed(path: Path, read: Callable[[Any], T], command: str) -> T:
    """``path``'s JSON as the typed object ``read`` makes of it.

    Raises:
        RunDirError: the file is not of the shape this auditor reads (another version wrote it,
            or it was edited); the message names what does not fit and the ``audit`` command
            that writes it again.
    """
    try:
        return read(json.loads(path.read_text(encoding="utf-8")))
    except (JsonShapeError, json.JSONDecodeError) as exc:
        raise RunDirError(
            f"{path} cannot be read by auditor {__version__}: {exc}; rerun `{command}` to "
            "write it again"
        ) from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What differs between two plan fingerprints, in words."""
    if not stored:
        return ["the stored plan.json is missing or unreadable"]
    out = []
    for key in sorted(set(stored) | set(wanted)):
        before, now = stored.get(key), wanted.get(key)
        if before == now:
            continue
        if isinstance(before, dict) and isinstance(now, dict):
            out += [f"{key}.{d}" for d in _differences(before, now)]
        elif key == "batches":
            out.append(f"batches ({len(before or [])} stored, {len(now or [])} now)")
        else:
            out.append(f"{key} ({_short(before)} stored, {_short(now)} now)")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_holder(path: Path) -> LockHolder | None:
    try:
        return LockHolder(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
