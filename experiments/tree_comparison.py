"""RQ 7.1 / 7.3 / 8.1 TEMPO vs token trees — see :mod:`tempo_lens.experiments.tree_comparison`.

Same as ``python -m tempo_lens.experiments.tree_comparison`` and
``tempo-lens experiment tree_comparison``.
"""

from tempo_lens.experiments.tree_comparison import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
