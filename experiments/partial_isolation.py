"""RQ 8.2 partial isolation — see :mod:`tempo_lens.experiments.partial_isolation`.

Same as ``python -m tempo_lens.experiments.partial_isolation`` and
``tempo-lens experiment partial_isolation``.
"""

from tempo_lens.experiments.partial_isolation import LAYER_SETS, SPEC, Config, main

__all__ = ["LAYER_SETS", "SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
