"""Issue 22 (start-up): help and argument errors do not import TransformerLens."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from tempo_lens.cli import main
try:
    code = main({argv!r})
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("transformer_lens", "transformers") if m in sys.modules)
print("HEAVY", heavy, "CODE", code)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["generate", "--help"],
        ["generate", "--prompt", "x", "--max-steps", "-3"],
        ["stats", "--help"],
        ["analyze", "--help"],
        ["experiment", "head_ablation", "--help"],
        ["experiment", "isolation_patching", "--limit", "0"],
        ["experiment", "nosuch"],
        ["findings", "--help"],
        ["judge", "--help"],
        ["judge", "--output-dir", "/nonexistent", "--table", "runs.csv", "--judge-model", "x"],
        ["quality-prediction", "--help"],
        ["quality-prediction", "--record", "/nonexistent", "--output-dir", "/nonexistent"],
        ["verify", "--help"],
        ["verify", "--checks", "nope"],
        ["verify", "--arch", "nope"],
    ],  # fmt: skip
)
def test_help_and_usage_errors_import_no_model_library(argv) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=300
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("HEAVY"))
    assert line.startswith("HEAVY []"), line
    assert line.endswith(("CODE 0", "CODE 2")), line
