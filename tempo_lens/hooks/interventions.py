"""Interventions on TEMPO sequences as hook factories.

Attention bias, head ablation, head-to-head path patching, and teacher-forced step
distributions.

Each factory returns ``(hook_name, hook_fn)`` pairs, so it composes with :func:`attach`
(TEMPO positions and masks) and with any TransformerLens tool::

    with tl.attach(model, state), model.hooks(fwd_hooks=attention_bias(
            state, keys=state.parallel_indices(), layers=[12], beta=-2.0)):
        logits = model(state.tokens_tensor())

* :func:`attention_bias` adds ``beta`` to the pre-softmax scores (``hook_attn_scores``) of
  chosen keys, for all queries that may see them, at chosen layers and heads. ``beta = 0`` is
  a no-op to the bit; masked keys stay masked.
* :func:`head_ablation_hooks` replaces the output ``hook_z`` of one ``(layer, head)`` per
  batch row with zeros or a mean: a batch of ``B`` copies of one sequence ablates ``B``
  heads in one forward.
* :func:`path_patching` patches the outputs of sender heads (and MLPs) of a source run into
  only the query / key / value input of receiver heads of the target run (path patching,
  Wang et al. 2022, "Interpretability in the Wild", §3.1 / appendix B): every other
  component keeps reading the target's residual stream. It uses TransformerLens' split
  q/k/v inputs (``hook_q_input`` / ``hook_k_input`` / ``hook_v_input``).
* :func:`step_distributions` replays a trace teacher-forced: from one forward over the
  whole TEMPO sequence it returns, for every step, the distribution that step's set was
  selected from (the readout of the previous set's members). For traces generated
  without pruning this equals the distributions the generation loop used (a test checks
  it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tempo_lens.backends import hook_name
from tempo_lens.hooks import HookFn
from tempo_lens.selection import check_logits
from tempo_lens.state import SequenceState

__all__ = [
    "attention_bias",
    "head_ablation_hooks",
    "head_patch_hooks",
    "path_patching",
    "readout_positions",
    "sender_delta",
    "softmax_into",
    "step_distributions",
    "Workspace",
]


def readout_positions(state: SequenceState) -> list[int]:
    """Physical indices whose logits :func:`step_distributions` reads (sorted).

    They are the last prompt token and every member of every set but the last.
    """
    idx = [state.prompt_length - 1] + [i for s in state.set_indices[:-1] for i in s]
    return sorted(idx)


def attention_bias(
    state: SequenceState,
    *,
    keys: Sequence[int],
    beta: float | Sequence[float],
    layers: Sequence[int],
    heads: Sequence[int] | None = None,
) -> list[tuple[str, HookFn]]:
    """Add ``beta`` to the attention scores of ``keys`` at ``layers`` (and ``heads``).

    Args:
        state: The sequence state (only its length is read, to check the forward).
        keys: Physical indices of the keys to bias.
        beta: Added to the pre-softmax scores (log-space: ``beta = log 2`` doubles the
            unnormalised weight of each chosen key). A sequence gives one value per batch
            row (e.g. a beta grid in one batched forward).
        layers: Layers to intervene at.
        heads: Query heads to intervene at (default all).

    Returns:
        ``(hook_name, hook_fn)`` pairs for ``blocks.{l}.attn.hook_attn_scores``.

    Raises:
        ValueError: a key outside the state, an empty ``layers`` or a non-finite beta.
    """
    n = len(state)
    bad = [k for k in keys if not 0 <= k < n]
    if bad:
        raise ValueError(f"keys outside the sequence of {n} tokens: {bad[:5]}")
    if not layers:
        raise ValueError("layers must not be empty")
    key_idx = torch.as_tensor(list(keys), dtype=torch.long)
    head_idx = None if heads is None else torch.as_tensor(list(heads), dtype=torch.long)
    betas = torch.as_tensor(beta, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(betas).all()):
        raise ValueError(f"beta must be finite (mask keys with the state instead), got {beta}")

    def hook(scores: Float[Tensor, "batch head_index query_pos key_pos"], hook: object) -> Tensor:
        if scores.shape[-1] != n:
            raise ValueError(f"attention_bias: forward has {scores.shape[-1]} keys, state {n}")
        if len(betas) not in (1, scores.shape[0]):
            raise ValueError(f"attention_bias: {len(betas)} betas for batch {scores.shape[0]}")
        sel = torch.zeros(scores.shape[1], n, dtype=scores.dtype, device=scores.device)
        cols = key_idx.to(scores.device)
        if head_idx is None:
            sel[:, cols] = 1.0
        else:
            sel[head_idx.to(scores.device).unsqueeze(-1), cols.unsqueeze(0)] = 1.0
        b = betas.to(scores.device, scores.dtype)[:, None, None, None]
        return scores + b * sel[None, :, None, :]

    return [(hook_name(layer, "attn_scores"), hook) for layer in layers]


def head_ablation_hooks(
    ablations: Sequence[tuple[int, int]],
    *,
    mean: Float[Tensor, "layer head_index d_head"] | None = None,
) -> list[tuple[str, HookFn]]:
    """Ablate head ``ablations[b] = (layer, head)`` in batch row ``b`` (``hook_z``).

    Args:
        ablations: One ``(layer, head)`` per batch row of the forward.
        mean: Replacement values per ``(layer, head)`` (mean ablation); zeros if None.

    Returns:
        ``(hook_name, hook_fn)`` pairs for the ``blocks.{l}.attn.hook_z`` involved.

    Raises:
        ValueError: a negative layer or head; in the forward, a batch size other than
            ``len(ablations)`` or a head beyond the layer's heads.
    """

    def value(layer: int, heads: Tensor, z: Tensor) -> Tensor:
        if mean is None:
            return z.new_zeros(z.shape[1], len(heads), z.shape[-1])
        return mean[layer, heads].to(z)[None].expand(z.shape[1], -1, -1)

    return _z_replacement(ablations, value)


def head_patch_hooks(
    patches: Sequence[tuple[int, int]],
    source: Mapping[
        int, Float[Tensor, "pos head_index d_head"] | Float[Tensor, "1 pos head_index d_head"]
    ],
) -> list[tuple[str, HookFn]]:
    """Activation patching of head outputs, one ``(layer, head)`` per batch row (``hook_z``).

    Batch row ``b`` gets head ``patches[b] = (layer, head)``'s output at every position
    replaced by ``source[layer][:, head]`` (e.g. the ``hook_z`` of a clean run): the
    batched form of TransformerLens' ``patching.get_act_patch_attn_head_out_all_pos``, so
    the heads of one layer are patched in one forward.

    Args:
        patches: One ``(layer, head)`` per batch row of the forward.
        source: ``hook_z`` of the source run per layer, ``[pos, head_index, d_head]`` (a
            cache entry's leading batch of 1 is dropped).

    Returns:
        ``(hook_name, hook_fn)`` pairs for the ``blocks.{l}.attn.hook_z`` involved.

    Raises:
        ValueError: a negative head or layer, or ``source`` lacking a patched layer or
            of the wrong shape (raised here, before any forward); in the forward, a batch
            size other than ``len(patches)``, a head or position count that does not match.
    """
    missing = sorted({la for la, _ in patches} - set(source))
    if missing:
        raise ValueError(f"head patching: no source activations for layers {missing}")
    src = {la: v[0] if v.ndim == 4 and v.shape[0] == 1 else v for la, v in source.items()}
    bad = {la: tuple(v.shape) for la, v in src.items() if v.ndim != 3}
    if bad:
        raise ValueError(f"head patching: source must be [pos, head_index, d_head], got {bad}")

    def value(layer: int, heads: Tensor, z: Tensor) -> Tensor:
        if src[layer].shape[0] != z.shape[1]:
            raise ValueError(
                f"head patching: source of layer {layer} has {src[layer].shape[0]} positions, "
                f"the forward {z.shape[1]}"
            )
        return src[layer][:, heads].to(z)

    return _z_replacement(patches, value)


def _z_replacement(
    rows_spec: Sequence[tuple[int, int]],
    value: Callable[[int, Tensor, Tensor], Tensor],
) -> list[tuple[str, HookFn]]:
    """Hooks setting ``z[b, :, head] = value(layer, heads, z)`` for row ``b``'s ``(layer, head)``.

    ``value`` returns ``[pos, n, d_head]`` for the ``n`` rows of one layer (heads in row order).
    """
    neg = [(la, h) for la, h in rows_spec if la < 0 or h < 0]
    if neg:
        raise ValueError(f"(layer, head) pairs must be non-negative, got {neg}")
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for b, (layer, head) in enumerate(rows_spec):
        by_layer.setdefault(layer, []).append((b, head))
    n_rows = len(rows_spec)

    def make(layer: int) -> HookFn:
        rows = torch.tensor([b for b, _ in by_layer[layer]])
        heads = torch.tensor([h for _, h in by_layer[layer]])

        def hook(z: Float[Tensor, "batch pos head_index d_head"], hook: object) -> Tensor:
            if z.shape[0] != n_rows:
                raise ValueError(f"batch {z.shape[0]} != {n_rows} rows of (layer, head)")
            if int(heads.max()) >= z.shape[2]:
                raise ValueError(f"layer {layer}: head {int(heads.max())} >= n_heads {z.shape[2]}")
            z = z.clone()
            z[rows, :, heads] = value(layer, heads, z).transpose(0, 1)
            return z

        return hook

    return [(hook_name(layer, "z"), make(layer)) for layer in sorted(by_layer)]


def sender_delta(
    model: Any,
    source_cache: Any,
    target_cache: Any,
    senders: Sequence[tuple[int, int]],
    sender_mlps: Sequence[int] = (),
) -> Float[Tensor, "batch pos d_model"]:
    """Source minus target output of the senders, as written to the residual stream.

    A head's output is ``z[:, :, head] @ W_O[layer, head]`` (its bias ``b_O`` is the same in
    both runs and cancels); an MLP's is ``hook_mlp_out``.
    """
    delta = None
    for layer, head in senders:
        name = hook_name(layer, "z")
        dz = source_cache[name][:, :, head] - target_cache[name][:, :, head]
        d = dz @ model.W_O[layer, head]
        delta = d if delta is None else delta + d
    for layer in sender_mlps:
        name = hook_name(layer, "mlp_out")
        d = source_cache[name] - target_cache[name]
        delta = d if delta is None else delta + d
    if delta is None:
        raise ValueError("path patching needs at least one sender")
    return delta


@contextmanager
def path_patching(
    model: Any,
    source_cache: Any,
    target_cache: Any,
    *,
    senders: Sequence[tuple[int, int]],
    receivers: Sequence[tuple[int, int]],
    paths: str | Sequence[str] = "qkv",
    sender_mlps: Sequence[int] = (),
) -> Iterator[None]:
    """Patch sender outputs (source run) into only the q/k/v input of receiver heads.

    Inside the context every forward of ``model`` runs with
    ``cfg.use_split_qkv_input = True`` (restored on exit) and adds, to the residual stream
    that receiver head ``(layer, head)`` reads for each path in ``paths``, the senders'
    source-minus-target output (:func:`sender_delta`); the head's layer norm is applied to
    the patched input as usual. Everything else reads the target's residual stream, so only
    the direct paths sender -> receiver change. With GQA (``n_key_value_heads``) the key
    and value paths of query head ``h`` are its key/value head ``h // (n_heads / n_kv)``,
    shared by the heads of its group. Compose with :func:`tempo_lens.attach` (the target
    run's TEMPO state) as with any hooks.

    Args:
        model: The ``HookedTransformer``.
        source_cache: Activations of the source run (``hook_z`` of the sender layers,
            ``hook_mlp_out`` of ``sender_mlps``), e.g. the visible run.
        target_cache: The same activations of the target run (the run being patched,
            e.g. the isolated run, with the same tokens).
        senders: ``(layer, head)`` whose output is patched.
        receivers: ``(layer, head)`` query heads whose inputs receive it.
        paths: Which inputs of the receivers: any of ``q``, ``k``, ``v``. A sequence of
            such strings gives one per batch row, so several path variants share one
            forward (e.g. ``["q", "k", "v", "qkv"]`` with the tokens repeated 4 times):
            row ``b`` equals a batch-of-one forward with ``paths=paths[b]``.
        sender_mlps: Layers whose MLP output is patched too.

    Raises:
        ValueError: no receivers, bad ``paths``, a head or layer out of range, or a sender
            not in an earlier layer than every receiver (it could not reach it); inside
            the context, a forward whose batch is not ``len(paths)`` rows when ``paths``
            is a sequence.
    """
    cfg = model.cfg
    if not receivers:
        raise ValueError("path patching needs at least one receiver")
    per_row = [paths] if isinstance(paths, str) else list(paths)
    if not per_row or any(not p or set(p) - set("qkv") for p in per_row):
        raise ValueError(f"paths must be non-empty subsets of 'qkv', got {paths!r}")
    for la, h in [*senders, *receivers]:
        if not (0 <= la < cfg.n_layers and 0 <= h < cfg.n_heads):
            raise ValueError(f"head L{la}H{h} outside the model ({cfg.n_layers}x{cfg.n_heads})")
    first = min(la for la, _ in receivers)
    late = [la for la, _ in senders] + list(sender_mlps)
    if any(not 0 <= la < first for la in late):
        raise ValueError(
            f"senders must be in layers before every receiver (first receiver layer {first}), "
            f"got sender layers {sorted(set(late))}"
        )
    delta = sender_delta(model, source_cache, target_cache, senders, sender_mlps)
    group = cfg.n_heads // (cfg.n_key_value_heads or cfg.n_heads)
    by_hook: dict[str, tuple[str, list[int]]] = {}  # hook -> (path, receiving heads)
    for la, h in receivers:
        for path in dict.fromkeys("".join(per_row)):
            idx = h if path == "q" else h // group
            by_hook.setdefault(hook_name(la, f"{path}_input"), (path, []))[1].append(idx)

    def make(path: str, heads: list[int]) -> HookFn:
        idx = torch.tensor(sorted(set(heads)))
        rows = None if isinstance(paths, str) else [b for b, p in enumerate(per_row) if path in p]

        def hook(x: Float[Tensor, "batch pos head_index d_model"], hook: object) -> Tensor:
            if rows is not None and x.shape[0] != len(per_row):
                raise ValueError(
                    f"path_patching with one path per row ({len(per_row)} rows) got a "
                    f"forward of batch {x.shape[0]}"
                )
            x = x.clone()
            d = delta.to(x)[:, :, None]
            for b in range(x.shape[0]) if rows is None else rows:
                x[b, :, idx] += d[0 if d.shape[0] == 1 else b]
            return x

        return hook

    hooks = [(name, make(path, heads)) for name, (path, heads) in by_hook.items()]
    old = cfg.use_split_qkv_input
    model.set_use_split_qkv_input(True)
    try:
        with model.hooks(fwd_hooks=hooks):
            yield
    finally:
        model.set_use_split_qkv_input(old)


def step_distributions(
    logits: Float[Tensor, "batch pos d_vocab"],
    state: SequenceState,
    member_probs: Sequence[Sequence[float]],
    readout: str,
    positions: Sequence[int] | None = None,
    *,
    workspace: Workspace | None = None,
) -> Float[Tensor, "batch step d_vocab"]:
    """The distribution each step's set was selected from, from teacher-forced logits.

    Step 0 reads the last prompt position; step ``s >= 1`` reads the members of set
    ``s - 1`` with ``readout`` (``last`` / ``top`` / ``mixture`` weighted by
    ``member_probs[s - 1]``; the rule of :func:`tempo_lens.selection.readout_distribution`).

    All rows and steps are computed at once: one float64 softmax over the positions read
    (:func:`softmax_into`), then each step takes the row it reads, or for a mixture the
    weighted sum of its members' rows (weights: their renormalised probabilities). Each
    batch row is computed on its own, so batched rows equal single ones bit for bit. The
    result equals the per-step :func:`~tempo_lens.selection.readout_distribution` to
    float64 roundoff (``tests/model/test_interventions.py`` compares them).

    Args:
        logits: Logits of a forward over ``state`` with the TEMPO hooks attached.
        state: The sequence state (sets and their member order).
        member_probs: Selection probability of each member, per step.
        readout: The trace's readout.
        positions: Physical indices of the rows of ``logits`` when it holds only some
            positions (see :func:`readout_positions`); default: every position.
        workspace: Buffers to reuse across calls (:class:`Workspace`); the result is then
            a view of one of them, overwritten by the next call with that workspace.
            Default: new tensors.

    Returns:
        ``[batch, n_steps, d_vocab]`` float64 probabilities.

    Raises:
        ValueError: an unknown ``readout``; logits that are not ``[batch, pos, d_vocab]``
            with one position per state token (or per entry of ``positions``); positions
            missing a token a step reads; too few ``member_probs``; negative, non-finite or
            all-zero mixture weights; non-finite logits
            (:func:`tempo_lens.selection.check_logits`).
    """
    if readout not in ("last", "top", "mixture"):
        raise ValueError(f"readout must be last, top or mixture, got {readout!r}")
    if logits.ndim != 3:
        raise ValueError(f"logits must be [batch, pos, d_vocab], got shape {tuple(logits.shape)}")
    want = len(state) if positions is None else len(positions)
    if logits.shape[1] != want:
        raise ValueError(
            f"logits have {logits.shape[1]} positions, expected {want} "
            + ("(the state's length)" if positions is None else "(one per entry of positions)")
        )
    if state.n_steps < 1 or len(member_probs) < state.n_steps - 1:
        raise ValueError(
            f"need a state with steps and member_probs for each of its {state.n_steps} steps "
            f"but the last, got {len(member_probs)}"
        )
    row_of = {p: r for r, p in enumerate(positions)} if positions is not None else None

    def at(idx: Sequence[int]) -> list[int]:
        if row_of is None:
            return list(idx)
        missing = [i for i in idx if i not in row_of]
        if missing:
            raise ValueError(f"positions lack {missing}, which a step reads (readout_positions)")
        return [row_of[i] for i in idx]

    # per step: the row of ``logits`` it reads, or its members' rows and renormalised weights
    single: list[int] = [at([state.prompt_length - 1])[0]]
    mixed: dict[int, tuple[list[int], Tensor]] = {}
    for s in range(1, state.n_steps):
        idx = at(state.set_indices[s - 1])
        if readout == "mixture":
            w = torch.tensor(member_probs[s - 1], dtype=torch.float64)
            if len(w) != len(idx) or not torch.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"step {s}: mixture weights {w.tolist()} for {len(idx)} members")
            if float(w.sum()) <= 0:
                raise ValueError(f"step {s}: mixture weights must have a positive sum")
            if len(idx) > 1:
                mixed[s] = (idx, w / w.sum())
        single.append(idx[-1] if readout == "last" else idx[0])
    read = sorted(set(single) | {i for idx, _ in mixed.values() for i in idx})
    col = {r: c for c, r in enumerate(read)}  # only the positions some step reads
    dev, logits = logits.device, logits.detach()
    if len(read) < logits.shape[1]:
        logits = logits[:, torch.tensor(read, device=dev)]
    check_logits(logits)
    ws = workspace if workspace is not None else Workspace()
    batch, n_read, d_vocab = logits.shape
    out = ws.buffer("step_distributions", (batch, state.n_steps, d_vocab), torch.float64, dev)
    # Rows in chunks of ~256 MiB of float64 probabilities (a batch of 270 heads would not fit).
    chunk = max(1, (256 << 20) // max(1, n_read * d_vocab * 8))
    step_col = torch.tensor([col[i] for i in single], device=dev)
    for b in range(0, batch, chunk):
        rows = logits[b : b + chunk]
        probs = ws.buffer("probabilities", tuple(rows.shape), torch.float64, dev)
        softmax_into(rows, probs)
        # a step reading one position takes its row; a mixture the weighted sum of its
        # members' rows (elementwise per batch row: batched rows equal single ones exactly)
        torch.index_select(probs, 1, step_col, out=out[b : b + chunk])
        term = ws.buffer("mixture_term", (probs.shape[0], d_vocab), torch.float64, dev)
        for s, (idx, w) in mixed.items():  # in place: no new full-vocabulary tensors
            acc = out[b : b + chunk, s]
            torch.mul(probs[:, col[idx[0]]], float(w[0]), out=acc)
            for i, wi in zip(idx[1:], w[1:].tolist(), strict=True):
                acc.add_(torch.mul(probs[:, col[i]], wi, out=term))
    return out


class Workspace:
    """Reusable float buffers for hot loops over full-vocabulary tensors.

    A fresh tensor of tens of MiB costs page faults on every first touch, which on a CPU
    costs more than the arithmetic on it (``benchmarks/bench_interventions.py``). A
    workspace hands out the same buffer for the same name, shape, dtype and device; its
    contents are overwritten by the next call that asks for it, so a caller must not keep
    a result across calls (copy it).
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def buffer(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str
    ) -> Tensor:
        """An uninitialised ``shape`` tensor, the same one as last time for ``name`` if it fits."""
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.device != torch.device(device):
            buf = torch.empty(0, dtype=dtype, device=device)
        need = math.prod(shape)
        if buf.numel() < need:
            buf = torch.empty(need, dtype=dtype, device=device)
        self._buffers[name] = buf
        return buf[:need].view(shape)


def softmax_into(logits: Float[Tensor, "... d_vocab"], out: Float[Tensor, "... d_vocab"]) -> Tensor:
    """:func:`tempo_lens.selection.probabilities` written into ``out`` (float64, same shape).

    ``exp(x - max) / sum``, the formula of ``torch.softmax``, in place in ``out``, so no
    new full-vocabulary tensor is allocated; equal to ``torch.softmax(logits,
    dtype=float64)`` to float64 roundoff. ``-inf`` logits give 0; the caller checks the
    logits (:func:`tempo_lens.selection.check_logits`).
    """
    out.copy_(logits)
    out.sub_(out.amax(-1, keepdim=True)).exp_()
    return out.div_(out.sum(-1, keepdim=True))
