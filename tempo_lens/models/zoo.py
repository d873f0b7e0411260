"""Tiny random Hugging Face models of the rotary decoder families: the architecture matrix.

:func:`tiny_architecture` builds a seeded random model of one family from its
``transformers`` config class (offline: no hub, no tokenizer; vocabulary 64, 2-4 layers,
64 wide, eager attention, weights drawn sharper than the default init so attention is far
from uniform). Each differs from Llama exactly where TEMPO's hooks act (partial or
adjacent-pair rotary, scaled RoPE, q/k norms, sliding windows, soft-capping, mixtures of
experts, NoPE layers, attention sinks, latent attention). ``tests/model/test_architectures.py``
runs :func:`tempo_lens.verify` on every one of them; ``tools/model_matrix.py`` writes the
matrix of ``docs/models.md`` from the same run.

The table :data:`ARCHITECTURES` is plain data (no model library is imported until a model
is built), so the command line can list it cheaply.

Examples:
    >>> hf = tiny_architecture("qwen3")
    >>> type(hf).__name__, hf.config.num_hidden_layers
    ('Qwen3ForCausalLM', 2)
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ARCHITECTURES", "tiny_architecture"]

_BASE: dict[str, Any] = dict(
    vocab_size=64,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
    tie_word_embeddings=False,
)
_GPTJ: dict[str, Any] = dict(
    vocab_size=64, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=256,
    bos_token_id=None, eos_token_id=None, pad_token_id=None,
)  # fmt: skip
_MOE: dict[str, Any] = dict(num_experts_per_tok=2)
_SLIDING = ["sliding_attention", "sliding_attention", "full_attention"]
_GEMMA: dict[str, Any] = dict(  # Gemma 2 and 3: local/global layers, window 4
    head_dim=16, sliding_window=4, query_pre_attn_scalar=16, num_hidden_layers=3,
    layer_types=_SLIDING,
)  # fmt: skip

ARCHITECTURES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "llama": ("Llama", "LlamaConfig", "LlamaForCausalLM", {}),
    "llama3-rope-scaling": (
        "Llama 3 scaled RoPE (rope_type llama3)",
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=10000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            )
        ),
    ),
    "yarn": (
        "Llama with YaRN RoPE",
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            rope_parameters=dict(
                rope_type="yarn",
                rope_theta=10000.0,
                factor=4.0,
                original_max_position_embeddings=64,
            )
        ),
    ),  # fmt: skip
    "mistral": (
        "Mistral (sliding window 4)",
        "MistralConfig",
        "MistralForCausalLM",
        dict(sliding_window=4),
    ),  # fmt: skip
    "qwen2": ("Qwen2 (q/k/v biases)", "Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3 (q/k norm)", "Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16)),
    "gemma2": (
        "Gemma 2 (sliding window 4, attention and final soft-capping)",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        _GEMMA,
    ),  # fmt: skip
    "gemma3": (
        "Gemma 3 (sliding window 4, local/global RoPE bases, q/k norm)",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        _GEMMA,
    ),  # fmt: skip
    "olmo2": ("OLMo 2 (q/k norm over all heads)", "Olmo2Config", "Olmo2ForCausalLM", {}),
    "phi3": (
        "Phi-3 (partial rotary 0.5, fused qkv)",
        "Phi3Config",
        "Phi3ForCausalLM",
        dict(partial_rotary_factor=0.5),
    ),  # fmt: skip
    "phi": (
        "Phi (partial rotary 0.5, parallel block)",
        "PhiConfig",
        "PhiForCausalLM",
        dict(partial_rotary_factor=0.5),
    ),  # fmt: skip
    "stablelm": (
        "StableLM (partial rotary 0.25)",
        "StableLmConfig",
        "StableLmForCausalLM",
        dict(partial_rotary_factor=0.25),
    ),  # fmt: skip
    "gpt-neox": (
        "GPT-NeoX (rotary_pct 0.25)",
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        dict(rotary_pct=0.25, num_key_value_heads=4),
    ),  # fmt: skip
    "gpt-j": ("GPT-J (adjacent pairs, rotary_dim 8)", "GPTJConfig", "GPTJForCausalLM", _GPTJ),
    "codegen": (
        "CodeGen (adjacent pairs, rotary_dim 8)",
        "CodeGenConfig",
        "CodeGenForCausalLM",
        dict(_GPTJ, n_ctx=256),
    ),  # fmt: skip
    "cohere": (
        "Cohere (adjacent pairs, parallel block)",
        "CohereConfig",
        "CohereForCausalLM",
        dict(logit_scale=1.0),
    ),  # fmt: skip
    "mixtral": (
        "Mixtral (MoE, 4 experts)",
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(_MOE, num_local_experts=4),
    ),  # fmt: skip
    "olmoe": (
        "OLMoE (MoE, q/k norm)",
        "OlmoeConfig",
        "OlmoeForCausalLM",
        dict(_MOE, num_experts=4),
    ),  # fmt: skip
    "qwen2-moe": (
        "Qwen2 MoE (shared expert)",
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        dict(_MOE, num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=32),
    ),
    "qwen3-moe": (
        "Qwen3 MoE",
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        dict(_MOE, num_experts=4, moe_intermediate_size=32, head_dim=16),
    ),  # fmt: skip
    "llama4": (
        "Llama 4 text (NoPE layers, chunked attention, MoE)",
        "Llama4TextConfig",
        "Llama4ForCausalLM",
        dict(
            head_dim=16,
            num_local_experts=2,
            intermediate_size_mlp=128,
            num_hidden_layers=4,
            no_rope_layers=[1, 1, 1, 0],
            attention_chunk_size=8,
        ),
    ),  # fmt: skip
    "gpt-oss": (
        "GPT-OSS (attention sinks, sliding window 4, MoE)",
        "GptOssConfig",
        "GptOssForCausalLM",
        dict(
            _MOE,
            num_local_experts=4,
            head_dim=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
        ),
    ),  # fmt: skip
    "deepseek-v3": (
        "DeepSeek V3 (latent attention, decoupled RoPE dims)",
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        dict(
            _MOE,
            kv_lora_rank=16,
            q_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=8,
            v_head_dim=16,
            n_routed_experts=4,
            moe_intermediate_size=32,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
        ),
    ),  # fmt: skip
    "gpt2": (
        "GPT-2 (learned absolute positions; not rotary)",
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(
            vocab_size=64,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=256,
            bos_token_id=None,
            eos_token_id=None,
        ),
    ),  # fmt: skip
    "bloom": (
        "BLOOM (ALiBi; not rotary)",
        "BloomConfig",
        "BloomForCausalLM",
        dict(
            vocab_size=64,
            hidden_size=64,
            n_layer=2,
            n_head=4,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        ),
    ),  # fmt: skip
}
"""Family key -> ``(description, config class, model class, config overrides)``."""


def tiny_architecture(name: str, *, seed: int = 0, init_scale: float = 0.3) -> Any:
    """A seeded random tiny Hugging Face causal LM of family ``name`` (eval, float32, CPU).

    Args:
        name: A key of :data:`ARCHITECTURES`.
        seed: Initialisation seed.
        init_scale: Standard deviation of the matrices (norm weights and biases get a
            third of it around their defaults), so attention is sharp.

    Raises:
        ValueError: An unknown family, or one the installed ``transformers`` lacks.
    """
    import transformers

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: choose from {sorted(ARCHITECTURES)}")
    _, cfg_name, model_name, overrides = ARCHITECTURES[name]
    cfg_cls = getattr(transformers, cfg_name, None)
    model_cls = getattr(transformers, model_name, None)
    if cfg_cls is None or model_cls is None:
        raise ValueError(
            f"{name}: transformers {transformers.__version__} has no {cfg_name}/{model_name}"
        )
    base = {} if "n_embd" in overrides or "n_layer" in overrides else _BASE
    cfg = cfg_cls(**{**base, **overrides})
    cfg._attn_implementation = "eager"
    cfg.architectures = [model_name]
    torch.manual_seed(seed)
    hf = model_cls(cfg).eval()
    with torch.no_grad():
        for param in hf.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, init_scale)
            else:
                param.add_(torch.randn_like(param) * init_scale / 3)
    return hf
