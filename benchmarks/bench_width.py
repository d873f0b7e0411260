"""Width-k step overhead: a TEMPO step of k tokens vs Hugging Face forwarding the same k tokens.

The ratio that isolates TEMPO's own cost is *TEMPO width-k step ÷ Hugging Face forward of
the same k tokens at the same context*: both models get a KV cache holding ``ctx`` tokens
and forward one parallel set of ``k`` new tokens. Hugging Face (``LlamaForCausalLM``,
``sdpa``, the same weights) is given what the TEMPO hooks compute — explicit
``position_ids`` (all k members at one logical position) and an explicit 4-D mask
(isolated siblings) — exactly as the oracle in ``tests/model/hf_oracle.py`` does; the
benchmark first checks that both produce the same logits.

Cases, interleaved round by round in one process (alternating order against drift), with
warm-up rounds and medians of process CPU time (``--clock wall`` for wall time):

* ``hf``        — Hugging Face ``sdpa`` attention, explicit positions + 4-D mask, KV cache;
* ``hf eager``  — the same with ``eager`` attention (the oracle's configuration);
* ``tl``        — the same ``HookedTransformer`` (fast path) *without* TEMPO hooks
  (TransformerLens' own cost);
* ``tempo``     — ``HookedTransformer`` (fast path) with the TEMPO hooks attached.

``tempo/tl`` is what the TEMPO hooks add to TransformerLens' own step; ``hook work`` times
the hooks alone (all layers, called directly on tensors of the forward's shapes), which
resolves differences far below the run-to-run noise of whole steps on a shared machine.

The context is either a plain prompt (``--context-kind prompt``: every context token has
logical == physical position, as after a prompt) or a generated TEMPO context
(``generated``, the default: half the context is earlier parallel sets of width 2, so
every later key is re-rotated, as in a real generation).

Usage::

    python benchmarks/bench_width.py                      # threads pinned to 1
    python benchmarks/bench_width.py --threads 2 --repeats 15 --json out.json

Only ratios measured in the same run are meaningful (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from bench_decode import Case, finish

TARGET = 1.15


CLOCK: Callable[[], float] = time.process_time


def _clock() -> float:
    """The clock chosen by ``--clock`` (read at call time)."""
    return CLOCK()


def build_state(tokens: list[int], ctx: int, k: int, kind: str):
    """A state with ``ctx`` context tokens and then one isolated set of ``k`` members."""
    from tempo_lens import SequenceState

    if kind == "prompt":
        state = SequenceState(tokens[:ctx], isolate=True)
    else:  # half prompt, then sets of width 2 (every later key has a non-zero shift)
        prompt_len = ctx // 2
        state = SequenceState(tokens[:prompt_len], isolate=True)
        i = prompt_len
        while i < ctx:
            width = min(2, ctx - i)
            state.append_set(tokens[i : i + width])
            i += width
    state.append_set(tokens[ctx : ctx + k])
    return state


def hf_case(hf, state, ctx: int, label: str) -> tuple[Case, torch.Tensor]:
    from transformers import DynamicCache

    ids = state.tokens_tensor()
    dtype = next(hf.parameters()).dtype
    allowed_all = state.visibility()
    full_mask = torch.zeros(allowed_all.shape, dtype=dtype).masked_fill(~allowed_all, float("-inf"))
    positions = torch.tensor([state.logical], dtype=torch.long)
    past = DynamicCache(config=hf.config)
    k = len(state) - ctx
    with torch.inference_mode():
        hf(
            ids[:, :ctx],
            position_ids=positions[:, :ctx],
            attention_mask=full_mask[None, None, :ctx, :ctx],
            cache=past,
            use_cache=True,
        )
    new, new_pos, mask = ids[:, ctx:], positions[:, ctx:], full_mask[None, None, ctx:, :]

    def step() -> torch.Tensor:
        with torch.inference_mode():
            out = hf(
                new, position_ids=new_pos, attention_mask=mask, cache=past, use_cache=True
            ).logits
        past.crop(-k)
        return out

    return Case(f"{label} k={k} ctx={ctx}", step, clock=_clock), step()


def tl_case(model, state, ctx: int, *, hooks: bool) -> tuple[Case, torch.Tensor]:
    from tempo_lens import attach
    from tempo_lens.backends import make_kv_cache, truncate_kv_cache

    cache = make_kv_cache(model)
    ids = state.tokens_tensor()
    # the context as the state had it before the last set was appended
    with torch.inference_mode():
        prefix = ids[:, :ctx]
        if hooks:
            from tempo_lens import SequenceState

            prefix_state = SequenceState(state.token_ids[: state.prompt_length], isolate=True)
            for s in state.set_indices[:-1]:
                prefix_state.append_set([state.token_ids[i] for i in s])
            with attach(model, prefix_state):
                model(prefix, past_kv_cache=cache, attention_mask=torch.ones_like(prefix))
        else:
            model(prefix, past_kv_cache=cache, attention_mask=torch.ones_like(prefix))
    new = ids[:, ctx:]
    k = new.shape[1]

    def step() -> torch.Tensor:
        with torch.inference_mode():
            out = model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))
        truncate_kv_cache(cache, ctx)
        return out

    around = (lambda: attach(model, state)) if hooks else None
    name = f"{'tempo' if hooks else 'tl'} k={k} ctx={ctx}"
    case = Case(name, step, around=around, clock=_clock)
    if around is not None:
        with around():
            first = step()
    else:
        first = step()
    return case, first


def hook_work_ms(model, state, repeats: int) -> float:
    """Median CPU ms of the TEMPO hooks of one forward, called directly on tensors of the
    forward's shapes (every layer's ``hook_rot_q``, ``hook_rot_k``, ``hook_attn_scores``),
    with the per-forward tables rebuilt as in generation (the state changes every step).
    Far less noisy than the difference of two whole-step timings."""
    from types import SimpleNamespace

    from tempo_lens import TempoHooks

    cfg = model.cfg
    n, k = len(state), len(state.set_indices[-1])
    n_kv = cfg.n_key_value_heads or cfg.n_heads
    q = torch.randn(1, k, cfg.n_heads, cfg.d_head)
    keys = torch.randn(1, n, n_kv, cfg.d_head)
    scores = torch.randn(1, cfg.n_heads, k, n)
    hooks = TempoHooks(model, state)
    names = [
        [SimpleNamespace(name=f"blocks.{layer}.attn.hook_{h}") for h in ("rot_q", "rot_k")]
        + [SimpleNamespace(name=f"blocks.{layer}.attn.hook_attn_scores")]
        for layer in range(cfg.n_layers)
    ]
    times = []
    for _ in range(repeats):
        state.version += 1  # a new step: tables and mask are rebuilt
        t0 = CLOCK()
        for hq, hk, hs in names:
            hooks._hook_rot_q(q, hq)
            hooks._hook_rot_k(keys, hk)
            hooks._hook_scores(scores, hs)
        times.append((CLOCK() - t0) * 1e3)
    return statistics.median(times)


def run_interleaved(cases: list[Case], warmup: int, repeats: int) -> None:
    for r in range(warmup + repeats):
        order = cases if r % 2 == 0 else cases[::-1]
        for case in order:
            case.run(record=r >= warmup)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (pinned; default 1)")
    p.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU core")
    p.add_argument("--contexts", type=int, nargs="+", default=[128, 512])
    p.add_argument("--widths", type=int, nargs="+", default=[1, 8])
    p.add_argument("--context-kind", choices=["prompt", "generated"], default="generated")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: process CPU time (robust to a shared machine; default); wall: perf_counter",
    )
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    import tempo_lens
    from tempo_lens.backends.fast import enable_fast_path
    from tempo_lens.models.gguf_loader import load_hf_model

    model = tempo_lens.load_model()
    enable_fast_path(model)
    hf, _ = load_hf_model(attn_implementation="sdpa")
    hf_eager, _ = load_hf_model(attn_implementation="eager")
    gen = torch.Generator().manual_seed(0)
    n_tok = max(args.contexts) + max(args.widths)
    tokens = torch.randint(0, model.cfg.d_vocab, (n_tok,), generator=gen).tolist()

    cases: list[Case] = []
    max_diff = 0.0
    for ctx in args.contexts:
        for k in args.widths:
            state = build_state(tokens, ctx, k, args.context_kind)
            hf_c, hf_out = hf_case(hf, state, ctx, "hf")
            he_c, he_out = hf_case(hf_eager, state, ctx, "hf_eager")
            tl_c, _ = tl_case(model, state, ctx, hooks=False)
            te_c, te_out = tl_case(model, state, ctx, hooks=True)
            for ref in (hf_out, he_out):
                max_diff = max(max_diff, float((ref - te_out).abs().max()))
            cases += [hf_c, he_c, tl_c, te_c]
    run_interleaved(cases, args.warmup, args.repeats)
    rows = {c.name: c.median for c in cases}
    hook_ms = {
        f"k={k} ctx={ctx}": hook_work_ms(
            model, build_state(tokens, ctx, k, args.context_kind), 4 * args.repeats
        )
        for ctx in args.contexts
        for k in args.widths
    }
    ratios: dict[str, float] = {}
    for ctx in args.contexts:
        for k in args.widths:
            key = f"k={k} ctx={ctx}"
            ratios[f"tempo/hf {key}"] = rows[f"tempo {key}"] / rows[f"hf {key}"]
            ratios[f"tempo/hf_eager {key}"] = rows[f"tempo {key}"] / rows[f"hf_eager {key}"]
            ratios[f"tl/hf {key}"] = rows[f"tl {key}"] / rows[f"hf {key}"]
            ratios[f"tempo/tl {key}"] = rows[f"tempo {key}"] / rows[f"tl {key}"]
    result = {
        "threads": args.threads,
        "context_kind": args.context_kind,
        "clock": args.clock,
        "repeats": args.repeats,
        "max_abs_logit_diff_tempo_vs_hf": max_diff,
        "median_ms": rows,
        "hook_work_ms_per_forward": hook_ms,
        "ratios": ratios,
        "target_tempo/hf": TARGET,
    }
    return finish(result, args.json, lambda r: _print(r, args))


def _print(result: dict, args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    t = Table(
        title=(
            f"width-k step, median ms of {result['repeats']} "
            f"(threads={result['threads']}, context={result['context_kind']}, "
            f"clock={result['clock']})"
        )
    )
    cols = ["k", "ctx", "hf sdpa", "hf eager", "tl", "tempo"]
    for col in cols + ["tempo/hf", "tempo/hf eager", "tl/hf", "tempo/tl", "hook work"]:
        t.add_column(col, justify="right")
    rows, ratios = result["median_ms"], result["ratios"]
    for ctx in args.contexts:
        for k in args.widths:
            key = f"k={k} ctx={ctx}"
            r = ratios[f"tempo/hf {key}"]
            mark = "ok" if r <= TARGET else "MISSED"
            t.add_row(
                str(k),
                str(ctx),
                f"{rows[f'hf {key}']:.1f}",
                f"{rows[f'hf_eager {key}']:.1f}",
                f"{rows[f'tl {key}']:.1f}",
                f"{rows[f'tempo {key}']:.1f}",
                f"{r:.2f} {mark}",
                f"{ratios[f'tempo/hf_eager {key}']:.2f}",
                f"{ratios[f'tl/hf {key}']:.2f}",
                f"{ratios[f'tempo/tl {key}']:.2f}",
                f"{result['hook_work_ms_per_forward'][key]:.2f} ms",
            )
    console.print(t)
    console.print(
        f"max |logits tempo - hf| over all cases: {result['max_abs_logit_diff_tempo_vs_hf']:.2e}"
        f"; target tempo/hf <= {TARGET}"
    )


if __name__ == "__main__":
    main()
