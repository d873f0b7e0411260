"""RQ 4.x / 5.1 / 7.x decoder comparison — see :mod:`tempo_lens.experiments.compare_decoders`.

Same as ``python -m tempo_lens.experiments.compare_decoders`` and
``tempo-lens experiment compare_decoders``.
"""

from tempo_lens.experiments.compare_decoders import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
