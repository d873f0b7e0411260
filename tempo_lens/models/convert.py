"""Building a ``HookedTransformer`` from a Hugging Face model (TransformerLens internals).

Part of :mod:`tempo_lens.backends` (which re-exports every name here): the weight conversion
and state-dict loading the offline loader (:mod:`tempo_lens.models.gguf_loader`) relies on, kept
next to the other TransformerLens internals so a port to ``TransformerBridge`` stays local.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:  # absent from TransformerLens 4.x: imported where used
    from transformer_lens import HookedTransformer, HookedTransformerConfig

__all__ = [
    "attach_tokenizer",
    "hooked_config",
    "hooked_from_hf",
    "hooked_from_state_dict",
    "hooked_parameters",
    "processed_config_dict",
]


def hooked_config(
    cfg_dict: dict[str, Any],
    *,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    init_weights: bool = True,
) -> HookedTransformerConfig:
    """A ``HookedTransformerConfig`` from JSON-safe kwargs plus dtype/device.

    ``init_weights=False`` skips TransformerLens' random init (parameters are left
    uninitialised), for models whose weights are loaded right after.
    """
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        **cfg_dict, dtype=dtype, device=device, init_weights=init_weights
    )


def hooked_from_hf(hf_model: Any, cfg: HookedTransformerConfig) -> HookedTransformer:
    """Convert a Hugging Face Llama or Gemma 3 into a ``HookedTransformer``.

    Uses TransformerLens' ``convert_llama_weights`` / ``convert_gemma_weights`` (chosen by
    ``cfg.original_architecture``) and ``load_and_process_state_dict`` without centring:
    RMS norm does not subtract the mean, so centring writing weights would change the
    function, and an uncentred unembed keeps logits equal to Hugging Face's. Llama's RMS
    scales are folded into the next linear layer (``fold_ln=True``, norms become
    ``RMSPre``); Gemma 3's are not, because TransformerLens 3.9's folding is not exact
    there (max logit error 6.5 on a tiny random Gemma 3, 3e-6 unfolded). Neither family
    has biases, so folding value biases is a no-op and skipped.

    Raises:
        ValueError: An architecture other than ``LlamaForCausalLM`` / ``Gemma3ForCausalLM``.
    """
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    converters = {
        "LlamaForCausalLM": convert_llama_weights,
        "Gemma3ForCausalLM": convert_gemma_weights,
    }
    if cfg.original_architecture not in converters:
        raise ValueError(f"no weight conversion for {cfg.original_architecture!r}")
    convert = converters[cfg.original_architecture]
    model = HookedTransformer(cfg, move_to_device=False)
    with torch.no_grad():
        state_dict = convert(hf_model, cfg)
        model.load_and_process_state_dict(
            state_dict,
            fold_ln=cfg.original_architecture != "Gemma3ForCausalLM",
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
        )
    return model.eval()


def processed_config_dict(model: HookedTransformer, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """``cfg_dict`` updated with what weight processing changed (the norm type after folding)."""
    return {**cfg_dict, "normalization_type": model.cfg.normalization_type}


def hooked_parameters(model: HookedTransformer) -> dict[str, Tensor]:
    """The model's parameters (not its buffers: masks and sin/cos tables are rebuilt)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def hooked_from_state_dict(
    cfg: HookedTransformerConfig, parameters: dict[str, Tensor]
) -> HookedTransformer:
    """A ``HookedTransformer`` whose parameters are already processed tensors.

    ``cfg`` should have ``init_weights=False`` and the processed ``normalization_type``
    (e.g. ``"RMSPre"``). The tensors are assigned, not copied, so the uninitialised
    parameters are never touched; buffers keep the values the constructor computed.

    Raises:
        ValueError: ``parameters`` does not match the model's parameters exactly.
    """
    from transformer_lens import HookedTransformer

    model = HookedTransformer(cfg, move_to_device=False)
    expected = {name for name, _ in model.named_parameters()}
    if set(parameters) != expected:
        missing, extra = sorted(expected - set(parameters)), sorted(set(parameters) - expected)
        raise ValueError(f"state dict mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(parameters, strict=False, assign=True)
    return model.eval()


def attach_tokenizer(model: HookedTransformer, tokenizer: Any) -> None:
    """Set ``model.tokenizer`` to ``tokenizer`` as-is.

    ``HookedTransformer.set_tokenizer`` reloads the tokenizer with ``add_bos_token=True``
    (via ``name_or_path``), which for a model trained without BOS makes
    ``model.tokenizer(text)`` silently prepend a token. This keeps the tokenizer unchanged
    and sets the same config fields ``set_tokenizer`` does.
    """
    model.tokenizer = tokenizer
    if tokenizer.padding_side is None:
        tokenizer.padding_side = "right"
    model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
    if tokenizer.eos_token is None:
        tokenizer.eos_token = "<|endoftext|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
