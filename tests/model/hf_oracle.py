"""An independent implementation: Hugging Face Llama fed explicit positions and 4-D masks."""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights
from transformers import LlamaConfig, LlamaForCausalLM

from tempo_lens import SequenceState


def tiny_llama_pair(seed: int = 0, n_kv: int = 2) -> tuple[LlamaForCausalLM, HookedTransformer]:
    """A random tiny HF Llama and the HookedTransformer built from the same weights."""
    torch.manual_seed(seed)
    hf_cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    hf = LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # sharper than the default init, so attention is far from uniform
        for p in hf.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    cfg = HookedTransformerConfig(
        d_model=64,
        n_heads=4,
        d_head=16,
        n_layers=2,
        d_mlp=128,
        d_vocab=64,
        n_ctx=256,
        act_fn="silu",
        normalization_type="RMS",
        final_rms=True,
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=16,
        rotary_base=10000,
        n_key_value_heads=n_kv,
        eps=1e-6,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
    )
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_llama_weights(hf, cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    return hf, model.eval()


def reference_mask(state: SequenceState) -> torch.Tensor:
    """The visibility rules of DESIGN.md written out as loops, independent of tempo_lens.masks."""
    n = len(state)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(i + 1):
            si, sj = state.steps[i], state.steps[j]
            if state.isolate and si >= 0 and si == sj and i != j:
                continue  # isolated siblings
            p = state.pruned_at[j]
            if p is not None and si > p:
                continue  # pruned before query i was appended
            allowed[i, j] = True
    return allowed


def reference_positions(state: SequenceState) -> list[float]:
    """Logical positions written out from the scheme definitions, independent of positions.py."""
    out = []
    for i in range(len(state)):
        s, rank = state.steps[i], state.ranks[i]
        if s < 0 or state.scheme.kind == "distinct":
            out.append(float(i))
        else:
            out.append(state.prompt_length + s + rank * state.scheme.member_offset)
    return out


def hf_logits(hf: LlamaForCausalLM, state: SequenceState) -> torch.Tensor:
    """Logits of ``hf`` on the state's tokens with explicit positions and a float 4-D mask.

    Mask and positions come from :func:`reference_mask` / :func:`reference_positions`,
    not from tempo_lens, so a bug in the library's mask or position maths shows up here.
    """
    device = next(hf.parameters()).device
    dtype = next(hf.parameters()).dtype
    allowed = reference_mask(state).to(device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask = mask.masked_fill(~allowed, float("-inf"))[None, None]
    positions = torch.tensor([reference_positions(state)], dtype=torch.float32, device=device)
    with torch.no_grad():
        out = hf(
            input_ids=state.tokens_tensor(device),
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
        )
    return out.logits
