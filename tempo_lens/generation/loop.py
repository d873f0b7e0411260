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
   cache untouched), so the next distribution does not see them. *Hard* pruning
   (``PruningConfig(mode="hard")``) instead recomputes every token appended after a
   pruned one without it, rebuilding their KV-cache entries
   (:meth:`~tempo_lens.generation.batch_forward.BatchForward.rebuild`);
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

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tempo_lens.backends import TempoModel, check_rotary, max_context, model_name, provenance
from tempo_lens.backends.fast import disable_fast_path, enable_fast_path
from tempo_lens.config import TempoConfig
from tempo_lens.generation.batch_forward import BatchForward
from tempo_lens.generation.pruner import Pruner
from tempo_lens.generation.text import encode_prompt, eos_token_id, label_texts
from tempo_lens.hooks import HookFn
from tempo_lens.isolation import resolved_layers
from tempo_lens.prompts import PromptLike
from tempo_lens.pruning import prefilter
from tempo_lens.selection import probabilities, readout_distribution, select_from_probs
from tempo_lens.state import SequenceState
from tempo_lens.trace import Candidate, StepRecord, Trace

__all__ = ["StepObserver", "generate", "generate_batch"]


@runtime_checkable
class StepObserver(Protocol):
    """Something that watches the forwards of a generation (e.g. attention capture).

    Its hooks are attached for the whole generation but must only record between
    :meth:`begin_step` and :meth:`end_step` (the readout forward after pruning happens
    outside, so observers see each token's query exactly once).
    """

    def fwd_hooks(self, model: TempoModel) -> list[tuple[str, HookFn]]:
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
# And ``distribution(step, dist)``: called with each distribution a step selects from
# (``dist`` float ``[d_vocab]``; step 0's from the prompt, step ``s + 1``'s after set
# ``s``'s readout, pruning included) -- what ``tempo_lens.verify`` compares with Hugging Face.


def _tell_distribution(observers: Sequence[StepObserver], step: int, dist: Tensor) -> None:
    for obs in observers:
        tell = getattr(obs, "distribution", None)
        if tell is not None:
            tell(step, dist)


def generate(
    model: TempoModel,
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
    traces = generate_batch(
        model, [prompt], config, observers=[observers], progress=progress, **overrides
    )
    return traces[0]


def generate_batch(
    model: TempoModel,
    prompts: Sequence[PromptLike],
    config: TempoConfig | None = None,
    *,
    observers: Sequence[Sequence[StepObserver]] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> list[Trace]:
    """Generate ``B`` independent TEMPO sequences, one forward per step for all of them.

    Every row keeps its own :class:`~tempo_lens.SequenceState`, positions, mask, pruning,
    readout and stop; each row's trace equals ``generate(model, prompt, config)`` on that
    prompt alone (same tokens, indices and decisions; probabilities equal up to the
    float rounding of a wider batch, ~1e-7). Ragged rows (prompts of different lengths,
    sets of different widths, rows that stopped) are padded with slots no query sees
    (:class:`~tempo_lens.layout.BatchLayout`).

    Args:
        model: A rotary ``HookedTransformer`` (with a tokenizer if prompts are text).
        prompts: Texts or token ids, each as :func:`generate` accepts (at least one).
        config: The :class:`TempoConfig` of every row; keyword ``overrides`` update it.
        observers: One list of :class:`StepObserver` per row (e.g. an
            :class:`~tempo_lens.AttentionCapture` per row); each sees only its row.
        progress: Show a progress bar over steps.
        **overrides: :class:`TempoConfig` fields that build or update ``config``.

    Returns:
        One trace per prompt, in order.

    Raises:
        ValueError: No prompts, ``observers`` not one list per prompt, or a bad prompt (as
            in :func:`generate`).
        HookConflictError: TEMPO hooks are already attached to ``model`` (``attach``).
    """
    check_rotary(model)
    if config is None:
        config = TempoConfig(**overrides)
    elif overrides:
        config = TempoConfig.from_dict({**config.to_dict(), **overrides})
    if len(prompts) == 0:
        raise ValueError("generate_batch needs at least one prompt")
    per_row: list[list[StepObserver]] = [list(o) for o in observers or [[] for _ in prompts]]
    if len(per_row) != len(prompts):
        raise ValueError(f"got {len(per_row)} observer lists for {len(prompts)} prompts")
    text = _no_text  # texts are decoded in context at the end (label_texts)
    rows = [_Row(model, p, config, text) for p in prompts]
    fwd = BatchForward(
        model,
        [r.state for r in rows],
        use_kv_cache=config.use_kv_cache,
        observers=[obs + r.watchers for obs, r in zip(per_row, rows, strict=True)],
        isolate_layers=config.isolate_layers,
        isolate_heads=config.isolate_heads,
    )
    _set_weight_layout(model, fast=config.fast_weights)
    with fwd.attached():
        logits = fwd.run([list(range(r.state.prompt_length)) for r in rows], -1)
        for b, (r, lg) in enumerate(zip(rows, logits, strict=True)):
            r.dist = probabilities(lg[-1])
            _tell_distribution(per_row[b], 0, r.dist)
        hard = config.prune is not None and config.prune.mode == "hard"
        bar = tqdm(range(config.max_steps), disable=not progress, desc="TEMPO", unit="step")
        for step in bar:
            new = [r.select(step) for r in rows]
            if not any(new):
                break
            fwd.drop([b for b, r in enumerate(rows) if not r.active])
            logits = fwd.run(new, step)
            views = {}
            for b, (r, ix) in enumerate(zip(rows, new, strict=True)):
                if ix and r.prune(step):
                    views[b] = (step + 1, ix[0])
            if views:  # the rows with a prune read their next distribution from again
                if hard:  # the tokens after each pruned one recomputed without it
                    recorders = [p.recorder for b in views if (p := rows[b].pruner) is not None]
                    again = fwd.rebuild(list(views), new, rerecord=recorders)
                else:  # readout with the pruned tokens hidden
                    again = fwd.rerun(views, new)
                logits = [again[b] if b in views else lg for b, lg in enumerate(logits)]
            for b, (r, ix, lg) in enumerate(zip(rows, new, logits, strict=True)):
                if ix:
                    r.finish(lg)
                    _tell_distribution(per_row[b], step + 1, r.dist)
    return [r.trace() for r in rows]


class _Row:
    """One sequence of a (batched) generation: its state, selection, pruning and record."""

    def __init__(
        self,
        model: TempoModel,
        prompt: PromptLike,
        config: TempoConfig,
        text: Callable[[int], str],
    ) -> None:
        self.model, self.prompt, self.config, self.text = model, prompt, config, text
        self.prompt_ids = encode_prompt(model, prompt)
        self.eos = eos_token_id(model)  # never a non-top member, whatever stop_at_eos
        self.state = SequenceState(
            self.prompt_ids, isolate=config.isolate, positions=config.positions
        )
        self.pruner = Pruner(config.prune) if config.prune else None
        self.watchers: list[StepObserver] = self.pruner.observers() if self.pruner else []
        self.limit = max_context(model)
        self.steps: list[StepRecord] = []
        self.stop_reason = "max_steps"
        self.active = True
        self.dist: Tensor = torch.empty(0)
        self._pending: dict[str, Any] = {}

    def select(self, step: int) -> list[int]:
        """Choose and append the step's set; ``[]`` once the row has stopped."""
        if not self.active:
            return []
        config, eos, dist = self.config, self.eos, self.dist
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
            return self._stop("eos")
        if eos is not None and eos in ids[1:]:
            keep = [j for j, t in enumerate(ids) if j == 0 or t != eos]
            dropped += [(ids[j], ps[j]) for j in range(len(ids)) if j not in keep]
            ids, ps = [ids[j] for j in keep], [ps[j] for j in keep]
        if len(self.state) + len(ids) > self.limit:
            return self._stop("context")
        indices = self.state.append_set(ids)
        self._pending = dict(
            step=step, tau=tau, sel=sel, ids=ids, ps=ps, indices=indices, dropped=dropped
        )
        return indices

    def _stop(self, reason: str) -> list[int]:
        self.stop_reason, self.active = reason, False
        return []

    def prune(self, step: int) -> bool:
        """Retroactive pruning after the step's forward; True if anything was pruned."""
        decisions = self.pruner.step(self.state, step, self.text) if self.pruner else []
        self._pending["decisions"] = decisions
        return any(d.pruned for d in decisions)

    def finish(self, logits: Float[Tensor, "k d_vocab"]) -> None:
        """The next distribution from the set's logits rows; record the step."""
        p = self._pending
        self.dist = readout_distribution(logits, p["ps"], self.config.readout)
        self.steps.append(
            _step_record(
                p["step"],
                p["tau"],
                self.config,
                p["sel"],
                p["ids"],
                p["ps"],
                p["indices"],
                p["dropped"],
                p.get("decisions", []),
                self.text,
            )
        )

    def trace(self) -> Trace:
        self.state.clear_stale()
        prompt = self.prompt
        trace = Trace(
            prompt=prompt if isinstance(prompt, str) else list(self.prompt_ids),
            model=model_name(self.model),
            method="tempo",
            config=_recorded_config(self.config, self.model.cfg.n_layers),
            state=self.state,
            texts=[""] * len(self.state),
            steps=self.steps,
            stop_reason=self.stop_reason,
            provenance=provenance(self.model),
        )
        return label_texts(trace, self.model)


def _recorded_config(config: TempoConfig, n_layers: int) -> dict[str, Any]:
    """The trace's config: a partial-isolation layer group resolved to its indices."""
    out = config.to_dict()
    if config.isolate_layers is not None:
        out["isolate_layers"] = resolved_layers(config.isolate_layers, n_layers)
    return out


def _no_text(token_id: int) -> str:
    return ""


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


def _set_weight_layout(model: TempoModel, *, fast: bool) -> None:
    """Store the model's weights in the fast (compute) layout or the stock one.

    Both give bit-identical results (:mod:`tempo_lens.backends.fast`). The switch is persistent, not
    undone after the generation: a relayout costs a copy of the weights, so repeated
    generations keep the layout the last one asked for.
    """
    if fast:
        enable_fast_path(model)
    else:
        disable_fast_path(model)
