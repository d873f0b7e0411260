"""The same weights as a Hugging Face Llama: for running Hugging Face's decoders offline.

:func:`hf_llama_from_hooked` inverts TransformerLens' Llama weight conversion
(``convert_llama_weights``): ``W_Q [n, m, h] -> q_proj.weight [(n h), m]``, GQA keys and
values from ``_W_K`` / ``_W_V``, ``W_O [n, h, m] -> o_proj.weight [m, (n h)]``, the MLP and
unembedding transposed. RMS scales are copied, or set to 1 where TransformerLens folded
them into the next weights (``normalization_type="RMSPre"``) — both give the same
function. Used by :mod:`tempo_lens.experiments.compare_decoders` to run Hugging Face
prompt-lookup decoding on the tiny test model; the default model has its own dequantized
Hugging Face copy (:func:`tempo_lens.models.gguf_loader.load_hf_model`).

Examples:
    >>> import tempo_lens as tl
    >>> hf = hf_llama_from_hooked(tl.make_tiny_model())
    >>> hf.config.num_hidden_layers
    2
"""

from __future__ import annotations

from typing import Any

import torch

from tempo_lens.backends import TempoModel, is_bridge

__all__ = ["hf_causal_lm", "hf_llama_from_hooked"]


def hf_causal_lm(model: TempoModel) -> Any:
    """A plain Hugging Face causal LM computing ``model``'s logits (either backend).

    A ``TransformerBridge``: an unwrapped copy of the Hugging Face model it runs
    (:func:`tempo_lens.backends.bridge.unwrapped_hf_copy`); an offline model loaded by
    :func:`tempo_lens.load_model` (SmolLM2, Gemma 3 270M): the cached Hugging Face copy it
    was converted from (:func:`tempo_lens.models.gguf_loader.load_hf_model`); any other
    ``HookedTransformer``: :func:`hf_llama_from_hooked`.

    Raises:
        ValueError: a ``HookedTransformer`` that is not Llama-shaped.
    """
    if is_bridge(model):
        from tempo_lens.backends.bridge import unwrapped_hf_copy

        return unwrapped_hf_copy(model)
    from tempo_lens.models.gguf_files import KNOWN_MODELS

    name = str(getattr(model.cfg, "model_name", ""))
    if name in KNOWN_MODELS and getattr(model, "tempo_lens_weights_sha256", None):
        # an offline model: the cached Hugging Face copy it was converted from
        from tempo_lens.models.gguf_loader import load_hf_model

        return load_hf_model(name)[0]
    return hf_llama_from_hooked(model)


def hf_llama_from_hooked(model: TempoModel) -> Any:
    """A float32 ``LlamaForCausalLM`` (eager attention, eval) computing ``model``'s logits.

    Raises:
        ValueError: ``model`` is a ``TransformerBridge`` (use :func:`hf_causal_lm`), or
            not Llama-shaped (gated SiLU MLP, RMS norms, full GPT-NeoX-paired RoPE, no
            biases).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if is_bridge(model):
        raise ValueError(
            "hf_llama_from_hooked takes a HookedTransformer; for a TransformerBridge use "
            "hf_causal_lm (an unwrapped copy of the Hugging Face model it runs)"
        )
    cfg = model.cfg
    problems = [
        name
        for name, ok in [
            ("rotary positions", cfg.positional_embedding_type == "rotary"),
            ("rotary_dim == d_head", cfg.rotary_dim == cfg.d_head),
            ("GPT-NeoX rotary pairing", not cfg.rotary_adjacent_pairs),
            ("gated SiLU MLP", cfg.gated_mlp and cfg.act_fn == "silu"),
            ("RMS norms", cfg.normalization_type in ("RMS", "RMSPre") and cfg.final_rms),
        ]
        if not ok
    ]
    biases = [n for n, p in model.named_parameters() if n.split(".")[-1].startswith("b_")]
    problems += [f"nonzero {n}" for n in biases if bool(model.get_parameter(n).abs().max() > 0)]
    if problems:
        raise ValueError(f"not a Llama-shaped HookedTransformer: {', '.join(problems)}")
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    kwargs: dict[str, Any] = dict(
        vocab_size=cfg.d_vocab,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=n_kv,
        head_dim=cfg.d_head,
        max_position_embeddings=cfg.n_ctx,
        rms_norm_eps=cfg.eps,
        rope_theta=float(cfg.rotary_base),
        tie_word_embeddings=False,
        attn_implementation="eager",
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    hf = LlamaForCausalLM(LlamaConfig(**kwargs))
    sd: dict[str, Any] = {
        "model.embed_tokens.weight": model.W_E,
        "lm_head.weight": model.W_U.T,
        "model.norm.weight": _norm(model.ln_final, cfg.d_model),
    }
    for i, block in enumerate(model.blocks):
        attn, p = block.attn, f"model.layers.{i}."
        w_k = attn._W_K if cfg.n_key_value_heads else attn.W_K
        w_v = attn._W_V if cfg.n_key_value_heads else attn.W_V
        sd |= {
            p + "input_layernorm.weight": _norm(block.ln1, cfg.d_model),
            p + "post_attention_layernorm.weight": _norm(block.ln2, cfg.d_model),
            p + "self_attn.q_proj.weight": _heads_out(attn.W_Q),
            p + "self_attn.k_proj.weight": _heads_out(w_k),
            p + "self_attn.v_proj.weight": _heads_out(w_v),
            p + "self_attn.o_proj.weight": attn.W_O.reshape(-1, cfg.d_model).T,
            p + "mlp.gate_proj.weight": block.mlp.W_gate.T,
            p + "mlp.up_proj.weight": block.mlp.W_in.T,
            p + "mlp.down_proj.weight": block.mlp.W_out.T,
        }
    state = {k: v.detach().to(torch.float32).cpu().contiguous() for k, v in sd.items()}
    hf.load_state_dict(state, strict=True)
    return hf.eval()


def _heads_out(w: Any) -> torch.Tensor:
    """``[n, m, h] -> [(n h), m]`` (the inverse of ``"(n h) m -> n m h"``)."""
    return w.permute(0, 2, 1).reshape(-1, w.shape[1])


def _norm(ln: Any, d_model: int) -> torch.Tensor:
    """The RMS scale of ``ln`` (ones when TransformerLens folded it away)."""
    w = getattr(ln, "w", None)
    return w if w is not None else torch.ones(d_model)
