"""TEMPO generation: the loop, orchestration only.

Each step:

1. the threshold ``tau`` of the step (constant or a schedule over ``t = step/max_steps``);
2. **selection** from the current readout distribution: every token with ``p >= tau``,
   most probable first, top-1 fallback, ``max_parallel`` cap, optional pre-append filter;
3. the set is appended to the :class:`~tempo_lens.SequenceState` and fed to the model
   **once** (KV cache: only the new members; no cache: a full forward), TEMPO hooks on;
4. **retroactive pruning** (optional): the set appended ``lookahead`` steps ago is scored
   by the attention its members receive from the queries appended since, and weak members
   are pruned (masked for all later queries). If anything was pruned, the readout rows
   are recomputed with the pruned tokens hidden (a scratch forward that leaves the KV
   cache untouched), so the next distribution does not see them;
5. **readout**: ``last`` / ``top`` / ``mixture`` of the members' next-token distributions.

Stops when the top member is EOS (not appended), at ``max_steps``, or before the
sequence would exceed the model's context.

Examples:
    >>> from tempo_lens import TempoConfig, generate, make_tiny_model
    >>> model = make_tiny_model()
    >>> trace = generate(model, [1, 2, 3], TempoConfig(selection_threshold=0.05, max_steps=3))
    >>> len(trace.steps)
    3
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from tempo_lens._tl import (
    check_rotary,
    kv_cache_length,
    make_kv_cache,
    max_context,
    model_name,
    scratch_kv_cache,
)
from tempo_lens.config import TempoConfig
from tempo_lens.fast import disable_fast_path, enable_fast_path
from tempo_lens.hooks import HookFn, TempoHooks
from tempo_lens.pruning import judge, prefilter
from tempo_lens.recorder import AttentionRecorder
from tempo_lens.selection import mixture_distribution, probabilities, select_from_probs
from tempo_lens.state import SequenceState
from tempo_lens.text import PromptLike, encode_prompt, eos_token_id, label_texts
from tempo_lens.trace import Candidate, PruneDecision, StepRecord, Trace

__all__ = ["StepObserver", "generate"]


@runtime_checkable
class StepObserver(Protocol):
    """Something that watches the forwards of a generation (e.g. attention capture).

    Its hooks are attached for the whole generation but must only record between
    :meth:`begin_step` and :meth:`end_step` (the readout forward after pruning happens
    outside, so observers see each token's query exactly once).
    """

    def fwd_hooks(self, model: HookedTransformer) -> list[tuple[str, HookFn]]:
        """The observer's ``(hook_name, hook_fn)`` pairs for ``model``."""
        ...

    def begin_step(self, step: int, query_indices: list[int], state: SequenceState) -> None:
        """A forward for ``query_indices`` of ``step`` (``-1``: the prompt) begins."""
        ...

    def end_step(self) -> None:
        """The forward of the current step has ended."""
        ...


# Observers may also define ``abort_step()``: called instead of ``end_step()`` when the
# step's forward raised (discard the step). The original exception always propagates.


def _readout(
    rows: Float[Tensor, "k d_vocab"], probs: Sequence[float], mode: str
) -> Float[Tensor, " d_vocab"]:
    """The next step's distribution from the logits rows of the set's members."""
    if mode == "last":
        return probabilities(rows[-1])
    if mode == "top":
        return probabilities(rows[0])
    return mixture_distribution(probabilities(rows), list(probs))


def generate(
    model: HookedTransformer,
    prompt: PromptLike,
    config: TempoConfig | None = None,
    *,
    observers: Sequence[StepObserver] = (),
    progress: bool = False,
    **overrides: Any,
) -> Trace:
    """Generate with TEMPO and return the :class:`~tempo_lens.trace.Trace`.

    Args:
        model: A rotary ``HookedTransformer`` (with a tokenizer if ``prompt`` is text).
        prompt: Text (never truncated), or token ids: a list, a 1-D tensor/array, or a
            ``[1, pos]`` one such as ``model.to_tokens(text)``.
        config: The :class:`TempoConfig`; keyword ``overrides`` build or update it.
        observers: Extra :class:`StepObserver` objects (e.g. attention capture).
        progress: Show a progress bar over steps.
        **overrides: :class:`TempoConfig` fields that build or update ``config``.

    Returns:
        The trace (tokens, steps, candidates, pruning decisions, stop reason).

    Raises:
        ValueError: A bad prompt (empty, not one prompt, ids out of the vocabulary) or one
            that leaves no room in the model's context for a generated token.
        HookConflictError: TEMPO hooks are already attached to ``model`` (``attach``).
    """
    check_rotary(model)
    if config is None:
        config = TempoConfig(**overrides)
    elif overrides:
        config = TempoConfig.from_dict({**config.to_dict(), **overrides})
    prompt_ids = encode_prompt(model, prompt)
    eos = eos_token_id(model)  # never a non-top member, whatever stop_at_eos/min_steps
    state = SequenceState(prompt_ids, isolate=config.isolate, positions=config.positions)
    hooks = TempoHooks(model, state)
    pruner = (
        AttentionRecorder(layers=config.prune.layers, include_prompt=False)
        if config.prune
        else None
    )
    watchers: list[StepObserver] = [*observers, *([pruner] if pruner else [])]
    fwd_hooks = hooks.fwd_hooks() + [h for w in watchers for h in w.fwd_hooks(model)]
    cache = make_kv_cache(model) if config.use_kv_cache else None
    limit = max_context(model)
    text = _no_text  # texts are decoded in context at the end (label_texts)

    def run(indices: list[int], step: int) -> Tensor:
        begun: list[StepObserver] = []
        try:
            for w in watchers:
                w.begin_step(step, indices, state)
                begun.append(w)
            rows = _forward(model, state, indices, cache)
        except BaseException:
            _abort(begun)
            raise
        _end(watchers)
        return rows

    steps: list[StepRecord] = []
    stop_reason = "max_steps"
    _set_weight_layout(model, fast=config.fast_weights)
    with (
        torch.no_grad(),
        hooks.backend_masks_replaced(),
        model.hooks(fwd_hooks=fwd_hooks),  # type: ignore[arg-type]
    ):
        rows = run(list(range(len(prompt_ids))), -1)
        dist = probabilities(rows[-1])
        bar = tqdm(range(config.max_steps), disable=not progress, desc="TEMPO", unit="step")
        for step in bar:
            tau = config.threshold_at(step)
            probs = dist
            if eos is not None and step < config.min_steps:
                probs = dist.clone()
                probs[eos] = 0.0
                probs = probs / probs.sum()
            sel = select_from_probs(probs, tau, max_parallel=config.max_parallel)
            ids, ps = list(sel.token_ids), list(sel.probs)
            dropped: list[tuple[int, float]] = []
            if config.prefilter is not None:
                ids, ps, dropped = prefilter(ids, ps, config.prefilter)
            if eos is not None and ids[0] == eos and config.stop_at_eos:
                stop_reason = "eos"
                break
            if eos is not None and eos in ids[1:]:
                keep = [j for j, t in enumerate(ids) if j == 0 or t != eos]
                dropped += [(ids[j], ps[j]) for j in range(len(ids)) if j not in keep]
                ids, ps = [ids[j] for j in keep], [ps[j] for j in keep]
            if len(state) + len(ids) > limit:
                stop_reason = "context"
                break
            indices = state.append_set(ids)
            rows = run(indices, step)
            decisions = _prune(pruner, config, state, step, text) if pruner else []
            if any(d.pruned for d in decisions):
                with hooks.viewing(step + 1, from_index=indices[0]):
                    rows = _forward(model, state, indices, cache)
            dist = _readout(rows, ps, config.readout)
            steps.append(
                _step_record(step, tau, config, sel, ids, ps, indices, dropped, decisions, text)
            )
    state.clear_stale()
    trace = Trace(
        prompt=prompt if isinstance(prompt, str) else list(prompt_ids),
        model=model_name(model),
        method="tempo",
        config=config.to_dict(),
        state=state,
        texts=[""] * len(state),
        steps=steps,
        stop_reason=stop_reason,
    )
    return label_texts(trace, model)


def _end(watchers: Sequence[StepObserver]) -> None:
    """End the step of every observer; the first error is raised after all have ended."""
    error: BaseException | None = None
    for w in watchers:
        try:
            w.end_step()
        except BaseException as exc:  # re-raised below, once every observer has ended
            error = error or exc
    if error is not None:
        raise error


def _abort(watchers: Sequence[StepObserver]) -> None:
    """A forward failed: end every begun observer's step without raising over the error.

    Observers may define ``abort_step()`` (discard the step); otherwise ``end_step()`` is
    called and whatever it raises is dropped, so the original exception propagates.
    """
    for w in watchers:
        with contextlib.suppress(Exception):
            getattr(w, "abort_step", w.end_step)()


def _no_text(token_id: int) -> str:
    return ""


def _forward(
    model: HookedTransformer, state: SequenceState, indices: list[int], cache: Any
) -> Float[Tensor, "k d_vocab"]:
    """Logits rows of ``indices`` (the newest tokens of ``state``)."""
    if cache is None:
        tokens = state.tokens_tensor(model.cfg.device)  # never padded: explicit all-ones mask
        return model(tokens, attention_mask=torch.ones_like(tokens))[0, indices]
    new = torch.tensor([[state.token_ids[i] for i in indices]], device=model.cfg.device)
    n_cached = len(state) - len(indices)
    if kv_cache_length(cache) == n_cached:
        return model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))[0]
    with scratch_kv_cache(cache, n_cached):  # readout forward: do not commit
        return model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))[0]


def _prune(
    pruner: AttentionRecorder,
    config: TempoConfig,
    state: SequenceState,
    step: int,
    text: Callable[[int], str],
) -> list[PruneDecision]:
    """Judge the set appended ``lookahead`` steps ago; prune its weak members."""
    cfg = config.prune
    assert cfg is not None
    target = step - cfg.lookahead
    pruner.forget_before(target + 1)
    if target < 0:
        return []
    members = [i for i in state.set_indices[target] if state.pruned_at[i] is None]
    if len(members) < 2:
        return []
    scores, verdict = judge(pruner.votes(target + 1, step, members), cfg)
    best = max(scores)
    out = []
    for i, score, pruned in zip(members, scores, verdict, strict=True):
        if pruned:
            state.prune(i, at_step=step)
        out.append(
            PruneDecision(
                index=i,
                token_id=state.token_ids[i],
                text=text(state.token_ids[i]),
                set_step=target,
                score=float(score),
                best_score=float(best),
                pruned=bool(pruned),
                rule=cfg.describe(),
            )
        )
    return out


def _step_record(step, tau, config, sel, ids, ps, indices, dropped, decisions, text) -> StepRecord:
    appended = set(ids)
    pairs = list(sel.candidates) or list(zip(sel.token_ids, sel.probs, strict=True))
    return StepRecord(
        step=step,
        threshold=float(tau),
        readout=config.readout,
        candidates=[Candidate(t, text(t), float(p), t in appended) for t, p in pairs],
        indices=list(indices),
        fell_back=sel.fell_back,
        capped=sel.capped,
        prefiltered=[Candidate(t, text(t), float(p), False) for t, p in dropped],
        pruning=decisions,
        probabilities=[float(p) for p in ps],
    )


def _set_weight_layout(model: HookedTransformer, *, fast: bool) -> None:
    """Store the model's weights in the fast (compute) layout or the stock one.

    Both give bit-identical results (:mod:`tempo_lens.fast`). The switch is persistent, not
    undone after the generation: a relayout costs a copy of the weights, so repeated
    generations keep the layout the last one asked for.
    """
    if fast:
        enable_fast_path(model)
    else:
        disable_fast_path(model)
