"""Findings: every research-note claim re-measured — see :mod:`tempo_lens.experiments.findings`.

Same as ``python -m tempo_lens.experiments.findings``, ``tempo-lens findings`` and
``tempo-lens experiment findings``.
"""

from tempo_lens.experiments.findings import SPEC, Config, main

__all__ = ["SPEC", "Config", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
