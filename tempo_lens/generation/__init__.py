"""Generation: the TEMPO loop, its batched forwards, the baselines, token text.

* :mod:`~tempo_lens.generation.loop` — :func:`generate`, :func:`generate_batch`,
  :class:`StepObserver` (orchestration only);
* :mod:`~tempo_lens.generation.pruner` — :class:`Pruner`: the recorder and the retroactive
  pruning judgement, composed once for generation and the analyses' re-judging;
* :mod:`~tempo_lens.generation.batch_forward` — the model-facing half of a step (KV cache,
  several sequences per forward);
* :mod:`~tempo_lens.generation.baselines` — greedy, sampling and beam search in the same
  harness;
* :mod:`~tempo_lens.generation.trees` — token trees under the same hooks: tree beam search
  and lossless tree speculative decoding;
* :mod:`~tempo_lens.generation.text` — prompt encoding and token text.
"""

from tempo_lens.generation.loop import StepObserver, generate, generate_batch

__all__ = ["StepObserver", "generate", "generate_batch"]
