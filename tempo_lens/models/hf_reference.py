"""The reference TEMPO computation: a Hugging Face model's own forward, explicit positions and masks.

:func:`reference_distributions` recomputes every step's next-token distribution of a TEMPO
generation with the plain Hugging Face model (no TransformerLens, no hooks): one forward per
step over the sequence as of that step, ``position_ids`` = the logical positions, and an
explicit 4-D float mask per decoder layer (0 = may attend, ``-inf`` = hidden). This is the
reference of :func:`tempo_lens.verify`.

The positions and the visibility rules are written out here from their definitions
(DESIGN.md §1), independently of :mod:`tempo_lens.masks` and :mod:`tempo_lens.positions`,
so a bug there shows up as a mismatch:

* logical position of generated member ``r`` of step ``s``: ``L + s + r·δ`` (``"shared"``),
  its physical index (``"distinct"``); prompt token ``i``: ``i``;
* query ``i`` sees key ``j <= i`` unless: isolated siblings (same step, ``i != j``); ``j``
  pruned at a step ``p`` before the query's view (soft: the query's step, the readout rows
  of the step being read count as that step; hard: every query, as if never appended);
  outside a sliding window (``logical[i] - logical[j] >= window``, the layer's window).

Each layer gets its own mask through a forward pre-hook on its decoder layer (the
``attention_mask`` keyword), so per-layer windows (Gemma 2/3, Mistral, Qwen 2) need no
knowledge of how a model builds its masks. The tests' oracle
(``tests/model/hf_oracle.py``) is a second, independent implementation that checks this one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from tempo_lens.selection import readout_distribution
from tempo_lens.state import SequenceState

__all__ = [
    "decoder_layers",
    "layer_windows",
    "reference_distributions",
    "reference_logits",
    "reference_positions",
    "reference_visibility",
]


def reference_positions(state: SequenceState) -> list[float]:
    """Logical positions from the position scheme's definition, one float per token."""
    out = []
    for i in range(len(state)):
        s, rank = state.steps[i], state.ranks[i]
        if s < 0 or state.scheme.kind == "distinct":
            out.append(float(i))
        else:
            out.append(float(state.prompt_length + s + rank * state.scheme.member_offset))
    return out


def reference_visibility(
    state: SequenceState, n: int, read_step: int, window: int | None = None
) -> Tensor:
    """Bool ``[n, n]``: may query ``i`` attend to key ``j``, over the first ``n`` tokens.

    ``read_step``: the step whose distribution is computed (its readout rows, the set of
    step ``read_step - 1``, see the pruning done at that step). Tokens pruned at a later
    step are still visible. ``window``: the layer's sliding window in logical positions.
    """
    pos = reference_positions(state)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        si = state.steps[i]
        view = read_step if si == read_step - 1 else si
        for j in range(i + 1):
            sj = state.steps[j]
            if state.isolate and si >= 0 and si == sj and i != j:
                continue
            p = state.pruned_at[j]
            if p is not None and p < read_step and i != j and (j in state.hard_pruned or view > p):
                continue  # pruned before the view (hard: hidden from every query)
            if window is not None and not pos[i] - pos[j] < window:
                continue
            allowed[i, j] = True
    return allowed


def decoder_layers(hf_model: Any) -> list[Any]:
    """The decoder layers of a Hugging Face causal LM (``base_model.layers`` or ``.h``).

    Raises:
        ValueError: no layer list found.
    """
    for base in (getattr(hf_model, "model", None), hf_model.base_model):
        for name in ("layers", "h"):
            layers = getattr(base, name, None)
            if layers is not None:
                return list(layers)
    raise ValueError(f"{type(hf_model).__name__}: no decoder layer list (layers / h)")


def layer_windows(hf_model: Any) -> list[int | None]:
    """Each decoder layer's sliding window in tokens (``None``: full attention).

    Read from the layer's attention module (``sliding_window``, set by Hugging Face per
    layer type), else from the config (``layer_types`` / ``sliding_window``).
    """
    cfg = hf_model.config
    types = getattr(cfg, "layer_types", None)
    out: list[int | None] = []
    for i, layer in enumerate(decoder_layers(hf_model)):
        attn = getattr(layer, "self_attn", None) or getattr(layer, "attention", None)
        if attn is not None and hasattr(attn, "sliding_window"):
            w = attn.sliding_window
        elif types:
            w = cfg.sliding_window if types[i] == "sliding_attention" else None
        elif getattr(cfg, "use_sliding_window", True) is not False:
            w = getattr(cfg, "sliding_window", None)
        else:
            w = None
        out.append(int(w) if w else None)
    return out


@contextmanager
def _layer_masks(hf_model: Any, masks: list[Tensor]) -> Iterator[None]:
    def replace(mask: Tensor) -> Any:
        def pre_hook(module: Any, args: Any, kwargs: dict[str, Any]) -> Any:
            kwargs["attention_mask"] = mask
            return args, kwargs

        return pre_hook

    layers = decoder_layers(hf_model)
    handles = [
        layer.register_forward_pre_hook(replace(m), with_kwargs=True)
        for layer, m in zip(layers, masks, strict=True)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def reference_logits(hf_model: Any, state: SequenceState, n: int, read_step: int) -> Tensor:
    """Logits ``[n, d_vocab]`` of the Hugging Face model on the first ``n`` tokens.

    ``position_ids`` = :func:`reference_positions` (float), each layer's mask
    :func:`reference_visibility` with its window as a float ``[1, 1, n, n]``.
    """
    param = next(hf_model.parameters())
    device, dtype = param.device, param.dtype
    masks: dict[int | None, Tensor] = {}
    per_layer = []
    for w in layer_windows(hf_model):
        if w not in masks:
            allowed = reference_visibility(state, n, read_step, w).to(device)
            bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
            masks[w] = bias.masked_fill(~allowed, float("-inf"))[None, None]
        per_layer.append(masks[w])
    ids = torch.tensor([state.token_ids[:n]], device=device)
    pos = torch.tensor([reference_positions(state)[:n]], dtype=torch.float32, device=device)
    with torch.no_grad(), _layer_masks(hf_model, per_layer):
        out = hf_model(
            input_ids=ids, attention_mask=per_layer[0], position_ids=pos, use_cache=False
        )
    return out.logits[0]


def reference_distributions(
    hf_model: Any,
    state: SequenceState,
    member_probs: Sequence[Sequence[float]],
    readout: str,
    n_dists: int,
) -> list[Tensor]:
    """The first ``n_dists`` step distributions of a TEMPO generation, recomputed.

    Distribution ``s`` is what step ``s`` selected from: step 0 the last prompt row; step
    ``s >= 1`` the readout (``last`` / ``top`` / ``mixture`` weighted by
    ``member_probs[s - 1]``) of set ``s - 1``'s rows, one forward over the tokens up to that
    set, with the pruning done by step ``s - 1`` applied (:func:`reference_visibility`);
    without pruning, one forward over the whole sequence serves every step.

    Args:
        hf_model: A plain Hugging Face causal LM (eager attention) with the model's weights.
        state: The generation's final state (its ``pruned_at`` / ``hard_pruned`` record).
        member_probs: Each step's member selection probabilities.
        readout: The generation's readout.
        n_dists: How many distributions (at most ``state.n_steps + 1``).

    Returns:
        ``n_dists`` float64 ``[d_vocab]`` probability vectors.
    """
    out = []
    # Without pruning every query's mask is the same whatever step is read: one forward
    # over the whole sequence gives every step's rows (causal: a row sees only its past).
    shared = None
    if all(p is None for p in state.pruned_at):
        shared = reference_logits(hf_model, state, len(state), state.n_steps + 1)
    for s in range(n_dists):
        if s == 0:
            n = state.prompt_length
            logits = shared if shared is not None else reference_logits(hf_model, state, n, 0)
            out.append(torch.softmax(logits[n - 1].to(torch.float64), dim=-1))
            continue
        idx = state.set_indices[s - 1]
        n = idx[-1] + 1
        logits = shared if shared is not None else reference_logits(hf_model, state, n, s)
        rows = logits[idx].to(torch.float64)
        out.append(readout_distribution(rows, member_probs[s - 1], readout).to(torch.float64))
    return out
