"""Partial isolation: isolating siblings at chosen layers and/or heads only (pure maths).

In isolated mode (``isolate=True``) a member of a parallel set cannot attend to its
siblings at any layer or head. Partial isolation (research question 8.2: *where* must the
alternatives be kept apart?) restricts that rule to a subset of the ``(layer, head)``
pairs; everywhere else siblings see earlier siblings as in visible mode. Every other rule
(causality, pruning, sliding windows, positions) is unchanged.

The subset is the product of a layer set and a head set:

* ``layers``: ``None`` or ``"all"`` (every layer), ``"none"`` (no layer: visible mode),
  a third of the model (``"early"``, ``"middle"``, ``"late"``, as in
  :func:`tempo_lens.pruning.resolve_layers`), or explicit indices (``"0,3,5"``, a tuple);
* ``heads``: ``None`` or ``"all"`` (every query head), ``"none"``, or explicit query-head
  indices (the ``head_index`` of ``hook_attn_scores``; with grouped-query attention several
  query heads share a key head and may still be isolated independently).

:func:`normalise_spec` checks the syntax without a model (for
:class:`~tempo_lens.TempoConfig`); :func:`isolation_plan` resolves it against a model's
shape.

Examples:
    >>> isolation_plan("late", None, n_layers=3, n_heads=4)
    [False, False, True]
    >>> isolation_plan("0", "1,3", n_layers=2, n_heads=4)
    [(1, 3), False]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tempo_lens.pruning import LAYER_GROUPS, resolve_layers

__all__ = [
    "IsolationSpec",
    "LayerIsolation",
    "isolated_pairs",
    "non_isolating",
    "isolation_plan",
    "normalise_spec",
    "resolved_layers",
]

IsolationSpec = str | tuple[int, ...] | None
"""A layer or head set: ``None``/``"all"``, ``"none"``, a layer group, or indices."""

LayerIsolation = bool | tuple[int, ...]
"""One layer's isolation: all heads (``True``), none (``False``), or these query heads."""


def normalise_spec(spec: object, what: str, *, groups: bool) -> IsolationSpec:
    """The canonical form of a layer (``groups=True``) or head set; syntax only.

    Returns ``None`` for "all", ``()`` for "none", a lower-case group name, or sorted
    distinct indices.

    Raises:
        ValueError: Anything else (naming ``what`` and the bad value): unknown names,
            negative or non-integer indices, duplicates.
    """
    if spec is None:
        return None
    if hasattr(spec, "tolist") and not isinstance(spec, str):  # a NumPy array or a tensor
        spec = spec.tolist()
    names = ("all", "none", *LAYER_GROUPS[1:]) if groups else ("all", "none")
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return None
        if text in ("none", ""):
            return ()
        if text in names:
            return text
        parts: Sequence[object] = text.replace(" ", "").split(",")
    elif isinstance(spec, Sequence):
        parts = spec
    else:
        raise ValueError(f"{what} must be one of {names} or indices like '0,3,5', got {spec!r}")
    items: list[int] = []
    for p in parts:
        try:
            value = int(p) if isinstance(p, str) else p.item() if hasattr(p, "item") else p
        except ValueError:
            value = None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"{what} must be one of {names} or indices >= 0 like '0,3,5', got {spec!r}"
            )
        items.append(value)
    if len(set(items)) != len(items):
        raise ValueError(f"{what} lists an index twice: {spec!r}")
    return tuple(sorted(items))


def isolation_plan(
    layers: object, heads: object, *, n_layers: int, n_heads: int
) -> list[LayerIsolation]:
    """Per layer, which query heads isolate siblings.

    Args:
        layers: The layer set (see the module doc; ``None`` = every layer).
        heads: The head set (``None`` = every head).
        n_layers: Layers of the model.
        n_heads: Query heads per layer.

    Returns:
        One :data:`LayerIsolation` per layer: ``True`` where every head isolates,
        ``False`` where none does, else the sorted isolating heads.

    Raises:
        ValueError: A bad spec, or an index out of range for the model (naming it).
    """
    lay = normalise_spec(layers, "isolate_layers", groups=True)
    hd = normalise_spec(heads, "isolate_heads", groups=False)
    try:
        chosen = set(
            range(n_layers) if lay is None else resolve_layers(lay, n_layers) if lay else []
        )
    except ValueError as exc:
        raise ValueError(f"isolate_layers: {exc}") from None
    assert not isinstance(hd, str)  # groups=False: "all"/"none" are None/()
    if hd and hd[-1] >= n_heads:
        raise ValueError(f"isolate_heads {list(hd)} out of range for a model with {n_heads} heads")
    per_layer: LayerIsolation = True if hd is None or len(hd) == n_heads else hd or False
    return [per_layer if layer in chosen else False for layer in range(n_layers)]


def resolved_layers(layers: object, n_layers: int) -> tuple[int, ...] | None:
    """A layer set as explicit indices for an ``n_layers``-layer model (``None``: all).

    Raises:
        ValueError: As :func:`isolation_plan`.
    """
    lay = normalise_spec(layers, "isolate_layers", groups=True)
    if lay is None or isinstance(lay, tuple):
        isolation_plan(lay, None, n_layers=n_layers, n_heads=1)  # range check
        return lay
    plan = isolation_plan(lay, None, n_layers=n_layers, n_heads=1)
    return tuple(i for i, p in enumerate(plan) if p)


def isolated_pairs(
    layers: object, heads: object, layer_ids: Sequence[int], head_ids: Sequence[int]
) -> list[list[bool]]:
    """``[layer][head]``: whether each listed (layer, head) isolates siblings.

    ``layers`` must be explicit indices or ``None`` (see :func:`resolved_layers`): a
    trace records the resolved set.
    """
    lay = normalise_spec(layers, "isolate_layers", groups=True)
    hd = normalise_spec(heads, "isolate_heads", groups=False)
    if isinstance(lay, str):
        raise ValueError(f"isolated_pairs needs layer indices, got the group {lay!r}")
    return [
        [(lay is None or la in lay) and (hd is None or h in hd) for h in head_ids]
        for la in layer_ids
    ]


def non_isolating(
    isolate_layers: object, isolate_heads: object, layer_ids: Sequence[int], head_ids: Sequence[int]
) -> np.ndarray | None:
    """``[layer, head]`` bool mask of the pairs that do *not* isolate siblings.

    ``isolate_layers`` / ``isolate_heads`` as in :class:`~tempo_lens.TempoConfig` (its
    partial isolation); ``None`` when both are ``None`` (every pair isolates).
    """
    if (isolate_layers, isolate_heads) == (None, None):
        return None
    pairs = isolated_pairs(isolate_layers, isolate_heads, layer_ids, head_ids)
    return ~np.array(pairs, dtype=bool)
