"""Write the architecture matrix of ``docs/models.md`` from a run of ``tl.verify`` per family.

Every family of :data:`tempo_lens.models.zoo.ARCHITECTURES` goes through
:func:`tempo_lens.analysis.verify.verify_family` (the function behind
``tests/model/test_architectures.py``), with the tests' word-level tokenizer fixture; the
table between ``<!-- arch-matrix:begin -->`` and ``<!-- arch-matrix:end -->`` is replaced
by the measured rows, with the TransformerLens, transformers and torch versions.

Usage (from the repository root, in the TransformerLens 4.x environment)::

    PYTHONPATH=. python tools/model_matrix.py            # rewrite docs/models.md
    PYTHONPATH=. python tools/model_matrix.py --print    # print the block only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- arch-matrix:begin -->", "<!-- arch-matrix:end -->"


def _cell(result: object, check: str) -> str:
    report = result.report  # type: ignore[attr-defined]
    if report is None:
        return "—"
    found = [r for r in report.results if r.name == check]
    return f"{found[0].max_abs_dp:.1e}" if found else "—"


def build_block() -> str:
    """The markdown block: versions line, table, one row per family."""
    import importlib.metadata
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    from tempo_lens.analysis.verify import CHECKS, verify_family
    from tempo_lens.models.zoo import ARCHITECTURES

    sys.path.insert(0, str(ROOT))
    from tests.tokenizer_fixtures import word_tokenizer

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    hf_logging.set_verbosity_error()
    versions = {
        d: importlib.metadata.version(d) for d in ("transformer-lens", "transformers", "torch")
    }
    checks = list(CHECKS)
    head = "| family | tiny model | status | " + " | ".join(checks) + " | reason |"
    rule = "|" + "---|" * (len(checks) + 4)
    lines = [
        f"Measured with TransformerLens {versions['transformer-lens']}, transformers "
        f"{versions['transformers']}, torch {versions['torch']} (CPU, float32) by "
        "`tools/model_matrix.py`; cells are max |Δp| against the model's own Hugging Face "
        "forward, exact = every check ≤ 1e-5.",
        "",
        head,
        rule,
    ]
    for family in ARCHITECTURES:
        start = time.perf_counter()
        result = verify_family(family, tokenizer=word_tokenizer())
        reason = result.reason.replace("|", "/")
        cells = " | ".join(_cell(result, c) for c in checks)
        lines.append(
            f"| `{family}` | {result.description} | {result.status} | {cells} | {reason} |"
        )
        print(f"{family}: {result.status} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Rewrite the matrix block of ``docs/models.md`` (or print it with ``--print``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the block, write nothing")
    args = parser.parse_args(argv)
    block = build_block()
    if args.print:
        print(block)
        return 0
    path = ROOT / "docs" / "models.md"
    text = path.read_text(encoding="utf-8")
    before, rest = text.split(BEGIN)
    _, after = rest.split(END)
    path.write_text(f"{before}{BEGIN}\n{block}\n{END}{after}", encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
