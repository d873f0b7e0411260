"""The research-question experiments, each a module defining ``SPEC`` and ``main(argv)``.

Run one with ``python -m tempo_lens.experiments.NAME --output-dir D ...`` or
``tempo-lens experiment NAME --output-dir D ...``; :func:`available` lists the names.
How to write a new one on the runner: ``docs/experiments.md``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from tempo_lens.experiments._common import GenerationConfig

__all__ = ["GenerationConfig", "available", "spec"]


def available() -> list[str]:
    """Names of the experiments shipped with tempo_lens (sorted).

    The public modules here that define ``SPEC`` (helpers such as ``findings_rules`` do not).
    """
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(n for n in names if hasattr(importlib.import_module(f"{__name__}.{n}"), "SPEC"))


def spec(name: str) -> Any:
    """The :class:`~tempo_lens.runner.ExperimentSpec` of experiment ``name``.

    Raises:
        ValueError: no experiment of that name.
    """
    if name not in available():
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}").SPEC
