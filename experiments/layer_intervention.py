"""RQ 1.3 layer intervention — see :mod:`tempo_lens.experiments.layer_intervention`.

Same as ``python -m tempo_lens.experiments.layer_intervention`` and
``tempo-lens experiment layer_intervention``.
"""

from tempo_lens.experiments.layer_intervention import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
