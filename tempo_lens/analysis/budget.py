"""Compute budgets of decoding methods: forwards, tokens forwarded, KV-cache size.

Decoders are compared at matched budgets, so each method's cost is derived from what it
produced, by rules written out from the implementations (and checked against a forward
counter in ``tests/model/test_compare_decoders.py``):

* **TEMPO** (:func:`tempo_lens.generate`, KV cache): one prompt forward (``L`` tokens), one
  forward per step feeding the step's ``k_s`` members, and one more forward of those ``k_s``
  rows at every step where something was pruned (the readout with pruned tokens hidden).
  Without the KV cache every forward feeds the whole sequence. Every member stays in the
  cache: peak ``L + sum k_s`` positions.
* **greedy / sampling** (:mod:`tempo_lens.generation.baselines`): the prompt forward, then one token per
  forward; the last chosen token is never fed. A stop at EOS (or the context) costs the
  forward whose distribution produced it.
* **beam search** (:func:`tempo_lens.generation.baselines.beam_search`): the prompt forward (batch 1),
  then per step one forward of every running beam's new token (``trace.extra["steps"]``
  records how many); the cache holds ``beams x positions``.

:class:`ForwardCounter` measures the same quantities on any ``torch`` embedding module
(a ``HookedTransformer``'s ``embed`` or a Hugging Face model's input embeddings), for
methods whose cost cannot be derived (e.g. Hugging Face prompt-lookup decoding).

Examples:
    >>> import tempo_lens as tl
    >>> model = tl.make_tiny_model()
    >>> trace = tl.greedy(model, [1, 2, 3], max_steps=4)
    >>> trace_budget(trace).forwards, trace_budget(trace).tokens_forwarded
    (4, 6)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from tempo_lens.backends import TempoModel, forward, kv_cache_nbytes, make_kv_cache
from tempo_lens.trace import Trace

__all__ = ["Budget", "ForwardCounter", "kv_bytes_per_position", "trace_budget"]


@dataclass(frozen=True)
class Budget:
    """What a generation cost.

    Attributes:
        forwards: Model forward calls.
        tokens_forwarded: Token positions fed through the model, summed over the batch.
        peak_kv_positions: Largest number of cached (batch row, position) pairs at once.
    """

    forwards: int
    tokens_forwarded: int
    peak_kv_positions: int


def trace_budget(trace: Trace) -> Budget:
    """The :class:`Budget` of a TEMPO, greedy, sampling or beam-search trace.

    Raises:
        ValueError: an unknown ``trace.method``, or a beam trace without step records.
    """
    n_prompt = trace.prompt_length
    widths = trace.widths()
    if trace.method == "tempo":
        pruned_steps = [s for s in trace.steps if any(d.pruned for d in s.pruning)]
        if trace.config.get("use_kv_cache", True):
            tokens = n_prompt + sum(widths) + sum(len(s.indices) for s in pruned_steps)
        else:  # a full forward of the sequence so far, each time
            lengths = [n_prompt] + [n_prompt + sum(widths[: i + 1]) for i in range(len(widths))]
            tokens = sum(lengths) + sum(lengths[s.step + 1] for s in pruned_steps)
        forwards = 1 + len(widths) + len(pruned_steps)
        return Budget(forwards, tokens, n_prompt + sum(widths))
    if trace.method in ("greedy", "sampling"):
        forwards = len(widths) + (trace.stop_reason != "max_steps")
        return Budget(forwards, n_prompt + forwards - 1, n_prompt + forwards - 1)
    if trace.method == "beam":
        if "steps" not in trace.extra:
            raise ValueError("a beam trace needs extra['steps'] (from baselines.beam_search)")
        fed = [int(s["forwarded"]) for s in trace.extra["steps"]]
        peak = max(
            [n_prompt] + [n * (n_prompt + i + 1) for i, n in enumerate(fed) if n], default=n_prompt
        )
        return Budget(1 + sum(n > 0 for n in fed), n_prompt + sum(fed), peak)
    raise ValueError(f"no budget rule for method {trace.method!r}")


def kv_bytes_per_position(model: TempoModel) -> int:
    """Bytes one cached position takes over all layers (keys + values).

    Measured on a real TransformerLens KV cache after a one-token forward.
    """
    cache = make_kv_cache(model)
    with torch.no_grad():
        tok = torch.zeros((1, 1), dtype=torch.long, device=model.cfg.device)
        forward(model, tok, cache=cache)
    return kv_cache_nbytes(cache)


class ForwardCounter:
    """Count forwards and tokens through an embedding module (a forward pre-hook).

    Args:
        module: The token-embedding module every forward calls exactly once
            (``model.embed`` of a ``HookedTransformer``, ``hf.get_input_embeddings()``).

    Attributes:
        forwards: Calls seen while counting.
        tokens: Token ids embedded (batch x positions, summed).
        batch_tokens: ``[(batch, positions), ...]`` of each call.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.forwards = 0
        self.tokens = 0
        self.batch_tokens: list[tuple[int, int]] = []

    def _hook(self, module: Any, args: tuple[Any, ...]) -> None:
        ids = args[0]
        shape = tuple(ids.shape)
        self.forwards += 1
        self.tokens += int(ids.numel())
        self.batch_tokens.append((shape[0], shape[-1]) if len(shape) == 2 else (1, shape[-1]))

    @contextmanager
    def counting(self) -> Iterator[ForwardCounter]:
        """Count within the block (the counts accumulate over blocks)."""
        handle = self.module.register_forward_pre_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()
