"""The token-tree benchmark runs (tiny model), checks equality and reports each figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_trees_tiny_reports_each_figure(tmp_path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_trees.py"), "--tiny",
           "--max-steps", "12", "--beam-steps", "6", "--json", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=600)
    got = json.loads(out.read_text())
    assert got["summary"]["prompts_with_output"] == 2
    assert all(r["tokens"] == 12 and r["accepted_per_forward"] >= 1 for r in got["speculative"])
    assert [b["forwards"] for b in got["beam"]] == [6, 6]
