"""Baselines in the same harness: greedy, sampling and beam search.

They run on the same ``HookedTransformer`` *without* TEMPO hooks (plain positions, plain
causal mask) and return a :class:`~tempo_lens.trace.Trace` with one member per step, so
every rendering and analysis applies to them and they compare directly with TEMPO
(``trace.clean_ids()``). Greedy decoding is also the oracle for TEMPO with
``max_parallel=1``.

Examples:
    >>> from tempo_lens import make_tiny_model
    >>> model = make_tiny_model()
    >>> greedy(model, [1, 2, 3], max_steps=4).method
    'greedy'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tempo_lens._numbers import BoolLike, IntLike, RealLike, as_int, as_real
from tempo_lens.backends import (
    TempoModel,
    forward,
    make_kv_cache,
    max_context,
    model_name,
    provenance,
    reorder_kv_cache,
)
from tempo_lens.generation.text import encode_prompt, eos_token_id, label_texts
from tempo_lens.prompts import PromptLike
from tempo_lens.schedules import check_threshold
from tempo_lens.selection import check_logits, probabilities
from tempo_lens.state import SequenceState
from tempo_lens.trace import Candidate, StepRecord, Trace

__all__ = ["beam_search", "greedy", "nucleus", "sample"]


def _count(name: str, value: IntLike) -> int:
    """``value`` as a plain int ``>= 1`` (NumPy/torch integers accepted), else ValueError."""
    n = as_int(value)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return n


def _real(name: str, value: RealLike, low: float, high: float) -> float:
    """``value`` as a plain float in ``(low, high]`` (NumPy/torch scalars accepted)."""
    x = as_real(value)
    if not isinstance(x, float) or not low < x <= high:
        raise ValueError(f"{name} must be a number in ({low}, {high}], got {value!r}")
    return x


def _decode(
    model: TempoModel,
    prompt: PromptLike,
    *,
    max_steps: int,
    choose,
    method: str,
    config: dict,
    stop_at_eos: BoolLike,
) -> Trace:
    ids = encode_prompt(model, prompt)
    eos = eos_token_id(model) if stop_at_eos else None
    cache = make_kv_cache(model)
    chosen: list[tuple[int, float]] = []
    stop = "max_steps"
    with torch.no_grad():
        new = torch.tensor([ids], device=model.cfg.device)
        for _ in range(max_steps):
            logits = forward(model, new, cache=cache)[0, -1]
            probs = probabilities(logits)  # refuses NaN/+inf logits, as TEMPO does
            tok = int(choose(probs))
            if eos is not None and tok == eos:
                stop = "eos"
                break
            if len(ids) + len(chosen) + 1 > max_context(model):
                stop = "context"
                break
            chosen.append((tok, float(probs[tok])))
            new = torch.tensor([[tok]], device=model.cfg.device)
    return _single_path_trace(model, prompt, ids, chosen, method, config, stop)


def _single_path_trace(model, prompt, ids, chosen, method, config, stop, extra=None) -> Trace:
    state = SequenceState(ids, isolate=False)
    steps = []
    for s, (tok, p) in enumerate(chosen):
        indices = state.append_set([tok])
        steps.append(
            StepRecord(s, 0.0, method, [Candidate(tok, "", p, True)], indices, probabilities=[p])
        )
    trace = Trace(
        prompt=prompt if isinstance(prompt, str) else list(ids),
        model=model_name(model),
        method=method,
        config=config,
        state=state,
        texts=[""] * len(state),
        steps=steps,
        stop_reason=stop,
        extra=extra or {},
        provenance=provenance(model),
    )
    return label_texts(trace, model)  # token texts decoded in context


def greedy(
    model: TempoModel,
    prompt: PromptLike,
    *,
    max_steps: IntLike,
    stop_at_eos: BoolLike = True,
) -> Trace:
    """Greedy decoding (argmax each step; ties: lowest token id).

    Raises:
        ValueError: ``max_steps`` < 1; the model's logits contain NaN or ``+inf``
            (:func:`tempo_lens.selection.check_logits`, as for every decoder).
    """
    max_steps = _count("max_steps", max_steps)
    return _decode(
        model,
        prompt,
        max_steps=max_steps,
        choose=lambda p: torch.argmax(p),
        method="greedy",
        config={"max_steps": max_steps},
        stop_at_eos=stop_at_eos,
    )


def sample(
    model: TempoModel,
    prompt: PromptLike,
    *,
    max_steps: IntLike,
    seed: IntLike = 0,
    temperature: RealLike = 1.0,
    top_p: RealLike = 1.0,
    stop_at_eos: BoolLike = True,
) -> Trace:
    """Ancestral sampling with a seeded generator (same seed, same text).

    Args:
        model: A ``HookedTransformer`` (with a tokenizer if ``prompt`` is text).
        prompt: Text, or token ids.
        max_steps: Maximum number of tokens to generate (``>= 1``).
        seed: Seed of the sampling generator.
        stop_at_eos: Stop when EOS is drawn (it is not appended).
        temperature: Softmax temperature (> 0).
        top_p: Nucleus sampling (Holtzman et al. 2020): draw from the smallest set of most
            probable tokens whose probability sums to at least ``top_p`` (renormalised),
            in ``(0, 1]``; 1 keeps the whole vocabulary.

    Raises:
        ValueError: A value out of range; the model's logits contain NaN or ``+inf``
            (:func:`tempo_lens.selection.check_logits`, as for every decoder).
    """
    max_steps, seed = _count("max_steps", max_steps), as_int(seed)
    temperature = _real("temperature", temperature, 0.0, math.inf)
    top_p = _real("top_p", top_p, 0.0, 1.0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    gen = torch.Generator().manual_seed(seed)

    def choose(p: torch.Tensor) -> int:
        q = torch.softmax(torch.log(p.clamp_min(1e-300)) / temperature, dim=-1).cpu()
        if top_p < 1:
            q = nucleus(q, top_p)
        return int(torch.multinomial(q, 1, generator=gen))

    return _decode(
        model,
        prompt,
        max_steps=max_steps,
        choose=choose,
        method="sampling",
        config={"max_steps": max_steps, "seed": seed, "temperature": temperature, "top_p": top_p},
        stop_at_eos=stop_at_eos,
    )


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` restricted to its top-p nucleus and renormalised.

    The nucleus: the most probable tokens whose cumulative probability *before* them is
    below ``top_p`` (so the token crossing ``top_p`` is kept, and the top token always is).
    """
    order = torch.argsort(probs, descending=True, stable=True)
    sorted_p = probs[order]
    before = torch.cumsum(sorted_p, 0) - sorted_p
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[before < top_p]] = True
    out = torch.where(keep, probs, torch.zeros_like(probs))
    return out / out.sum()


@dataclass
class _Beam:
    tokens: list[int]
    score: float  # summed log-probability
    probs: list[float]


def beam_search(
    model: TempoModel,
    prompt: PromptLike,
    *,
    max_steps: IntLike,
    num_beams: IntLike = 4,
    length_penalty: RealLike = 1.0,
    stop_at_eos: BoolLike = True,
    candidate_threshold: RealLike | None = None,
) -> Trace:
    """Beam search exactly as Hugging Face ``generate(num_beams=k, do_sample=False)`` runs it.

    The rules of transformers' ``_beam_search`` (5.x) with its defaults
    (``early_stopping=False``):

    * each step takes the ``2k`` best continuations of the running beams by summed
      log-probability (float64 here);
    * among the first ``k`` of them, those that end in EOS or reach ``max_steps`` become
      finished hypotheses, scored ``sum log p / n ** length_penalty`` (``n`` generated
      tokens, EOS included); the ``k`` best finished hypotheses are kept;
    * the ``k`` best continuations that did not finish run on (KV cache reordered);
    * it stops at ``max_steps``, or once ``k`` hypotheses are finished and the best running
      beam's ``score / n ** length_penalty`` cannot beat the worst of them.

    The trace's tokens are the best finished hypothesis (EOS not appended).
    ``trace.extra["beams"]`` holds the finished hypotheses, best first (``token_ids``,
    ``score``, ``sum_logprob``, ``eos``); ``trace.extra["steps"]`` holds, per step, the new
    tokens of the ``k`` best continuations (``top_k``), the new token and parent of every
    running beam, and how many beams were forwarded after it.

    ``candidate_threshold=τ`` makes it *threshold beam search* (see :class:`BeamRules`):
    per running beam only the tokens with ``p >= τ`` (and always its top-1) are
    candidates, instead of the top ``2k``; fewer than ``k`` beams may then run. ``None``
    (the default) is Hugging Face's rule, unchanged.

    Raises:
        ValueError: ``max_steps`` or ``num_beams`` < 1; ``candidate_threshold`` not in
            ``(0, 1]``; the model's logits contain NaN or ``+inf``
            (:func:`tempo_lens.selection.check_logits`, as for every decoder).
    """
    max_steps, num_beams = _count("max_steps", max_steps), _count("num_beams", num_beams)
    length_penalty = _real("length_penalty", length_penalty, -math.inf, math.inf)
    tau = candidate_threshold_value(candidate_threshold)
    ids = encode_prompt(model, prompt)
    eos = eos_token_id(model) if stop_at_eos else None
    n_max = min(max_steps, max_context(model) - len(ids))
    rules = BeamRules(
        num_beams=num_beams,
        length_penalty=length_penalty,
        eos=eos,
        n_max=n_max,
        candidate_threshold=tau,
    )
    cache = make_kv_cache(model)
    device = model.cfg.device
    with torch.no_grad():
        new = torch.tensor([ids], device=device)
        logits = forward(model, new, cache=cache)[:, -1]
        for step in range(max(n_max, 0)):
            parents = rules.advance(step, logits)
            if parents is None:
                break
            reorder_kv_cache(cache, torch.tensor(parents, dtype=torch.long))
            new = torch.tensor([[b.tokens[-1]] for b in rules.running], device=device)
            logits = forward(model, new, cache=cache)[:, -1]
    config: dict[str, Any] = {
        "max_steps": max_steps,
        "num_beams": num_beams,
        "length_penalty": rules.lp,
    }
    if tau is not None:
        config["candidate_threshold"] = tau
    if not rules.finished:  # the prompt already fills the context
        return _single_path_trace(
            model, prompt, ids, [], "beam", {"max_steps": max_steps}, "context", {"steps": []}
        )
    tokens, probs, stop, extra = rules.outcome(context_bound=n_max != max_steps)
    chosen = list(zip(tokens, probs, strict=True))
    return _single_path_trace(model, prompt, ids, chosen, "beam", config, stop, extra)


def candidate_threshold_value(value: RealLike | None) -> float | None:
    """``candidate_threshold`` checked: ``None``, or a real number in ``(0, 1]`` as a float.

    Raises:
        ValueError: Anything else (the message names the value).
    """
    if value is None:
        return None
    check_threshold(value, "candidate_threshold")
    return float(as_real(value))


class BeamRules:
    """The bookkeeping of Hugging Face beam search, apart from the model.

    :func:`beam_search` (one KV-cache row per beam) and
    :func:`tempo_lens.generation.trees.tree_beam_search` (all beams as one token tree)
    feed it the running beams' next-token logits each step; it keeps the running beams,
    the finished hypotheses and the per-step record (see :func:`beam_search` for the rules).

    Args:
        num_beams: ``k``.
        length_penalty: Exponent of the length normalisation.
        eos: The EOS token id (``None``: never finish early).
        n_max: The last step (0-based) is ``n_max - 1``.
        candidate_threshold: ``None``: Hugging Face's candidates, the ``2k`` best
            continuations of all running beams. ``τ`` in ``(0, 1]``: *threshold beam
            search* — the candidates are, per running beam, only the tokens TEMPO would
            select there: ``p >= τ`` (``p`` the float64 softmax TEMPO thresholds,
            :func:`tempo_lens.selection.probabilities`), and always the beam's top-1
            (ties: lowest id). Everything else (finishing among the first ``k``, the ``k``
            best unfinished run on, the stopping rule) is unchanged; fewer than ``k``
            beams run when fewer candidates exist. Only the ``2k`` best candidates are
            ranked: at most one per beam (its EOS) can finish, so the ``k`` beams that run
            on are always among them.
    """

    def __init__(
        self,
        *,
        num_beams: int,
        length_penalty: float,
        eos: int | None,
        n_max: int,
        candidate_threshold: float | None = None,
    ):
        self.k, self.lp, self.eos, self.n_max = num_beams, float(length_penalty), eos, n_max
        self.tau = candidate_threshold_value(candidate_threshold)
        self.running = [_Beam([], 0.0, [])]
        self.finished: list[tuple[float, _Beam, bool]] = []  # (normalised score, beam, EOS)
        self.steps: list[dict[str, Any]] = []
        self.open_ = True  # HF's is_early_stop_heuristic_unsatisfied

    def advance(self, step: int, logits: torch.Tensor) -> list[int] | None:
        """One step from ``logits`` ``[running beams, d_vocab]``.

        Returns:
            For each new running beam, the index of the running beam it extends (its new
            token is ``self.running[i].tokens[-1]``); ``None`` once the search stops.

        Raises:
            ValueError: The logits contain NaN or ``+inf``.
        """
        k, lp, eos = self.k, self.lp, self.eos
        check_logits(logits)  # NaN/+inf logits: the error TEMPO raises
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1).cpu()
        totals = torch.tensor([b.score for b in self.running], dtype=torch.float64)[:, None] + logp
        if self.tau is None:  # Hugging Face: the 2k best continuations
            top = torch.topk(totals.flatten(), k=min(2 * k, totals.numel()))
        else:  # threshold beam search: per beam, p >= tau, and always the top-1
            p = probabilities(logits).cpu()
            allowed = p >= self.tau
            allowed[torch.arange(p.shape[0]), torch.argmax(p, dim=-1)] = True
            totals = totals.masked_fill(~allowed, -math.inf)
            top = torch.topk(totals.flatten(), k=min(2 * k, int(allowed.sum())))
        last = step == self.n_max - 1
        cands = []
        for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            b, tok = divmod(flat, totals.shape[1])
            beam = _Beam(self.running[b].tokens + [tok], score, [*self.running[b].probs, 0.0])
            beam.probs[-1] = float(logp[b, tok].exp())
            is_eos = eos is not None and tok == eos
            cands.append((b, beam, is_eos or last, is_eos))
        if self.open_:
            self.finished += [
                (c[1].score / (step + 1) ** lp, c[1], c[3]) for c in cands[:k] if c[2]
            ]
            self.finished = sorted(self.finished, key=lambda f: -f[0])[:k]
        nxt = [c for c in cands if not c[2]][:k]
        self.running = [c[1] for c in nxt]
        if self.open_ and len(self.finished) == k and self.running:
            self.open_ = self.running[0].score / (step + 1) ** lp > self.finished[-1][0]
        go_on = bool(self.running) and self.open_ and not last
        self.steps.append(
            {
                "top_k": [c[1].tokens[-1] for c in cands[:k]],
                "tokens": [c[1].tokens[-1] for c in nxt],
                "parents": [c[0] for c in nxt],
                "forwarded": len(nxt) if go_on else 0,
            }
        )
        return [c[0] for c in nxt] if go_on else None

    def outcome(self, *, context_bound: bool) -> tuple[list[int], list[float], str, dict]:
        """``(tokens, probabilities, stop_reason, extra)`` of the best finished hypothesis.

        Tokens exclude a final EOS; ``extra`` holds ``beams`` (finished hypotheses, best
        first) and ``steps`` (the per-step record). Needs a finished hypothesis.
        """
        _, best, best_eos = self.finished[0]
        tokens = best.tokens[:-1] if best_eos else best.tokens
        stop = "eos" if best_eos else ("context" if context_bound else "max_steps")
        extra = {
            "beams": [
                {
                    "token_ids": b.tokens[:-1] if e else b.tokens,
                    "score": s,
                    "sum_logprob": b.score,
                    "eos": e,
                }
                for s, b, e in self.finished
            ],
            "steps": self.steps,
        }
        return tokens, best.probs[: len(tokens)], stop, extra
