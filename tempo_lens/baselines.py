"""Baselines in the same harness: greedy, sampling and beam search.

They run on the same ``HookedTransformer`` *without* TEMPO hooks (plain positions, plain
causal mask) and return a :class:`~tempo_lens.trace.Trace` with one member per step, so
every rendering and analysis applies to them and they compare directly with TEMPO
(``trace.clean_ids()``). Greedy decoding is also the oracle for TEMPO with
``max_parallel=1``.

Example:
    >>> from tempo_lens import make_tiny_model
    >>> model = make_tiny_model()
    >>> greedy(model, [1, 2, 3], max_steps=4).method
    'greedy'
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformer_lens import HookedTransformer

from tempo_lens._tl import make_kv_cache, max_context, model_name
from tempo_lens.state import SequenceState
from tempo_lens.text import encode_prompt, eos_token_id, token_text
from tempo_lens.trace import Candidate, StepRecord, Trace

__all__ = ["beam_search", "greedy", "sample"]


def _decode(
    model: HookedTransformer,
    prompt: str | Sequence[int],
    *,
    max_steps: int,
    choose,
    method: str,
    config: dict,
    stop_at_eos: bool,
) -> Trace:
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    ids = encode_prompt(model, prompt)
    eos = eos_token_id(model) if stop_at_eos else None
    cache = make_kv_cache(model)
    chosen: list[tuple[int, float]] = []
    stop = "max_steps"
    with torch.no_grad():
        new = torch.tensor([ids], device=model.cfg.device)
        for _ in range(max_steps):
            logits = model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))[0, -1]
            probs = torch.softmax(logits.to(torch.float64), dim=-1)
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
        text = token_text(model, tok)
        indices = state.append_set([tok])
        steps.append(
            StepRecord(s, 0.0, method, [Candidate(tok, text, p, True)], indices, probabilities=[p])
        )
    return Trace(
        prompt=prompt if isinstance(prompt, str) else list(ids),
        model=model_name(model),
        method=method,
        config=config,
        state=state,
        texts=[token_text(model, t) for t in state.token_ids],
        steps=steps,
        stop_reason=stop,
        extra=extra or {},
    )


def greedy(
    model: HookedTransformer,
    prompt: str | Sequence[int],
    *,
    max_steps: int,
    stop_at_eos: bool = True,
) -> Trace:
    """Greedy decoding (argmax each step; ties: lowest token id)."""
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
    model: HookedTransformer,
    prompt: str | Sequence[int],
    *,
    max_steps: int,
    seed: int = 0,
    temperature: float = 1.0,
    stop_at_eos: bool = True,
) -> Trace:
    """Ancestral sampling with a seeded generator (same seed, same text)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    gen = torch.Generator().manual_seed(seed)

    def choose(p: torch.Tensor) -> int:
        q = torch.softmax(torch.log(p.clamp_min(1e-300)) / temperature, dim=-1)
        return int(torch.multinomial(q.cpu(), 1, generator=gen))

    return _decode(
        model,
        prompt,
        max_steps=max_steps,
        choose=choose,
        method="sampling",
        config={"max_steps": max_steps, "seed": seed, "temperature": temperature},
        stop_at_eos=stop_at_eos,
    )


def beam_search(
    model: HookedTransformer,
    prompt: str | Sequence[int],
    *,
    max_steps: int,
    num_beams: int = 4,
    stop_at_eos: bool = True,
) -> Trace:
    """Beam search over summed log-probabilities; returns the best beam.

    ``trace.extra["beams"]`` holds every final beam with its score. Beams that emit EOS
    are finished and compete with their score as is (no length penalty).
    """
    if max_steps < 1 or num_beams < 1:
        raise ValueError("max_steps and num_beams must be >= 1")
    ids = encode_prompt(model, prompt)
    eos = eos_token_id(model) if stop_at_eos else None
    beams: list[tuple[list[int], float, list[float]]] = [([], 0.0, [])]
    finished: list[tuple[list[int], float, list[float]]] = []
    with torch.no_grad():
        for _ in range(max_steps):
            if not beams or len(ids) + len(beams[0][0]) + 1 > max_context(model):
                break
            batch = torch.tensor([ids + b[0] for b in beams], device=model.cfg.device)
            logp = torch.log_softmax(model(batch)[:, -1].to(torch.float64), dim=-1)
            scores = torch.tensor([b[1] for b in beams], dtype=torch.float64)[:, None] + logp.cpu()
            top = torch.topk(scores.flatten(), k=min(num_beams * 2, scores.numel()))
            new_beams = []
            for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                b, tok = divmod(flat, scores.shape[1])
                seq, _, probs = beams[b]
                entry = (seq + [tok], score, probs + [float(logp[b, tok].exp())])
                if eos is not None and tok == eos:
                    finished.append((seq, score, probs))
                else:
                    new_beams.append(entry)
                if len(new_beams) == num_beams:
                    break
            beams = new_beams
    pool = finished + beams
    best = max(pool, key=lambda b: b[1])
    extra = {
        "beams": [{"token_ids": b[0], "score": b[1]} for b in sorted(pool, key=lambda b: -b[1])]
    }
    stop = "eos" if best in finished else "max_steps"
    config = {"max_steps": max_steps, "num_beams": num_beams}
    chosen = list(zip(best[0], best[2], strict=True))
    return _single_path_trace(model, prompt, ids, chosen, "beam", config, stop, extra)
