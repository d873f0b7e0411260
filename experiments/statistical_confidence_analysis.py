"""Statistics over a directory of attention-analysis runs (bootstrap CIs, paired tests).

Thin wrapper over :func:`tempo_lens.cli.stats.main` (same as
``tempo-lens stats``). Example::

    python experiments/statistical_confidence_analysis.py --data-dir analysis_results
"""

from __future__ import annotations

from collections.abc import Sequence

from tempo_lens.cli.stats import main as stats_main


def main(argv: Sequence[str] | None = None) -> int:
    return stats_main(argv, prog="statistical_confidence_analysis.py")


if __name__ == "__main__":
    raise SystemExit(main())
