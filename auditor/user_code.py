"""Objects the user names on the command line: ``path/to/file.py:Name`` or ``package.module:name``.

``--arch`` (a model class or factory) and ``--predict`` (a prediction function) both take this
form. Importing the named file or module runs it: it is the user's own code, named by the user,
as ``python path/to/file.py`` would run it, so no ``--trust-model`` is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from auditor.errors import ConfigError


def is_reference(text: str) -> bool:
    """True for ``file.py:Name`` and ``package.module:name``; ``torchvision:NAME`` is a
    torchvision architecture, not user code."""
    return ":" in text and not text.startswith("torchvision:")


def resolve(reference: str, what: str) -> Callable[..., Any]:
    """The callable ``reference`` names; ``what`` says what it is for in error messages.

    Raises:
        ConfigError: the form is wrong, the file or module is missing or fails to import, it
            does not define the name, or the name is not callable.
    """
    source, _, name = reference.rpartition(":")
    if not source or not name.isidentifier():
        raise ConfigError(
            f"{what} '{reference}' must be path/to/file.py:Name or package.module:name"
        )
    module = _import_file(Path(source), what) if _is_file(source) else _import_module(source, what)
    found = getattr(module, name, None)
    if found is None:
        defined = sorted(
            n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
        )
        listing = f" (it defines: {', '.join(defined)})" if defined else ""
        raise ConfigError(f"{what}: {source} defines no '{name}'{listing}")
    if not callable(found):
        raise ConfigError(f"{what}: '{name}' in {source} is a {type(found).__name__}, not callable")
    return found  # type: ignore[no-any-return]


def source_file(reference: str) -> Path | None:
    """The file that defines ``reference``, for the run's record of what was audited."""
    source = reference.rpartition(":")[0]
    if _is_file(source):
        return Path(source)
    module = sys.modules.get(source)
    file = getattr(module, "__file__", None)
    return Path(file) if file else None


def _is_file(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


def _import_file(path: Path, what: str) -> ModuleType:
    """Import a file by path. Its folder goes on ``sys.path`` first, so that a ``model.py``
    importing its sibling files (``from layers import Block``) works as it does for its author.
    """
    if not path.is_file():
        raise ConfigError(f"{what}: file {path} does not exist")
    resolved = path.resolve()
    name = f"auditor_user_code_{resolved.stem}_{zlib.crc32(str(resolved).encode()):08x}"
    if name in sys.modules:
        return sys.modules[name]
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what}: cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"{what}: importing {path} failed: {_one_line(exc)}") from exc
    return module


def _import_module(source: str, what: str) -> ModuleType:
    """Import a module by name, from the current directory too (as ``python -m`` would)."""
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        if exc.name is not None and source.startswith(exc.name):
            raise ConfigError(
                f"{what}: no module named '{source}' (run from the folder that holds it, or "
                "install it, or name a file: path/to/file.py:Name)"
            ) from exc
        raise ConfigError(f"{what}: importing {source} failed: {_one_line(exc)}") from exc
    except Exception as exc:
        raise ConfigError(f"{what}: importing {source} failed: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
