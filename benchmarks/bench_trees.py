"""Token-tree decoders against their one-path references, on the prompt suite.

For one prompt of each category of the packaged suite (``tempo_lens/prompts/suite.csv``):

* ``greedy`` vs ``tree_speculative`` (n-gram draft trees, defaults ``max_ngram=3``,
  ``branches=4``, ``depth=5``): the outputs must be equal token for token (checked; the run
  stops at the first difference); reported: tokens, accepted tokens per verification
  forward, forwards per token, wall seconds of each;
* ``beam_search`` vs ``tree_beam_search`` (``--beams`` beams, ``--beam-steps`` steps) on the
  first ``--beam-prompts`` prompts: outputs must be equal; wall seconds of each.

The two decoders of a pair run back to back, alternating which goes first, so machine load
hits both alike. Timings on a shared machine are noisy; only compare numbers from one run.

``--fast`` stores the weights in compute layout for every decoder alike
(:func:`tempo_lens.enable_fast_path`, bit-identical logits): a stock ``HookedTransformer``
copies its weights on every forward, a fixed cost per forward that flatters any decoder
making fewer forwards.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_trees.py --json out.json      # ~4 min on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/bench_trees.py --fast --json out.json
    OMP_NUM_THREADS=1 python benchmarks/bench_trees.py --tiny               # smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import tempo_lens as tl
from tempo_lens.prompts import packaged_prompts


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def one_per_category() -> list[tuple[str, str]]:
    """``(id, text)`` of the first prompt of each category of the suite."""
    seen: dict[str, tuple[str, str]] = {}
    for p in packaged_prompts("suite.csv"):
        seen.setdefault(p.id.rsplit("_", 1)[0], (p.id, p.text))
    return list(seen.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--beam-steps", type=int, default=20)
    p.add_argument("--beam-prompts", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    p.add_argument(
        "--fast",
        action="store_true",
        help="weights in compute layout for every decoder (tempo_lens.fast_weights: "
        "bit-identical, removes the per-forward weight copies of a stock HookedTransformer)",
    )
    p.add_argument("--json", default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tiny:
        model = tl.make_tiny_model()
        prompts = [("tiny_repeat", [5, 6, 7, 5, 6, 7, 5, 6]), ("tiny_plain", [1, 2, 3])]
    else:
        model = tl.load_model()
        prompts = one_per_category()  # type: ignore[assignment]
    if args.fast:
        tl.enable_fast_path(model)
    rows = []
    for k, (pid, prompt) in enumerate(prompts):
        runs = {
            "greedy": lambda p=prompt: tl.greedy(model, p, max_steps=args.max_steps),
            "tree": lambda p=prompt: tl.tree_speculative(model, p, max_steps=args.max_steps),
        }
        order = list(runs) if k % 2 == 0 else list(reversed(runs))
        got = {name: _timed(runs[name]) for name in order}
        (g, g_s), (t, t_s) = got["greedy"], got["tree"]
        if t.token_ids != g.clean_ids():
            raise SystemExit(f"{pid}: tree speculative decoding differs from greedy")
        rows.append(
            {
                "prompt": pid,
                "tokens": len(t.token_ids),
                "accepted_per_forward": t.accepted_per_forward,
                "forwards_per_token": t.forwards_per_token if t.token_ids else None,
                "greedy_s": g_s,
                "tree_s": t_s,
            }
        )
        print(
            f"{pid:24s} tokens={len(t.token_ids):3d} accepted/forward={t.accepted_per_forward:.2f}"
            f" greedy={g_s:.2f}s tree={t_s:.2f}s",
            flush=True,
        )
    beams = []
    for pid, prompt in prompts[: args.beam_prompts]:
        kw = {"max_steps": args.beam_steps, "num_beams": args.beams}
        b, b_s = _timed(lambda p=prompt, kw=kw: tl.beam_search(model, p, **kw))
        t, t_s = _timed(lambda p=prompt, kw=kw: tl.tree_beam_search(model, p, **kw))
        if t.token_ids != b.clean_ids():
            raise SystemExit(f"{pid}: tree beam search differs from beam_search")
        beams.append({"prompt": pid, "beam_s": b_s, "tree_s": t_s, "forwards": t.n_forwards})
        print(f"{pid:24s} beam k={args.beams}: beam_search={b_s:.2f}s tree={t_s:.2f}s", flush=True)
    made = [r for r in rows if r["tokens"]]
    summary = {
        "prompts": len(rows),
        "prompts_with_output": len(made),
        "mean_accepted_per_forward": statistics.mean(r["accepted_per_forward"] for r in made),
        "mean_forwards_per_token": statistics.mean(r["forwards_per_token"] for r in made),
        "greedy_s": sum(r["greedy_s"] for r in rows),
        "tree_s": sum(r["tree_s"] for r in rows),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"fast_weights": args.fast, "summary": summary, "speculative": rows, "beam": beams},
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
