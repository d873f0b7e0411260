"""RQ 6.1 head ablation — see :mod:`tempo_lens.experiments.head_ablation`.

Same as ``python -m tempo_lens.experiments.head_ablation`` and
``tempo-lens experiment head_ablation``.
"""

from tempo_lens.experiments.head_ablation import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
