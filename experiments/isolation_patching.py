"""RQ 2.1 / 6.2 isolation patching — see :mod:`tempo_lens.experiments.isolation_patching`.

Same as ``python -m tempo_lens.experiments.isolation_patching`` and
``tempo-lens experiment isolation_patching``.
"""

from tempo_lens.experiments.isolation_patching import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
