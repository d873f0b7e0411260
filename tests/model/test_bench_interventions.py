"""The intervention benchmark runs (tiny model) and reports every experiment's forward ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_interventions_tiny_reports_each_case(tmp_path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_interventions.py"), "--tiny",
           "--steps", "4", "--json", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=600)
    got = json.loads(out.read_text())
    cases = {c["case"]: c for c in got["cases"]}
    assert set(cases) >= {"head_ablation zero", "head_ablation mean", "layer_intervention",
                          "isolation_patching +paths", "partial_isolation", "pruning_layers"}  # fmt: skip
    for c in cases.values():
        assert (
            0 < c["forward_s"] <= c["wall_s"] and c["ratio"] >= 1.0 and c["rows_per_forward"] >= 1
        )
    # the heads of a layer share a forward: more than one row per block call
    assert cases["head_ablation zero"]["rows_per_forward"] > 1.5
