"""Where the intervention experiments' time goes: wall time against time in model forwards.

For one prompt, each intervention experiment's ``run_unit`` (head ablation zero and mean,
layer intervention, isolation patching with head-to-head path patching, partial isolation,
pruning layers) runs on the loaded model. Forward hooks on the model's top-level modules
(embedding, every block, final norm, unembedding) add up the seconds spent inside the model
and the rows each block call processed, so the report prints side by side, from one run:

* ``wall``: seconds of the whole unit (generation, replay, analysis);
* ``forward``: seconds inside the model's modules (TEMPO hooks included: they run there);
* ``ratio``: wall / forward (issue 22's goal: <= 1.3);
* ``rows/fwd``: mean batch rows per block call.

``--before REV`` also times the whole ``head_ablation`` (``--before-prompts`` prompts x
zero and mean) with the code of git revision ``REV`` and with this tree, each in a fresh
subprocess (import and model load included), alternating which goes first.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_interventions.py --steps 16
    OMP_NUM_THREADS=1 python benchmarks/bench_interventions.py --before 861eaeb --before-prompts 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import tempo_lens as tl
from tempo_lens.prompts import Prompt
from tempo_lens.runner import Unit

PROMPT = "The old lighthouse keeper climbed the stairs and"
ROOT = Path(__file__).resolve().parents[1]

# (label, experiment module, config overrides, condition)
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("head_ablation zero", "head_ablation", {"modes": ("zero",)}, {"ablation": "zero"}),
    ("head_ablation mean", "head_ablation", {"modes": ("mean",)}, {"ablation": "mean"}),
    ("layer_intervention", "layer_intervention", {}, {}),
    ("isolation_patching +paths", "isolation_patching", {"path_heads": ("L5H5", "L20H3")}, {}),
    ("partial_isolation", "partial_isolation", {}, {"layers": "late"}),
    ("pruning_layers", "pruning_layers", {}, None),
]


@contextmanager
def forward_timer(model: Any) -> Iterator[dict[str, float]]:
    """Seconds inside the model's top-level modules, and block calls / rows, while active."""
    acc = {"seconds": 0.0, "block_calls": 0, "rows": 0}
    mods = [getattr(model, n) for n in ("embed", "ln_final", "unembed") if hasattr(model, n)]
    blocks = list(model.blocks)
    start: dict[int, float] = {}

    def pre(mod: Any, args: Any) -> None:
        start[id(mod)] = time.perf_counter()

    def post(mod: Any, args: Any, out: Any) -> None:
        acc["seconds"] += time.perf_counter() - start.pop(id(mod))

    def rows(mod: Any, args: Any) -> None:
        acc["block_calls"] += 1
        x = args[0] if args else None
        acc["rows"] += int(x.shape[0]) if isinstance(x, torch.Tensor) else 0

    handles = [m.register_forward_pre_hook(pre) for m in mods + blocks]
    handles += [m.register_forward_hook(post) for m in mods + blocks]
    handles += [b.register_forward_pre_hook(rows) for b in blocks]
    try:
        yield acc
    finally:
        for h in handles:
            h.remove()


def time_cases(model: Any, steps: int, prompt: str) -> list[dict[str, Any]]:
    """Run each case's ``run_unit`` once on ``prompt`` and time it."""
    import importlib

    out = []
    for label, module, overrides, condition in CASES:
        mod = importlib.import_module(f"tempo_lens.experiments.{module}")
        cfg = mod.Config(max_steps=steps, **overrides)
        if condition is None:  # the experiment's own first condition
            condition = mod.SPEC.conditions(cfg)[0] if mod.SPEC.conditions else {}
        unit = Unit(Prompt(id="bench", text=prompt), condition)
        with forward_timer(model) as acc:
            t0 = time.perf_counter()
            mod.run_unit(cfg, model, unit)
            wall = time.perf_counter() - t0
        row = {
            "case": label,
            "wall_s": wall,
            "forward_s": acc["seconds"],
            "ratio": wall / acc["seconds"] if acc["seconds"] else float("nan"),
            "rows_per_forward": acc["rows"] / max(1, acc["block_calls"]),
        }
        print(
            f"{label:<27} wall {wall:7.1f} s  forward {acc['seconds']:7.1f} s  "
            f"ratio {row['ratio']:5.2f}  rows/fwd {row['rows_per_forward']:5.1f}",
            flush=True,
        )
        out.append(row)
    return out


def time_head_ablation(src: Path, n_prompts: int, steps: int, out_dir: Path, tiny: bool) -> float:
    """Wall seconds of ``head_ablation`` (zero and mean) from a fresh process on ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [
        sys.executable,
        "-m",
        "tempo_lens.experiments.head_ablation",
        "--prompts-file",  # the same prompts for both revisions: this tree's suite
        str(ROOT / "tempo_lens" / "prompts" / "suite.csv"),
        "--limit",
        str(n_prompts),
        "--max-steps",
        str(steps),
        "-q",
        "--output-dir",
        str(out_dir),
    ]
    if tiny:  # the tiny model's token-id prompts, not the suite's text
        cmd = [c for c in cmd if c != "--prompts-file"]
        cmd.remove(str(ROOT / "tempo_lens" / "prompts" / "suite.csv"))
        cmd.append("--tiny")
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=src)
    return time.perf_counter() - t0


def before_after(rev: str, n_prompts: int, steps: int, tiny: bool) -> dict[str, float]:
    """``head_ablation`` on ``n_prompts`` x 2 modes at ``rev`` and in this tree."""
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=ROOT, check=True)
        try:
            times: dict[str, float] = {}
            for name, src in (("before", old), ("after", ROOT)):
                times[name] = time_head_ablation(src, n_prompts, steps, Path(tmp) / name, tiny)
                print(f"head_ablation {n_prompts} prompts x 2 modes, {name}: {times[name]:.0f} s")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)
    times["speedup"] = times["before"] / times["after"]
    print(f"speed-up: {times['speedup']:.2f}x")
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    p.add_argument("--before", metavar="REV", help="also time head_ablation at git REV")
    p.add_argument("--before-prompts", type=int, default=8)
    p.add_argument("--json", default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = tl.make_tiny_model(n_layers=6) if args.tiny else tl.load_model()
    if args.tiny:
        CASES[3] = (CASES[3][0], CASES[3][1], {"path_heads": ("L1H0", "L3H1")}, {})
    result: dict[str, Any] = {
        "steps": args.steps,
        "threads": args.threads,
        "model": model.cfg.model_name,
        "cases": time_cases(model, args.steps, "3 14 15 9 26" if args.tiny else PROMPT),
    }
    if args.before:
        result["head_ablation"] = before_after(
            args.before, args.before_prompts, args.steps, args.tiny
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
