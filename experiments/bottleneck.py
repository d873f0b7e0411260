"""RQ 10.3 information bottlenecks — see :mod:`tempo_lens.experiments.bottleneck`.

Same as ``python -m tempo_lens.experiments.bottleneck`` and
``tempo-lens experiment bottleneck``.
"""

from tempo_lens.experiments.bottleneck import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
