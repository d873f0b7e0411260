"""Time to first logits of the default model in a fresh Python process.

Each measurement spawns a new interpreter that imports tempo_lens, loads the default model
(``load_default_model``) and runs one forward pass. If the cache is cold, the first run
converts the GGUF file (reported as ``first_load``) and later runs measure the cached load.

Usage::

    python benchmarks/bench_load.py [--cache-dir DIR] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from tempo_lens.models import gguf_loader as gl
t1 = time.perf_counter()
cache_dir = sys.argv[1] or None
path, fields = gl._cache_dir_for(gl.DEFAULT_MODEL, torch.float32, cache_dir)
cold = not gl.is_valid_cache(path, fields)
model = gl.load_default_model(cache_dir=cache_dir)
t2 = time.perf_counter()
with torch.no_grad():
    logits = model(model.to_tokens("The cat sat on the"))
t3 = time.perf_counter()
print(json.dumps({"cold": cold, "import_s": t1 - t0, "load_s": t2 - t1, "forward_s": t3 - t2,
                  "top_token": model.to_string(logits[0, -1].argmax()), "cache": str(path)}))
"""


def run_child(cache_dir: str | None) -> dict:
    """Run one fresh process; return its timings plus the wall time to first logits."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, cache_dir or ""],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    wall = time.perf_counter() - start
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help="cache root (default: user cache)")
    parser.add_argument("--repeat", type=int, default=3, help="cached-load measurements")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)

    report: dict = {"python": platform.python_version(), "cpus": os.cpu_count()}
    if hasattr(os, "getloadavg"):
        report["loadavg_before"] = os.getloadavg()
    first = run_child(args.cache_dir)
    runs = []
    if first["cold"]:
        report["first_load"] = first
        print(f"first load (conversion): {first['wall_s']:.1f} s wall")
    else:
        runs.append(first)
    while len(runs) < args.repeat:
        runs.append(run_child(args.cache_dir))
    walls = [r["wall_s"] for r in runs]
    report["cached_runs"] = runs
    report["cached_wall_s_median"] = statistics.median(walls)
    for r in runs:
        print(
            f"cached: {r['wall_s']:.2f} s wall to first logits (import {r['import_s']:.2f}, "
            f"load {r['load_s']:.2f}, forward {r['forward_s']:.2f}); top {r['top_token']!r}"
        )
    print(f"median cached time to first logits: {report['cached_wall_s_median']:.2f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
