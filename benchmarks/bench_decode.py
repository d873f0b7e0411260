"""Decode-step benchmark: Hugging Face vs stock TransformerLens vs tempo_lens (fast path).

Side by side in one process, interleaved round by round (so machine load hits every case
alike), with warm-up rounds and medians:

* ``hf``         — ``LlamaForCausalLM`` (sdpa) greedy decode step: 1 new token, KV cache;
  ``hf k=8`` forwards 8 new tokens (the model's own cost of a wider step, for reference).
* ``stock``      — stock ``HookedTransformer`` decode step (KV cache, no fast path).
* ``tempo w=k``  — tempo_lens step: fast path on, KV cache, TEMPO hooks attached via
  :func:`tempo_lens.attach` on a :class:`~tempo_lens.SequenceState` whose last set has
  ``k`` members (the ``k`` new tokens are forwarded, the cache holds the context).
* ``load``       — a fresh ``python`` process: import, cached ``load_model()``, first logits.
* ``generate``   — :func:`tempo_lens.generate` with and without full attention capture
  (:class:`tempo_lens.hooks.capture.AttentionCapture`, all layers and heads), each in its own
  process: time and peak RSS.

Usage::

    python benchmarks/bench_decode.py                 # full run (~2 min on 2 cores)
    python benchmarks/bench_decode.py --quick         # ~1 min
    python benchmarks/bench_decode.py --json out.json --threads 1

Targets (ratios written to ``--json``): width1/HF <= 1.5 at 128 and 512, width8/width1
<= 1.25, capture/no-capture <= 1.3. Timings on shared machines are noisy; only compare
numbers from one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

TARGETS = {"width1/hf": 1.5, "width8/width1": 1.25, "capture/no_capture": 1.3}


@dataclass
class Case:
    """One timed case: ``step()`` runs one decode step; ``around`` wraps it (hooks)."""

    name: str
    step: Callable[[], object]
    around: Callable[[], object] | None = None
    times_ms: list[float] = field(default_factory=list)
    clock: Callable[[], float] = time.perf_counter  # seconds; bench_width passes CPU time

    def run(self, record: bool) -> None:
        ctx = self.around() if self.around is not None else None
        if ctx is not None:
            ctx.__enter__()
        try:
            t0 = self.clock()
            self.step()
            dt = (self.clock() - t0) * 1e3
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
        if record:
            self.times_ms.append(dt)

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)


# ---------------------------------------------------------------------------- cases
def hf_case(hf, tokens: torch.Tensor, ctx: int, k: int = 1) -> Case:
    """``k`` new tokens through HF's KV cache (``k > 1``: the model's own cost of width)."""
    with torch.inference_mode():
        past = hf(tokens[:, :ctx], use_cache=True).past_key_values
    new = tokens[:, ctx : ctx + k]

    def step() -> object:
        with torch.inference_mode():
            out = hf(new, past_key_values=past, use_cache=True).logits
        past.crop(-k)  # back to ``ctx`` cached tokens
        return out

    return Case(f"hf ctx={ctx}" if k == 1 else f"hf k={k} ctx={ctx}", step)


def tl_case(model, tokens: torch.Tensor, ctx: int, name: str) -> Case:
    from tempo_lens.backends import make_kv_cache, truncate_kv_cache

    cache = make_kv_cache(model)
    prefix, new = tokens[:, :ctx], tokens[:, ctx : ctx + 1]
    with torch.inference_mode():
        model(prefix, past_kv_cache=cache, attention_mask=torch.ones_like(prefix))

    def step() -> object:
        with torch.inference_mode():
            out = model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))
        truncate_kv_cache(cache, ctx)
        return out

    return Case(f"{name} ctx={ctx}", step)


def tempo_case(model, tokens: torch.Tensor, ctx: int, width: int) -> Case:
    """Context of ``ctx`` tokens in the KV cache, then one parallel set of ``width``."""
    from tempo_lens import SequenceState, attach
    from tempo_lens.backends import make_kv_cache, truncate_kv_cache

    state = SequenceState(tokens[0, :ctx].tolist(), isolate=True)
    cache = make_kv_cache(model)
    with attach(model, state), torch.inference_mode():
        prefix = state.tokens_tensor()
        model(prefix, past_kv_cache=cache, attention_mask=torch.ones_like(prefix))
    state.append_set(tokens[0, ctx : ctx + width].tolist())
    new = state.tokens_tensor()[:, ctx:]

    def step() -> object:
        with torch.inference_mode():
            out = model(new, past_kv_cache=cache, attention_mask=torch.ones_like(new))
        truncate_kv_cache(cache, ctx)
        return out

    return Case(f"tempo w={width} ctx={ctx}", step, around=lambda: attach(model, state))


def run_interleaved(cases: list[Case], warmup: int, repeats: int) -> None:
    for r in range(warmup + repeats):
        order = cases if r % 2 == 0 else cases[::-1]  # alternate order against drift
        for case in order:
            case.run(record=r >= warmup)


# ---------------------------------------------------------------------------- subprocesses
_LOAD_SNIPPET = """
import time, torch
t0 = time.perf_counter()
import tempo_lens
torch.set_num_threads({threads})
m = tempo_lens.load_model()
with torch.inference_mode():
    m(m.to_tokens("Hello"))
print(time.perf_counter() - t0)
"""

_GEN_SNIPPET = """
import json, statistics, time, torch
import tempo_lens
from tempo_lens.hooks.capture import AttentionCapture
from tempo_lens.backends.fast import enable_fast_path
torch.set_num_threads({threads})
m = tempo_lens.load_model()
enable_fast_path(m)  # once per model; generate() then finds it on
cfg = tempo_lens.TempoConfig(selection_threshold={tau}, max_steps={steps}, stop_at_eos=False)
prompt = "The history of the city begins"
tempo_lens.generate(m, prompt, cfg, max_steps=2)  # warm-up

def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

out = dict(no_capture=[], capture=[])
for r in range({rounds}):
    for name in (["no_capture", "capture"] if r % 2 == 0 else ["capture", "no_capture"]):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS high-water mark (Linux)
        base = status_kb("VmRSS")
        obs = [AttentionCapture()] if name == "capture" else []
        t0 = time.perf_counter()
        trace = tempo_lens.generate(m, prompt, cfg, observers=obs)
        dt = time.perf_counter() - t0
        out[name].append(dict(seconds=dt, tokens=len(trace.tokens),
                              extra_peak_mb=(status_kb("VmHWM") - base) / 1024))
        del trace, obs
summary = dict()
for name, runs in out.items():
    summary[name] = dict(seconds=statistics.median(r["seconds"] for r in runs),
                         tokens=runs[0]["tokens"],
                         extra_peak_mb=max(r["extra_peak_mb"] for r in runs))
print(json.dumps(summary))
"""


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def load_time(threads: int) -> float:
    return float(_python(_LOAD_SNIPPET.format(threads=threads)))


def generation(threads: int, steps: int, rounds: int) -> dict:
    """Median time and peak extra RSS of generate() without / with full attention capture."""
    code = _GEN_SNIPPET.format(threads=threads, steps=steps, tau=0.1, rounds=rounds)
    return json.loads(_python(code))


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats, context 128 only")
    p.add_argument("--json", metavar="PATH", help="write timings and ratios as JSON")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--contexts", type=int, nargs="+", default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--gen-steps", type=int, default=None)
    p.add_argument("--skip-subprocess", action="store_true", help="no load/generate runs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    contexts = args.contexts or ([128] if args.quick else [128, 512])
    repeats = args.repeats or (5 if args.quick else 9)
    warmup = 2
    widths = [1, 2, 4, 8]

    import tempo_lens
    from tempo_lens.backends.fast import enable_fast_path
    from tempo_lens.models.gguf_loader import load_hf_model

    stock = tempo_lens.load_model()
    fast = copy.deepcopy(stock)
    enable_fast_path(fast)
    hf, _ = load_hf_model(attn_implementation="sdpa")
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, stock.cfg.d_vocab, (1, max(contexts) + max(widths)), generator=gen)

    cases: list[Case] = []
    for ctx in contexts:
        cases += [hf_case(hf, tokens, ctx), hf_case(hf, tokens, ctx, k=8)]
        cases += [tempo_case(fast, tokens, ctx, w) for w in widths]
    stock_case = tl_case(stock, tokens, contexts[0], "stock")  # ~5x slower: fewer repeats
    run_interleaved(cases, warmup, repeats)
    run_interleaved([stock_case], 1, max(3, repeats // 3))
    cases.insert(1, stock_case)

    rows = {c.name: c.median for c in cases}
    ratios: dict[str, float] = {}
    for ctx in contexts:
        ratios[f"width1/hf@{ctx}"] = rows[f"tempo w=1 ctx={ctx}"] / rows[f"hf ctx={ctx}"]
        ratios[f"width8/width1@{ctx}"] = rows[f"tempo w=8 ctx={ctx}"] / rows[f"tempo w=1 ctx={ctx}"]
        # reference: what 8 tokens instead of 1 cost Hugging Face itself
        ratios[f"hf_k8/hf_k1@{ctx}"] = rows[f"hf k=8 ctx={ctx}"] / rows[f"hf ctx={ctx}"]
    ratios[f"stock/hf@{contexts[0]}"] = (
        rows[f"stock ctx={contexts[0]}"] / rows[f"hf ctx={contexts[0]}"]
    )
    extra: dict[str, object] = {}
    if not args.skip_subprocess:
        extra["load_to_first_logits_s"] = load_time(args.threads)
        # ---- generation with / without full attention capture (time, peak memory) ----
        steps = args.gen_steps or (8 if args.quick else 24)
        gen_runs = generation(args.threads, steps, rounds=2 if args.quick else 4)
        extra["generate"] = gen_runs
        plain, captured = gen_runs["no_capture"], gen_runs["capture"]
        ratios["capture/no_capture"] = captured["seconds"] / plain["seconds"]
        ratios["capture-no_capture_extra_peak_mb"] = (
            captured["extra_peak_mb"] - plain["extra_peak_mb"]
        )
    result = {
        "threads": args.threads,
        "repeats": repeats,
        "median_ms": rows,
        "ratios": ratios,
        "targets": TARGETS,
        **extra,
    }
    return finish(result, args.json, _print)


def finish(result: dict, json_path: str | None, show: Callable[[dict], None]) -> dict:
    """The end of every benchmark: ``show(result)``, write it to ``json_path`` if given."""
    show(result)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return result


def _print(result: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print(json.dumps(result, indent=2))
        return
    console = Console()
    t = Table(title=f"decode step, median of {result['repeats']} (threads={result['threads']})")
    t.add_column("case")
    t.add_column("ms", justify="right")
    for name, ms in result["median_ms"].items():
        t.add_row(name, f"{ms:.1f}")
    console.print(t)
    r = Table(title="ratios")
    r.add_column("ratio")
    r.add_column("value", justify="right")
    r.add_column("target", justify="right")
    for name, value in result["ratios"].items():
        target = TARGETS.get(name.split("@")[0])
        mark = "" if target is None else ("ok" if value <= target else "MISSED")
        r.add_row(name, f"{value:.2f}", f"<= {target} {mark}" if target else "")
    console.print(r)
    if "load_to_first_logits_s" in result:
        console.print(f"cached load to first logits: {result['load_to_first_logits_s']:.1f} s")
    for k, v in result.get("generate", {}).items():
        console.print(
            f"generate {k}: {v['seconds']:.2f} s (median) for {v['tokens']} tokens, "
            f"peak RSS +{v['extra_peak_mb']:.0f} MB over the pre-generate RSS"
        )


if __name__ == "__main__":
    main()
