"""Generate with TEMPO while capturing attention, run every analysis, write the exports.

Thin wrapper over :func:`tempo_lens.cli.analyze.main` (same as
``tempo-lens analyze``). Example::

    python experiments/run_attention_analysis.py --prompt "The cat sat on the" \
        --max-steps 20 --selection-threshold 0.1 --output-dir analysis_results
"""

from __future__ import annotations

from collections.abc import Sequence

from tempo_lens.cli.analyze import main as analyze_main


def main(argv: Sequence[str] | None = None) -> int:
    return analyze_main(argv, prog="run_attention_analysis.py")


if __name__ == "__main__":
    raise SystemExit(main())
