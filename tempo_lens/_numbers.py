"""Plain Python numbers from NumPy / torch scalars (configs normalise at construction).

A NumPy or torch scalar (``np.float32(0.1)``, ``np.int64(3)``, a 0-d tensor) is a number
to the user but not a ``float``/``int`` to ``isinstance`` or to ``json``. Configs pass their
numeric fields through :func:`as_real` / :func:`as_int` first, so validation sees plain
values and ``to_dict()`` is always JSON-serialisable; :func:`json_default` lets every JSON
writer accept such scalars in data it did not build.

Example:
    >>> import numpy as np
    >>> as_real(np.float32(0.5)), as_int(np.int64(3)), as_int(2.5)
    (0.5, 3, 2.5)
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

__all__ = [
    "BoolLike",
    "IntLike",
    "LayersLike",
    "RealLike",
    "as_bool",
    "as_int",
    "as_real",
    "json_default",
    "normalise_fields",
]

# Annotations of fields that are normalised at construction. To a type checker they are
# the plain type the field holds afterwards; at run time (beartype/jaxtyping checks in the
# tests read annotations) they also admit the NumPy/torch forms a user may pass.
if TYPE_CHECKING:
    RealLike = float
    IntLike = int
    BoolLike = bool
    LayersLike = str | Sequence[int]
else:
    RealLike = float | numbers.Real | np.ndarray | torch.Tensor
    IntLike = int | numbers.Integral | np.ndarray | torch.Tensor
    BoolLike = bool | np.bool_ | np.ndarray | torch.Tensor
    LayersLike = str | Sequence | np.ndarray | torch.Tensor


def _scalar(value: Any) -> Any:
    """The Python value of a 0-d tensor/array or NumPy scalar; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.item()
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
        return value.item()
    return value


def as_real(value: Any) -> Any:
    """A ``float`` for any real number.

    Bools and non-numbers are returned unchanged, for the caller's validation to refuse.
    """
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    return float(value)


def as_int(value: Any) -> Any:
    """An ``int`` for any integral number (bools, floats and non-numbers unchanged)."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return value
    return int(value)


def as_bool(value: Any) -> Any:
    """A ``bool`` for ``np.bool_`` and 0-d boolean tensors (anything else unchanged)."""
    value = _scalar(value)
    return bool(value) if isinstance(value, (bool, np.bool_)) else value


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` hook: NumPy/torch scalars and arrays as Python values.

    Raises:
        TypeError: For anything else (as ``json`` does).
    """
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def normalise_fields(
    obj: Any,
    *,
    reals: tuple[str, ...] = (),
    ints: tuple[str, ...] = (),
    bools: tuple[str, ...] = (),
) -> None:
    """Replace numeric/boolean fields of a (frozen) dataclass by plain Python values.

    Bool fields that are still not ``bool`` afterwards raise ``ValueError`` naming them.
    """
    for names, convert in ((reals, as_real), (ints, as_int), (bools, as_bool)):
        for name in names:
            object.__setattr__(obj, name, convert(getattr(obj, name)))
    for name in bools:
        value = getattr(obj, name)
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
