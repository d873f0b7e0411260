"""Atomic, durable file writes of strict JSON: a reader never sees a half-written file.

Every file tempo_lens writes goes through here: the content is written to a temporary
file in the same directory, flushed and fsynced, moved over the target with
``os.replace``, and the directory is fsynced, so a file that exists after a crash or a
power loss is complete (a resumable sweep counts a unit as finished only then).

JSON is always strict (RFC 8259: no ``NaN``/``Infinity`` tokens, which ``json``, ``jq``
and browsers refuse). :func:`atomic_write_json` writes a non-finite number as ``null``
by default, or refuses before anything is written (``nan="raise"``, naming where the
value is, as :meth:`tempo_lens.trace.Trace.save` does).

Examples:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> atomic_write_text(p, "{}")
    >>> p.read_text()
    '{}'
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tempo_lens._numbers import json_default

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "first_non_finite",
    "jsonable",
]


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` atomically.

    If ``write`` raises, the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give normal permissions
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s content to the disk (the data before the rename that publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (the rename); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes atomically."""

    def write(p: Path) -> None:
        p.write_bytes(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically."""

    def write(p: Path) -> None:
        p.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    nan: Literal["null", "raise"] = "null",
) -> None:
    """Serialise ``obj`` to strict JSON and write it atomically.

    NumPy/torch scalars and arrays become Python values. A NaN or infinite number is
    written as ``null`` (``nan="null"``, the default: a summary with an undefined
    statistic) or refused (``nan="raise"``: data that must read back as it was). Nothing
    is written if serialisation fails.

    Raises:
        ValueError: ``nan="raise"`` and ``obj`` holds a non-finite number (its place is
            named, e.g. ``steps[2].candidates[0].prob``).
        TypeError: ``obj`` holds a value JSON cannot represent.
    """
    if nan == "raise":
        where = first_non_finite(obj)
        if where is not None:
            raise ValueError(
                f"not written to {path}: {where} is not a finite number (JSON has no NaN/inf)"
            )
    text = json.dumps(_finite(obj), indent=indent, allow_nan=False, default=json_default)
    atomic_write_text(path, text + "\n")


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NumPy/torch included) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)) or type(obj).__module__.startswith("torch"):
        try:
            return _finite(json_default(obj))
        except TypeError:
            return obj
    return obj


def first_non_finite(obj: Any, where: str = "") -> str | None:
    """The place of the first NaN/inf number in ``obj`` (``"a.b[2]"``), or None.

    Examples:
        >>> first_non_finite({"a": [1.0, float("nan")]})
        'a[1]'
    """
    if isinstance(obj, (np.generic, np.ndarray)) or type(obj).__module__.startswith("torch"):
        try:
            obj = json_default(obj)
        except TypeError:
            return None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "the value")
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = first_non_finite(v, f"{where}.{k}" if where else str(k))
            if found is not None:
                return found
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = first_non_finite(v, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def jsonable(obj: Any) -> Any:
    """Convert results to strict JSON values (NaN/inf -> None, arrays -> lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, pd.DataFrame):
        return [jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)
