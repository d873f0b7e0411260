"""TEMPO step time on both backends, side by side in one run (the default model).

``HookedTransformer`` (fast weight layout on, as ``generate`` uses it) and
``TransformerBridge`` around the same offline SmolLM2-135M-Instruct weights, both loaded in
this process (TransformerLens 3.9 has both backends). Each round times one
:func:`tempo_lens.generate` of ``--steps`` steps per backend, alternating the order round
by round so machine load hits both alike; the report gives the median seconds per step
and the bridge/hooked ratio, and checks that both produced the same tokens.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_backends.py --rounds 5 --steps 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import tempo_lens as tl

PROMPT = "The old lighthouse keeper climbed the stairs and"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {"hooked": tl.load_model(), "bridge": tl.load_model(backend="bridge")}
    cfg = tl.TempoConfig(selection_threshold=0.1, max_steps=args.steps)
    times: dict[str, list[float]] = {k: [] for k in models}
    tokens = {}
    for name, model in models.items():  # warm-up
        tokens[name] = tl.generate(model, PROMPT, cfg).state.token_ids
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            t0 = time.perf_counter()
            trace = tl.generate(models[name], PROMPT, cfg)
            times[name].append((time.perf_counter() - t0) / max(1, len(trace.steps)))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "seconds_per_step": med,
        "bridge_over_hooked": med["bridge"] / med["hooked"],
        "same_tokens": tokens["hooked"] == tokens["bridge"],
    }
    for k, v in med.items():
        print(f"{k:>7}: {v * 1000:7.1f} ms/step (median of {args.rounds})")
    print(f"bridge / hooked: {out['bridge_over_hooked']:.2f}; same tokens: {out['same_tokens']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
