"""Every use of ``TransformerBridge`` internals lives here (the bridge backend).

``transformer_lens.model_bridge.TransformerBridge`` (TransformerLens 3.9 and 4.x) wraps a
Hugging Face model and re-implements its rotary attention
(``PositionEmbeddingsAttentionBridge``) so the TransformerLens hook points fire. Facts
relied on (checked by ``tests/model/test_bridge.py`` against the installed version):

* ``blocks.{l}.attn.hook_rot_q`` / ``hook_rot_k`` fire after Hugging Face's RoPE at the
  *physical* positions (``arange + past length``), in the ``[batch, pos, head_index,
  d_head]`` layout, and only on the *new* keys: the Hugging Face KV cache is updated after
  the hook, so cached keys keep the rotation the hook gave them;
* ``hook_attn_scores`` fires after the Hugging Face 4-D mask (causal; sliding window by
  *physical* distance, built from ``config.sliding_window`` at forward time) and before
  the softmax; masked entries hold ``-inf`` or the dtype's minimum;
* the RoPE inverse frequencies are the Hugging Face rotary embedding's buffers
  (``inv_freq``, or ``{layer_type}_inv_freq`` for per-layer-type bases such as Gemma 3).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from tempo_lens._tl import NotRotaryError, UnsupportedAttentionError, hook_name

__all__ = [
    "attention_windows",
    "boot",
    "check_bridge",
    "is_bridge",
    "physical_windows_disabled",
    "rotary_inv_freqs",
    "rotary_layout",
]

_NO_WINDOW = 2**62
_WINDOW_OVERRIDES: dict[int, tuple[Any, int]] = {}


def _bridge_class() -> type | None:
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - TransformerLens without the bridge
        return None
    return TransformerBridge


def is_bridge(model: Any) -> bool:
    """Whether ``model`` is a ``TransformerBridge``."""
    cls = _bridge_class()
    return cls is not None and isinstance(model, cls)


def boot(hf_model: Any, tokenizer: Any, name: str, *, prepend_bos: bool) -> Any:
    """``TransformerBridge.boot_transformers`` around an already loaded HF causal LM.

    Nothing is downloaded: the config comes from ``hf_model``; the bridge keeps the given
    tokenizer unchanged (TransformerLens would reload it with ``add_bos_token=True``) and
    ``cfg.default_prepend_bos = prepend_bos`` (the model's training convention). The
    bridge wraps ``hf_model``'s modules in place.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    device = next(hf_model.parameters()).device
    bridge = TransformerBridge.boot_transformers(  # it edits the tokenizer it is given
        name, hf_model=hf_model, tokenizer=copy.deepcopy(tokenizer), device=device
    )
    check_bridge(bridge)
    bridge._tokenizer = tokenizer  # the setter would re-run the BOS-adding setup
    bridge.cfg.default_prepend_bos = prepend_bos
    bridge.cfg.tokenizer_prepends_bos = len(tokenizer.encode("a")) > 1
    return bridge


def _hf(model: Any) -> Any:
    return model.original_model


def _hf_config(model: Any) -> Any:
    return _hf(model).config


def _rotary_embedding(model: Any) -> Any:
    hf = _hf(model)
    for owner in (getattr(hf, "model", None), hf):
        rot = getattr(owner, "rotary_emb", None)
        if rot is not None:
            return rot
    raise UnsupportedAttentionError(
        f"{type(hf).__name__} has no model-level rotary embedding (rotary_emb); the bridge "
        "backend needs one to re-rotate queries and keys"
    )


def check_bridge(model: Any) -> None:
    """Raise unless every layer of the bridge exposes the hooks TEMPO needs.

    Raises:
        NotRotaryError: No RoPE, or a RoPE type whose frequencies depend on the length.
        UnsupportedAttentionError: A layer without ``hook_rot_q``/``hook_rot_k``/
            ``hook_attn_scores`` (attention the bridge does not re-implement).
    """
    if getattr(model.cfg, "positional_embedding_type", None) != "rotary":
        raise NotRotaryError(
            "the bridged model does not use rotary position embeddings; TEMPO shares RoPE "
            "positions, so tempo_lens supports only rotary models"
        )
    rot = _rotary_embedding(model)
    rope_types = getattr(rot, "rope_type", "default")
    kinds = set(rope_types.values()) if isinstance(rope_types, dict) else {rope_types}
    if kinds & {"dynamic", "longrope"}:
        raise NotRotaryError(
            f"rope_type {sorted(kinds)} rescales frequencies with the sequence length; "
            "tempo_lens cannot re-rotate it exactly"
        )
    hooks = model.hook_dict
    for layer in range(int(model.cfg.n_layers)):
        for short in ("rot_q", "rot_k", "attn_scores"):
            if (name := hook_name(layer, short)) not in hooks:
                raise UnsupportedAttentionError(
                    f"{name} missing: this bridge does not re-implement the layer's rotary "
                    "attention, so TEMPO cannot act on it"
                )


def rotary_inv_freqs(model: Any) -> list[Tensor]:
    """Each layer's RoPE inverse frequencies (float64), from the HF rotary embedding."""
    rot = _rotary_embedding(model)
    types = getattr(_hf_config(model), "layer_types", None)
    out = []
    for layer in range(int(model.cfg.n_layers)):
        name = f"{types[layer]}_inv_freq" if types else "inv_freq"
        inv = getattr(rot, name, None)
        if inv is None:
            inv = rot.inv_freq
        out.append(inv.detach().to(torch.float64).cpu())
    return out


def rotary_layout(model: Any) -> tuple[int, bool]:
    """``(rotary_dim, adjacent_pairs)`` of the bridged model's RoPE."""
    rotary_dim = 2 * int(rotary_inv_freqs(model)[0].numel())
    cfg = model.cfg
    adjacent = bool(getattr(cfg, "rotary_adjacent_pairs", False)) or bool(
        getattr(cfg, "rotary_interleaved_cos_sin", False)
    )
    return rotary_dim, adjacent


def attention_windows(model: Any) -> list[int | None]:
    """Sliding-window size of each layer (``None`` for full attention), from the HF config."""
    cfg = _hf_config(model)
    n = int(model.cfg.n_layers)
    saved = _WINDOW_OVERRIDES.get(id(cfg))
    window = saved[1] if saved is not None else getattr(cfg, "sliding_window", None)
    if window is None or getattr(cfg, "use_sliding_window", True) is False:
        return [None] * n
    types = getattr(cfg, "layer_types", None)
    if types:
        return [int(window) if t == "sliding_attention" else None for t in types[:n]]
    return [int(window)] * n


@contextmanager
def physical_windows_disabled(model: Any) -> Iterator[None]:
    """Within the block Hugging Face builds plain causal masks for sliding layers.

    ``config.sliding_window`` (read when the masks are built, every forward) is set beyond
    any length and restored on exit, so ``hook_attn_scores`` can apply TEMPO's logical
    window. Models without sliding layers are untouched.
    """
    cfg = _hf_config(model)
    if all(w is None for w in attention_windows(model)) or id(cfg) in _WINDOW_OVERRIDES:
        yield
        return
    _WINDOW_OVERRIDES[id(cfg)] = (cfg, cfg.sliding_window)
    cfg.sliding_window = _NO_WINDOW
    try:
        yield
    finally:
        cfg.sliding_window = _WINDOW_OVERRIDES.pop(id(cfg))[1]
