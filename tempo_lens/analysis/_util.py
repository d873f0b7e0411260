"""Small helpers shared by the analysis and display modules (arrays, JSON, group means)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
from torch import Tensor

__all__ = ["ArrayLike", "nanmean", "safe_ratio", "to_numpy"]

ArrayLike: TypeAlias = Tensor | np.ndarray | pd.Series | Sequence[Any]
"""A tensor, a NumPy array, a pandas Series or (nested) lists of numbers."""


def to_numpy(x: ArrayLike, *, ndim: int | None = None, name: str = "array") -> np.ndarray:
    """A float64 NumPy copy of ``x`` (a tensor is detached and moved to the CPU)."""
    if isinstance(x, Tensor):
        arr = x.detach().to("cpu").double().numpy()
    elif isinstance(x, pd.Series):
        arr = x.to_numpy(dtype=np.float64)
    else:
        arr = np.asarray(x, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(arr.shape)}")
    return arr


def nanmean(x: np.ndarray, axis: int | tuple[int, ...] | None = None) -> Any:
    """Mean ignoring NaN; NaN (without a warning) where nothing is left."""
    x = np.asarray(x, dtype=np.float64)
    count = np.sum(~np.isnan(x), axis=axis)
    total = np.nansum(x, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(out) if np.ndim(out) == 0 else out


def safe_ratio(a: Any, b: Any) -> Any:
    """``a / b`` with NaN where either is NaN or ``b == 0``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where((b != 0) & ~np.isnan(a) & ~np.isnan(b), a / np.where(b == 0, 1, b), np.nan)
    return float(out) if np.ndim(out) == 0 else out
