"""The decoders of ``compare_decoders``, each run once and recorded the same way.

Every method returns a :class:`MethodRun`: its outputs (primary first), the alternatives it
considered at each step, its :class:`~tempo_lens.analysis.budget.Budget` (derived from the
trace) next to the forwards and tokens a :class:`~tempo_lens.analysis.budget.ForwardCounter`
saw, the wall time, and the mean attention entropy of each step's queries
(:class:`~tempo_lens.analysis.paths.EntropyMeter`; every ``HookedTransformer`` method runs
with the meter attached, so its small overhead is the same for all of them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import tempo_lens as tl
from tempo_lens.analysis.budget import Budget, ForwardCounter, trace_budget
from tempo_lens.analysis.paths import EntropyMeter
from tempo_lens.backends import TempoModel
from tempo_lens.generation.text import eos_token_id
from tempo_lens.trace import Trace

__all__ = ["MethodRun", "run_beam", "run_greedy", "run_hf", "run_sampling", "run_tempo"]


@dataclass
class MethodRun:
    """One decoding method on one prompt.

    Attributes:
        name: E.g. ``tempo/isolated/tau=0.1/none``, ``beam/k=4``, ``sampling/top_p=0.9``.
        family: ``tempo``, ``greedy``, ``beam``, ``sampling``, ``hf_greedy`` or ``pld``.
        params: The method's settings (columns of the runs table).
        outputs: Generated token ids of each output; ``outputs[0]`` is the primary text.
        alternatives: Per step, the tokens the method considered (TEMPO's set, the new
            k best continuations of beam search, the n samples' draws, or the one token).
        budget: Forwards / tokens / peak KV positions derived from the traces (summed over
            the n samples for sampling); None for Hugging Face methods.
        counted: ``(forwards, tokens)`` measured by a forward counter.
        peak_kv_positions: Measured for Hugging Face methods, else ``budget``'s.
        seconds: Wall time of the generation(s).
        entropy: Per step, mean attention entropy (nats) of that step's queries.
        traces: The traces (TEMPO, beam, greedy, samples).
    """

    name: str
    family: str
    params: dict[str, Any]
    outputs: list[list[int]]
    alternatives: list[list[int]]
    budget: Budget | None
    counted: tuple[int, int]
    peak_kv_positions: int
    seconds: float
    entropy: list[float] = field(default_factory=list)
    traces: list[Trace] = field(default_factory=list)


def _measured(
    model: TempoModel, fn: Callable[[], list[Trace]]
) -> tuple[list[Trace], ForwardCounter, EntropyMeter, float]:
    counter, meter = ForwardCounter(model.embed), EntropyMeter()
    with counter.counting(), model.hooks(fwd_hooks=meter.fwd_hooks(model)):  # type: ignore[arg-type]
        t0 = time.perf_counter()
        traces = fn()
        seconds = time.perf_counter() - t0
    return traces, counter, meter, seconds


def _single(name, family, params, model, fn) -> MethodRun:
    (trace,), counter, meter, seconds = _measured(model, lambda: [fn()])
    b = trace_budget(trace)
    ids = trace.clean_ids()
    return MethodRun(
        name, family, params, [ids], [[t] for t in ids], b,
        (counter.forwards, counter.tokens), b.peak_kv_positions, seconds,
        meter.values[1 : 1 + len(ids)], [trace],
    )  # fmt: skip


def run_greedy(model: TempoModel, prompt: list[int], max_steps: int) -> MethodRun:
    """Greedy decoding (:func:`tempo_lens.greedy`)."""
    return _single(
        "greedy", "greedy", {}, model, lambda: tl.greedy(model, prompt, max_steps=max_steps)
    )


def run_tempo(
    model: TempoModel, prompt: list[int], config: tl.TempoConfig, params: dict[str, Any]
) -> MethodRun:
    """TEMPO (:func:`tempo_lens.generate`) with ``config``; alternatives are the sets."""
    (trace,), counter, meter, seconds = _measured(
        model, lambda: [tl.generate(model, prompt, config)]
    )
    b = trace_budget(trace)
    entropy, j = [], 1
    for rec in trace.steps:  # forward j is step rec.step; a pruning step adds a readout forward
        entropy.append(meter.values[j])
        j += 1 + any(d.pruned for d in rec.pruning)
    sets = [[trace.state.token_ids[i] for i in rec.indices] for rec in trace.steps]
    name = f"tempo/{params['mode']}/tau={params['tau']}/{params['prune']}"
    return MethodRun(
        name, "tempo", params, [trace.clean_ids()], sets, b,
        (counter.forwards, counter.tokens), b.peak_kv_positions, seconds, entropy, [trace],
    )  # fmt: skip


def run_beam(model: TempoModel, prompt: list[int], max_steps: int, k: int) -> MethodRun:
    """Beam search (:func:`tempo_lens.beam_search`, Hugging Face semantics).

    Outputs are the finished hypotheses, best first; alternatives the k best
    continuations of each step.
    """
    (trace,), counter, meter, seconds = _measured(
        model, lambda: [tl.beam_search(model, prompt, max_steps=max_steps, num_beams=k)]
    )
    b = trace_budget(trace)
    steps = trace.extra["steps"]
    hyps = [list(h["token_ids"]) for h in trace.extra["beams"]]
    return MethodRun(
        f"beam/k={k}", "beam", {"k": k}, [trace.clean_ids()] + hyps[1:],
        [list(s["top_k"]) for s in steps], b,
        (counter.forwards, counter.tokens), b.peak_kv_positions, seconds,
        meter.values[1 : 1 + len(steps)], [trace],
    )  # fmt: skip


def run_sampling(
    model: TempoModel,
    prompt: list[int],
    max_steps: int,
    *,
    n: int,
    top_p: float,
    seeds: Sequence[int],
) -> MethodRun:
    """``n`` seeded samples at temperature 1 (nucleus ``top_p``).

    Alternatives at step s are the samples' tokens at s; the budget is the n runs' sum.
    """

    def draw() -> list[Trace]:
        return [
            tl.sample(model, prompt, max_steps=max_steps, seed=s, top_p=top_p) for s in seeds[:n]
        ]

    traces, counter, meter, seconds = _measured(model, draw)
    budgets = [trace_budget(t) for t in traces]
    b = Budget(
        sum(x.forwards for x in budgets),
        sum(x.tokens_forwarded for x in budgets),
        max(x.peak_kv_positions for x in budgets),  # the samples run one after another
    )
    outs = [t.clean_ids() for t in traces]
    alts = [[o[s] for o in outs if s < len(o)] for s in range(max(map(len, outs), default=0))]
    first = len(outs[0])
    return MethodRun(
        f"sampling/top_p={top_p:g}", "sampling", {"top_p": top_p, "n": n}, outs, alts, b,
        (counter.forwards, counter.tokens), b.peak_kv_positions, seconds,
        meter.values[1 : 1 + first], traces,
    )  # fmt: skip


def run_hf(
    hf: Any, prompt: list[int], max_steps: int, *, eos: int | None, lookup_tokens: int
) -> MethodRun:
    """Hugging Face ``generate`` (greedy) on the same weights, with or without lookup.

    Prompt-lookup decoding: ``prompt_lookup_num_tokens=lookup_tokens`` (Saxena 2023), or
    without it (``0``).

    Forwards and tokens are counted on the input embeddings; the peak KV-cache length is read
    from the model's cache after every forward.
    """
    counter = ForwardCounter(hf.get_input_embeddings())
    peak = [0]

    def after(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        cache = getattr(output, "past_key_values", None)
        if cache is not None:
            peak[0] = max(peak[0], int(cache.get_seq_length()))

    kw: dict[str, Any] = {"prompt_lookup_num_tokens": lookup_tokens} if lookup_tokens else {}
    x = torch.tensor([prompt], device=hf.device)
    handle = hf.model.register_forward_hook(after, with_kwargs=True)
    try:
        with counter.counting(), torch.no_grad():
            t0 = time.perf_counter()
            out = hf.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=max_steps, do_sample=False,
                eos_token_id=eos, pad_token_id=0 if eos is None else eos, **kw,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
    finally:
        handle.remove()
    ids = [int(t) for t in out[0, len(prompt) :]]
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    name = "pld" if lookup_tokens else "hf_greedy"
    params = {"lookup_tokens": lookup_tokens} if lookup_tokens else {}
    return MethodRun(
        name, name, params, [ids], [[t] for t in ids], None,
        (counter.forwards, counter.tokens), peak[0], seconds,
    )  # fmt: skip


def model_eos(model: TempoModel) -> int | None:
    """The EOS id the ``HookedTransformer`` methods stop at."""
    return eos_token_id(model)
