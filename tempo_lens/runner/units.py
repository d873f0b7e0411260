"""Units of a sweep: one prompt under one condition, its key, its seed, and batching chunks.

Re-exported by :mod:`tempo_lens.runner`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tempo_lens.io import jsonable
from tempo_lens.prompts import Prompt

__all__ = ["Unit", "chunks", "unit_seed"]


@dataclass(frozen=True)
class Unit:
    """One prompt under one condition.

    Attributes:
        prompt: The prompt.
        condition: JSON-serialisable settings of this unit (e.g. ``{"mode": "isolated"}``).
    """

    prompt: Prompt
    condition: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """File-name-safe unique key, e.g. ``p003__mode=isolated``."""
        parts = [self.prompt.id] + [f"{k}={_slug(v)}" for k, v in self.condition.items()]
        return "__".join(parts)


def _slug(v: Any) -> str:
    s = json.dumps(jsonable(v), sort_keys=True) if not isinstance(v, str) else v
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in s)


def unit_seed(seed: int, key: str) -> int:
    """The seed of a unit: ``sha256(f"{seed}:{key}")`` folded to 31 bits."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big") >> 1


def chunks(units: Sequence[Unit], batch_size: int) -> list[list[Unit]]:
    """``units`` cut into chunks of at most ``batch_size`` units that share a condition.

    Units keep their order within a condition; conditions come in order of first
    appearance. One chunk is one batched call (sequences per forward = its length).

    Raises:
        ValueError: ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[str, list[Unit]] = {}
    for u in units:
        groups.setdefault(json.dumps(jsonable(u.condition), sort_keys=True), []).append(u)
    return [g[i : i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
