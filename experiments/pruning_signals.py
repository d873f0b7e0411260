"""RQ 3.1 / 3.2 / 3.3 pruning signals — see :mod:`tempo_lens.experiments.pruning_signals`.

Same as ``python -m tempo_lens.experiments.pruning_signals`` and
``tempo-lens experiment pruning_signals``.
"""

from tempo_lens.experiments.pruning_signals import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
