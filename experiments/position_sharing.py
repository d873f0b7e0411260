"""RQ 1.1 / 1.2 position sharing — see :mod:`tempo_lens.experiments.position_sharing`.

Same as ``python -m tempo_lens.experiments.position_sharing`` and
``tempo-lens experiment position_sharing``.
"""

from tempo_lens.experiments.position_sharing import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
