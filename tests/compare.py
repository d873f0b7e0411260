"""Comparisons for model outputs: structure, tokens and decisions exact; floats to a tolerance.

Float32 forwards differ at ~1e-7 between CPUs, BLAS builds and thread counts (Ray workers run
with one thread), so a value recorded on one machine is compared with a tolerance, never ``==``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

RTOL = 1e-5
ATOL = 1e-5


def assert_close_tree(
    x: Any, y: Any, *, rtol: float = RTOL, atol: float = ATOL, path: str = "value"
) -> None:
    """Assert two JSON-like trees are equal, floats within ``rtol``/``atol`` (NaN equals NaN)."""
    if isinstance(x, float) or isinstance(y, float):
        assert isinstance(x, int | float) and isinstance(y, int | float), (path, x, y)
        same_nan = math.isnan(x) and math.isnan(y)
        assert same_nan or math.isclose(x, y, rel_tol=rtol, abs_tol=atol), (path, x, y)
    elif isinstance(x, dict):
        assert isinstance(y, dict) and x.keys() == y.keys(), path
        for k in x:
            assert_close_tree(x[k], y[k], rtol=rtol, atol=atol, path=f"{path}.{k}")
    elif isinstance(x, list | tuple):
        assert isinstance(y, list | tuple) and len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            assert_close_tree(u, v, rtol=rtol, atol=atol, path=f"{path}[{i}]")
    else:
        assert x == y, (path, x, y)


def assert_same_outputs(a: Path, b: Path, *, ignore: tuple[str, ...] = ()) -> None:
    """Assert two output directories hold the same files with the same content.

    CSV tables are compared with pandas (floats to the tolerance), JSON files as trees, other
    files byte for byte. Keys/columns named in ``ignore`` (timings, worker ids) are skipped.
    """
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert_same_file(a / rel, b / rel, ignore=ignore)


def assert_same_file(a: Path, b: Path, *, ignore: tuple[str, ...] = ()) -> None:
    """Assert two output files agree: CSV via pandas and JSON as trees (floats to the
    tolerance, ``ignore`` naming columns/keys to skip), anything else byte for byte."""
    if a.suffix == ".csv":
        da, db = pd.read_csv(a), pd.read_csv(b)
        drop = [c for c in ignore if c in da.columns]
        pd.testing.assert_frame_equal(
            da.drop(columns=drop), db.drop(columns=drop), rtol=RTOL, atol=ATOL
        )
    elif a.suffix == ".json":
        ja, jb = (_without(json.loads(f.read_text()), ignore) for f in (a, b))
        assert_close_tree(ja, jb, path=a.name)
    else:
        assert a.read_bytes() == b.read_bytes(), a.name


def _without(obj: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(obj, dict):
        return {k: _without(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_without(v, keys) for v in obj]
    return obj
