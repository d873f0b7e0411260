"""RQ 5.1 / 5.2 threshold sweep — see :mod:`tempo_lens.experiments.threshold_sweep`.

Same as ``python -m tempo_lens.experiments.threshold_sweep`` and
``tempo-lens experiment threshold_sweep``.
"""

from tempo_lens.experiments.threshold_sweep import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
