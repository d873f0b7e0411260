"""RQ 2.2 / 2.3 / 10.1 uncertainty and context — see :mod:`tempo_lens.experiments.uncertainty`.

Same as ``python -m tempo_lens.experiments.uncertainty`` and
``tempo-lens experiment uncertainty``.
"""

from tempo_lens.experiments.uncertainty import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
