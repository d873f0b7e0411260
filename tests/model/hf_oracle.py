"""An independent implementation: Hugging Face Llama / Gemma 3 fed explicit positions and
4-D masks (one per layer type for Gemma 3, the sliding-window one written out here)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from tempo_lens import SequenceState
from tempo_lens.models.convert import hooked_config, hooked_from_hf
from tempo_lens.models.hf_configs import gemma3_config_dict


def tiny_llama_hf(seed: int = 0, n_kv: int = 2, n_layers: int = 2) -> LlamaForCausalLM:
    """A random tiny HF Llama (4 query heads, ``n_kv`` key heads, vocab 64)."""
    torch.manual_seed(seed)
    hf_cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
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
    return hf


def tiny_llama_pair(
    seed: int = 0, n_kv: int = 2, n_layers: int = 2
) -> tuple[LlamaForCausalLM, Any]:
    """A random tiny HF Llama and the HookedTransformer built from the same weights
    (TransformerLens 3.x; see :func:`tiny_llama_hf` for the HF model alone)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    hf = tiny_llama_hf(seed, n_kv, n_layers)
    cfg = HookedTransformerConfig(
        d_model=64,
        n_heads=4,
        d_head=16,
        n_layers=n_layers,
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


def tiny_gemma3_pair(
    seed: int = 0, window: int = 4, n_layers: int = 3
) -> tuple[Gemma3ForCausalLM, Any]:
    """:func:`tiny_gemma3_hf` and the HookedTransformer tempo_lens builds from it
    (TransformerLens 3.x)."""
    hf = tiny_gemma3_hf(seed, window, n_layers)
    cfg_dict = gemma3_config_dict(hf.config, default_prepend_bos=False)
    return hf, hooked_from_hf(hf, hooked_config(cfg_dict, init_weights=False))


def tiny_gemma3_hf(seed: int = 0, window: int = 4, n_layers: int = 3) -> Gemma3ForCausalLM:
    """A random tiny HF Gemma 3 (sliding window ``window`` on all but every third layer,
    local/global RoPE bases 1e4/1e6, q/k-norm, 2 query heads per key head)."""
    torch.manual_seed(seed)
    hf_cfg = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=256,
        sliding_window=window,
        layer_types=[
            "full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(n_layers)
        ],
        attn_implementation="eager",
        architectures=["Gemma3ForCausalLM"],
    )
    hf = Gemma3ForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # sharp attention and non-trivial norm weights
        for p in hf.parameters():
            p.normal_(0, 0.3 if p.ndim == 2 else 0.2)
    return hf


def reference_mask(state: SequenceState, window: float | None = None) -> torch.Tensor:
    """The visibility rules of DESIGN.md written out as loops, independent of tempo_lens.masks.

    ``window``: keep only keys whose logical position is within ``window`` of the query's
    (``logical[i] - logical[j] < window``; Hugging Face's ``kv_idx > q_idx - sliding_window`` on a
    plain sequence, where logical == physical).

    Token trees (``state.parents``): a tree token sees itself, its parent, and everything its
    parent sees (EAGLE's ``tree_mask``: ancestors only), never a sibling; pruning and the
    window apply to it as to any query."""
    n = len(state)
    pos = reference_positions(state)
    parents = getattr(state, "parents", [None] * n)

    def plain(i: int, j: int) -> bool:  # rules 1-2 for a non-tree query
        si, sj = state.steps[i], state.steps[j]
        return j <= i and not (state.isolate and si >= 0 and si == sj and i != j)

    def reach(i: int) -> set[int]:
        if parents[i] is None:
            return {j for j in range(n) if plain(i, j) and _unpruned_for(state, state.steps[i], j)}
        return {i} | reach(parents[i])

    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        seen = reach(i) if parents[i] is not None else set(range(i + 1))
        for j in range(i + 1):
            if j not in seen or (parents[i] is None and not plain(i, j)):
                continue
            if not _unpruned_for(state, state.steps[i], j):
                continue  # pruned before query i was appended
            if window is not None and not pos[i] - pos[j] < window:
                continue  # outside the sliding window, by logical distance
            allowed[i, j] = True
    return allowed


def _unpruned_for(state: SequenceState, query_step: int, j: int) -> bool:
    p = state.pruned_at[j]
    return p is None or not query_step > p


def reference_positions(state: SequenceState) -> list[float]:
    """Logical positions written out from the scheme definitions, independent of positions.py.

    A tree token sits one past its parent (its depth)."""
    out: list[float] = []
    parents = getattr(state, "parents", [None] * len(state))
    for i in range(len(state)):
        s, rank = state.steps[i], state.ranks[i]
        if parents[i] is not None:
            out.append(out[parents[i]] + 1.0)
        elif s < 0 or state.scheme.kind == "distinct":
            out.append(float(i))
        else:
            out.append(state.prompt_length + s + rank * state.scheme.member_offset)
    return out


def _float_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, float("-inf"))[None, None]


def hf_logits(hf: torch.nn.Module, state: SequenceState, logits_to_keep: int = 0) -> torch.Tensor:
    """Logits of ``hf`` on the state's tokens with explicit positions and a float 4-D mask.

    Mask and positions come from :func:`reference_mask` / :func:`reference_positions`,
    not from tempo_lens, so a bug in the library's mask or position maths shows up here.
    A model with sliding-window layers (Gemma 3) gets one mask per layer type.
    ``logits_to_keep > 0`` returns only the last that many rows.
    """
    device = next(hf.parameters()).device
    dtype = next(hf.parameters()).dtype
    mask: torch.Tensor | dict[str, torch.Tensor]
    mask = _float_mask(reference_mask(state).to(device), dtype)
    window = getattr(hf.config, "sliding_window", None)
    if "sliding_attention" in (getattr(hf.config, "layer_types", None) or []):
        local = _float_mask(reference_mask(state, window=window).to(device), dtype)
        mask = {"full_attention": mask, "sliding_attention": local}
    positions = torch.tensor([reference_positions(state)], dtype=torch.float32, device=device)
    with torch.no_grad():
        out = hf(
            input_ids=state.tokens_tensor(device),
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
            logits_to_keep=logits_to_keep,
        )
    return out.logits


def hf_logits_removed(
    hf: torch.nn.Module, state: SequenceState, removed: list[int]
) -> tuple[torch.Tensor, list[int]]:
    """Logits of ``hf`` on the state with the tokens ``removed`` physically deleted.

    The other tokens keep their logical positions (explicit ``position_ids``) and their
    mutual visibility (:func:`reference_mask` of the state with the removed tokens'
    pruning undone, restricted to the kept tokens): the sequence as it would be had the
    removed tokens never been appended. Returns ``(logits [1, kept, vocab], kept)``.
    """
    device = next(hf.parameters()).device
    dtype = next(hf.parameters()).dtype
    keep = [i for i in range(len(state)) if i not in set(removed)]
    unpruned = state.copy()
    for i in removed:
        unpruned.pruned_at[i] = None
    allowed = reference_mask(unpruned)[keep][:, keep]
    positions = [reference_positions(state)[i] for i in keep]
    ids = torch.tensor([[state.token_ids[i] for i in keep]], device=device)
    with torch.no_grad():
        out = hf(
            input_ids=ids,
            attention_mask=_float_mask(allowed.to(device), dtype),
            position_ids=torch.tensor([positions], dtype=torch.float32, device=device),
            use_cache=False,
        )
    return out.logits, keep


def hf_logits_layer_masks(
    hf: torch.nn.Module, state: SequenceState, masks: dict[int, torch.Tensor]
) -> torch.Tensor:
    """:func:`hf_logits`, with layer ``l``'s self-attention given ``masks[l]`` instead.

    ``masks[l]`` is a boolean ``[heads, n, n]`` (or ``[1, n, n]``) "may attend" mask; it
    replaces the ``attention_mask`` keyword of ``hf.model.layers[l].self_attn`` through a
    forward pre-hook (eager attention adds the float mask to ``[batch, head, q, k]``
    scores, so a per-head mask broadcasts). Layers not in ``masks`` get the usual mask.
    """
    dtype = next(hf.parameters()).dtype
    handles = []

    def replace(mask: torch.Tensor) -> Any:
        def pre_hook(module: Any, args: Any, kwargs: dict[str, Any]) -> Any:
            bias = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, float("-inf"))
            kwargs["attention_mask"] = bias[None]  # [1, heads or 1, n, n]
            return args, kwargs

        return pre_hook

    for layer, mask in masks.items():
        attn = hf.model.layers[layer].self_attn
        handles.append(attn.register_forward_pre_hook(replace(mask), with_kwargs=True))
    try:
        return hf_logits(hf, state)
    finally:
        for h in handles:
            h.remove()


def tiny_tokenizer(directory: str) -> Any:
    """A word-level tokenizer over ``t0 .. t63`` saved to ``directory`` and reloaded
    (TransformerBridge reloads tokenizers by ``name_or_path``; no hub involved)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({f"t{i}": i for i in range(64)}, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"unk_token": "t0", "pad_token": "t0", "eos_token": "t1", "bos_token": "t2"}
    PreTrainedTokenizerFast(tokenizer_object=core, **special).save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


def bridge_of(hf: torch.nn.Module, tokenizer: Any) -> Any:
    """A TransformerBridge around the given (pre-loaded) Hugging Face model."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(
        "tiny-offline", hf_model=hf, tokenizer=tokenizer, device="cpu"
    )


def hf_step_distributions(hf: torch.nn.Module, trace: Any) -> list[torch.Tensor]:
    """Each step's next-token distribution from HF logits on the sequence as of that step
    (the prompt plus the sets before it; valid for traces without pruning), through the
    step's readout of the previous set's rows."""
    from tempo_lens.selection import readout_distribution

    ids, n0 = trace.state.token_ids, trace.prompt_length
    out = []
    sets: list[list[int]] = []
    for step in trace.steps:
        st = SequenceState.from_sets(ids[:n0], sets, isolate=trace.isolate)
        logits = hf_logits(hf, st)[0].to(torch.float64)
        if not sets:
            out.append(torch.softmax(logits[-1], dim=-1))
        else:
            prev = trace.steps[len(sets) - 1]
            rows = logits[len(st) - len(prev.indices) :]
            out.append(readout_distribution(rows, prev.probabilities, prev.readout))
        sets.append([ids[i] for i in step.indices])
    return out
