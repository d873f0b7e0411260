"""RQ 3.1-3.3 pruning layers — see :mod:`tempo_lens.experiments.pruning_layers`.

Same as ``python -m tempo_lens.experiments.pruning_layers`` and
``tempo-lens experiment pruning_layers``.
"""

from tempo_lens.experiments.pruning_layers import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
