"""RQ 2.1 isolation A/B — see :mod:`tempo_lens.experiments.isolation_ab`.

Same as ``python -m tempo_lens.experiments.isolation_ab`` and
``tempo-lens experiment isolation_ab``.
"""

from tempo_lens.experiments.isolation_ab import COMPARED, SPEC, Config, main

__all__ = ["COMPARED", "SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
