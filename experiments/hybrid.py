"""RQ 8.3 threshold beam search (TEMPO's sets as beam search's candidates) — see
:mod:`tempo_lens.experiments.hybrid`.

Same as ``python -m tempo_lens.experiments.hybrid`` and ``tempo-lens experiment hybrid``.
"""

from tempo_lens.experiments.hybrid import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
