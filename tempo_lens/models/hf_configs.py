"""``HookedTransformerConfig`` keyword arguments from Hugging Face configs (pure mapping).

Written out per architecture, mirroring TransformerLens' ``convert_hf_model_config``
branches, so no hub lookup is needed and every field tempo_lens relies on is explicit.
Only what the hooks reproduce exactly is accepted: the default RoPE type (per layer type
for Gemma 3), no soft-capping.

Examples:
    >>> from transformers import Gemma3TextConfig
    >>> d = hooked_config_dict(Gemma3TextConfig(num_hidden_layers=6))
    >>> d["attn_types"][:6], d["rotary_base_local"], d["rotary_base"]
    (['local', 'local', 'local', 'local', 'local', 'global'], 10000.0, 1000000.0)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "gemma3_config_dict",
    "hooked_config_dict",
    "llama_config_dict",
]

GEMMA3_N_CTX = 8192
"""Context used for Gemma 3 (TransformerLens' default for gemma-3-270m; the model supports
32768, but every layer stores sin/cos tables of ``n_ctx x d_head``)."""


def _rope_theta(params: dict[str, Any], what: str) -> float:
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(
            f"{what}: rope_type={rope_type!r} is not supported by the offline builder; load "
            "the model with HookedTransformer.from_pretrained and pass it in"
        )
    return float(params.get("rope_theta", 10000.0))


def llama_config_dict(hf_config: Any, *, default_prepend_bos: bool = False) -> dict[str, Any]:
    """JSON-safe ``HookedTransformerConfig`` kwargs for a Hugging Face ``LlamaConfig``.

    Mirrors TransformerLens' ``LlamaForCausalLM`` branch of ``convert_hf_model_config``
    (RMS norm, gated SiLU MLP, GPT-NeoX RoPE pairing, GQA). Only the default RoPE type is
    accepted.

    Raises:
        ValueError: The config uses RoPE scaling (llama3, YaRN, ...), which this
            builder does not translate.
    """
    rope = dict(getattr(hf_config, "rope_parameters", None) or {})
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    if "rope_type" not in rope and "rope_type" in scaling:
        rope["rope_type"] = scaling["rope_type"]
    rope.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    theta = _rope_theta(rope, "Llama")
    n_heads = int(hf_config.num_attention_heads)
    d_head = int(getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads)
    n_kv = int(getattr(hf_config, "num_key_value_heads", None) or n_heads)
    return {
        "d_model": int(hf_config.hidden_size),
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": int(hf_config.intermediate_size),
        "n_layers": int(hf_config.num_hidden_layers),
        "n_ctx": int(hf_config.max_position_embeddings),
        "eps": float(hf_config.rms_norm_eps),
        "d_vocab": int(hf_config.vocab_size),
        "act_fn": str(hf_config.hidden_act),
        "n_key_value_heads": n_kv if n_kv != n_heads else None,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "rotary_base": theta,
        "final_rms": True,
        "gated_mlp": True,
        "original_architecture": "LlamaForCausalLM",
        "default_prepend_bos": default_prepend_bos,
    }


def gemma3_config_dict(hf_config: Any, *, default_prepend_bos: bool = True) -> dict[str, Any]:
    """JSON-safe ``HookedTransformerConfig`` kwargs for a Hugging Face ``Gemma3TextConfig``.

    Mirrors TransformerLens' ``google/gemma-3-270m`` entry: RMS norms before *and* after
    attention and MLP, q/k RMS norm, gated GELU-tanh MLP, ``attn_scale =
    sqrt(query_pre_attn_scalar)``, one rotary base per layer type (``rotary_base`` for
    full-attention layers, ``rotary_base_local`` for sliding-window ones), and local
    attention with ``window_size = sliding_window`` on the layers Hugging Face marks
    ``"sliding_attention"``.

    Raises:
        ValueError: Soft-capping, a non-default RoPE type, or an unknown layer type.
    """
    for cap in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(hf_config, cap, None) is not None:
            raise ValueError(f"Gemma 3 with {cap}={getattr(hf_config, cap)} is not supported")
    layer_types = list(hf_config.layer_types)
    unknown = sorted(set(layer_types) - {"sliding_attention", "full_attention"})
    if unknown:
        raise ValueError(f"unknown Gemma 3 layer types {unknown}")
    rope = dict(getattr(hf_config, "rope_parameters", None) or {})
    if "full_attention" in rope:  # transformers >= 5: one entry per layer type
        base = _rope_theta(rope["full_attention"], "Gemma 3 full attention")
        base_local = _rope_theta(rope.get("sliding_attention", {}), "Gemma 3 sliding attention")
    else:  # transformers 4.x: rope_theta + rope_local_base_freq
        base = _rope_theta({**rope, "rope_theta": hf_config.rope_theta}, "Gemma 3")
        base_local = float(hf_config.rope_local_base_freq)
    n_heads = int(hf_config.num_attention_heads)
    d_head = int(hf_config.head_dim)
    return {
        "d_model": int(hf_config.hidden_size),
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": int(hf_config.intermediate_size),
        "n_layers": int(hf_config.num_hidden_layers),
        "n_ctx": min(int(hf_config.max_position_embeddings), GEMMA3_N_CTX),
        "eps": float(hf_config.rms_norm_eps),
        "d_vocab": int(hf_config.vocab_size),
        "act_fn": str(hf_config.hidden_activation),
        "n_key_value_heads": int(hf_config.num_key_value_heads),
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "rotary_base": base,
        "rotary_base_local": base_local,
        "use_attn_scale": True,
        "attn_scale": float(hf_config.query_pre_attn_scalar) ** 0.5,
        "use_qk_norm": True,
        "use_normalization_before_and_after": True,
        "final_rms": True,
        "gated_mlp": True,
        "use_local_attn": "sliding_attention" in layer_types,
        "window_size": int(hf_config.sliding_window),
        "attn_types": ["local" if t == "sliding_attention" else "global" for t in layer_types],
        "original_architecture": "Gemma3ForCausalLM",
        "default_prepend_bos": default_prepend_bos,
    }


SUPPORTED_ARCHITECTURES = {"llama": llama_config_dict, "gemma3_text": gemma3_config_dict}
"""Hugging Face ``model_type`` -> builder."""


def hooked_config_dict(hf_config: Any, **kwargs: Any) -> dict[str, Any]:
    """Dispatch on ``hf_config.model_type`` (see :data:`SUPPORTED_ARCHITECTURES`).

    Raises:
        ValueError: Unsupported ``model_type``.
    """
    builder = SUPPORTED_ARCHITECTURES.get(hf_config.model_type)
    if builder is None:
        raise ValueError(
            f"model_type={hf_config.model_type!r} has no offline builder (supported: "
            f"{sorted(SUPPORTED_ARCHITECTURES)}); load a HookedTransformer yourself"
        )
    return builder(hf_config, **kwargs)
