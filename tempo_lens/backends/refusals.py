"""Architecture refusals of the bridge backend: what the TEMPO hooks cannot express exactly.

Called by :func:`tempo_lens.backends.bridge.check_bridge` (so by ``load_model``,
``generate``, ``attach`` and ``verify``) before anything runs; each refusal is an
:class:`~tempo_lens.UnsupportedAttentionError` whose message names the reason. The
families each one refuses, measured on TransformerLens 4.3, are in ``docs/models.md``
(architecture matrix).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tempo_lens.backends.base import UnsupportedAttentionError, hook_name

__all__ = ["check_hf_attention", "probe_rotary_hooks"]


def check_hf_attention(cfg: Any) -> None:
    """Refuse attention variants (read from the HF config) the TEMPO hooks cannot express.

    Args:
        cfg: The Hugging Face model's config.

    Raises:
        UnsupportedAttentionError: Multi-head latent attention, layers without RoPE, or
            chunked attention.
    """
    if getattr(cfg, "kv_lora_rank", None) or getattr(cfg, "qk_rope_head_dim", None):
        raise UnsupportedAttentionError(
            "multi-head latent attention (kv_lora_rank / qk_rope_head_dim, DeepSeek V2/V3): "
            "RoPE acts on decoupled rope dimensions concatenated to the latent keys, which the "
            "bridge does not expose at hook_rot_q/hook_rot_k"
        )
    no_rope = getattr(cfg, "no_rope_layers", None)
    if no_rope is not None and not all(no_rope):
        raise UnsupportedAttentionError(
            "layers without RoPE among rotary ones (no_rope_layers, Llama 4 NoPE): TEMPO's "
            "positions would have to act on those layers' attention without a rotation"
        )
    if getattr(cfg, "attention_chunk_size", None):
        raise UnsupportedAttentionError(
            "chunked attention (attention_chunk_size): keys are masked by physical chunk "
            "boundaries, which have no counterpart in TEMPO's logical positions"
        )


def probe_rotary_hooks(model: Any, hf_model: Any) -> None:
    """A two-token forward: every layer's hook_rot_q and hook_rot_k must fire.

    A bridge whose attention bypasses them (measured: TransformerLens 4.3's joint-QKV
    attention for Phi-3) would silently ignore TEMPO's positions. The result is remembered
    on the model; skipped while hooks are attached to the rotary hook points.

    Args:
        model: A ``TransformerBridge`` whose hook points include every layer's
            ``hook_rot_q``/``hook_rot_k``.
        hf_model: The Hugging Face model it wraps (for the device and the error message).

    Raises:
        UnsupportedAttentionError: A rotary hook that never fires, or a bridge forward that
            fails on this architecture (the message carries its error).
    """
    if getattr(model, "_tempo_lens_rotary_probe", False):
        return
    n = int(model.cfg.n_layers)
    names = [hook_name(layer, short) for layer in range(n) for short in ("rot_q", "rot_k")]
    if any(model.hook_dict[name].fwd_hooks for name in names):
        return  # hooks attached (TEMPO's or a user's): a probe forward would run them
    fired: set[str] = set()

    def seen(t: Tensor, hook: Any) -> Tensor:
        fired.add(hook.name)
        return t

    device = next(hf_model.parameters()).device
    tokens = torch.zeros(1, 2, dtype=torch.long, device=device)
    try:
        with torch.no_grad():
            model.run_with_hooks(
                tokens,
                fwd_hooks=[(name, seen) for name in names],
                attention_mask=torch.ones_like(tokens),
                position_ids=torch.arange(2, device=device)[None],
            )
    except Exception as exc:  # the bridge's own forward is broken for this architecture
        raise UnsupportedAttentionError(
            f"the bridge's forward fails on {type(hf_model).__name__} "
            f"({type(exc).__name__}: {exc}); TEMPO cannot act on it"
        ) from exc
    silent = [name for name in names if name not in fired]
    if silent:
        raise UnsupportedAttentionError(
            f"{silent[0]} (and {len(silent) - 1} more) never fires: this bridge's attention "
            f"({type(model.blocks[0].attn).__name__}) applies RoPE without the hook, so TEMPO's "
            "positions would be silently ignored"
        )
    model._tempo_lens_rotary_probe = True
