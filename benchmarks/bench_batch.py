"""Throughput of batched TEMPO generation: ``generate_batch`` vs ``B`` sequential ``generate``.

One run on the default model (SmolLM2-135M-Instruct, fast path): every prompt of a fixed
suite is generated alone with :func:`tempo_lens.generate` (timed per prompt), then the
first ``B`` prompts together with :func:`tempo_lens.generate_batch` for each ``B``. TEMPO
steps per second are summed over rows; the sequential rate for ``B`` is the first ``B``
prompts' steps over the sum of their single-generation times. By default every row runs
all steps; ``--stop-at-eos`` lets rows stop at EOS at different steps (finished rows leave
the batch). Rounds alternate the order of the sequential and batched parts; the reported
time is the median over rounds.

Every batched row is checked against its single generation (same token ids, indices,
decisions; the maximum probability difference is printed).

Usage::

    python benchmarks/bench_batch.py                        # threads pinned to 1
    python benchmarks/bench_batch.py --threads 2 --clock wall --json out.json

Only numbers from one run are comparable (the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from bench_decode import finish

PROMPTS = [
    "The cat sat on the",
    "Once upon a time, in a small village,",
    "The most important thing about learning a language is",
    "Photosynthesis is the process by which",
    "In 1969, the first humans",
    "My favourite recipe for a rainy day is",
    "The stock market fell sharply today because",
    "To install the package, first",
    "The old lighthouse keeper looked out at the sea and",
    "Water boils at a lower temperature at high altitude because",
    "Dear hiring manager, I am writing to",
    "The best way to learn programming is",
    "After the storm, the streets were",
    "Scientists have discovered a new species of",
    "The meeting was postponed because",
    "In the middle of the night, she heard",
]
TARGET_B8 = 3.0


def _max_prob_diff(a, b) -> float:
    """Token ids, indices and decisions must match; returns max |Δp| over candidates/scores."""
    assert a.state.token_ids == b.state.token_ids, "batched row differs from generate()"
    assert a.state.pruned_at == b.state.pruned_at
    worst = 0.0
    for sa, sb in zip(a.steps, b.steps, strict=True):
        assert sa.indices == sb.indices
        assert [c.token_id for c in sa.candidates] == [c.token_id for c in sb.candidates]
        for ca, cb in zip(sa.candidates, sb.candidates, strict=True):
            worst = max(worst, abs(ca.probability - cb.probability))
    return worst


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--steps", type=int, default=16, help="TEMPO steps per sequence")
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument(
        "--stop-at-eos",
        action="store_true",
        help="let rows stop at EOS (ragged stops; default: every row runs all steps)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (pinned; default 1)")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--device", default=None, help="e.g. cuda (default: the model's default)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock: Callable[[], float] = time.process_time if args.clock == "cpu" else time.perf_counter
    sizes = sorted(args.batch_sizes)
    if max(sizes) > len(PROMPTS):
        raise SystemExit(f"at most {len(PROMPTS)} rows (prompts in the suite)")

    import tempo_lens
    from tempo_lens.backends.fast import enable_fast_path

    model = tempo_lens.load_model(**({"device": args.device} if args.device else {}))
    enable_fast_path(model)
    config = tempo_lens.TempoConfig(
        selection_threshold=args.tau, max_steps=args.steps, stop_at_eos=args.stop_at_eos
    )
    sync = torch.cuda.synchronize if str(model.cfg.device).startswith("cuda") else (lambda: None)
    tempo_lens.generate(model, PROMPTS[0], config, max_steps=2)  # warm-up

    def timed(fn):
        sync()
        t0 = clock()
        out = fn()
        sync()
        return out, clock() - t0

    single_s: dict[int, list[float]] = {i: [] for i in range(max(sizes))}
    batch_s: dict[int, list[float]] = {b: [] for b in sizes}
    singles: dict[int, object] = {}
    batches: dict[int, list] = {}
    for r in range(args.rounds):

        def sequential() -> None:
            for i in range(max(sizes)):
                singles[i], dt = timed(lambda i=i: tempo_lens.generate(model, PROMPTS[i], config))
                single_s[i].append(dt)

        def batched() -> None:
            for b in sizes:
                batches[b], dt = timed(
                    lambda b=b: tempo_lens.generate_batch(model, PROMPTS[:b], config)
                )
                batch_s[b].append(dt)

        for part in (sequential, batched) if r % 2 == 0 else (batched, sequential):
            part()

    steps = {i: len(singles[i].steps) for i in singles}  # type: ignore[attr-defined]
    max_diff = max(
        _max_prob_diff(row, singles[i]) for b in sizes for i, row in enumerate(batches[b])
    )
    curve = {}
    for b in sizes:
        n_steps = sum(steps[i] for i in range(b))
        seq_time = sum(statistics.median(single_s[i]) for i in range(b))
        bat_time = statistics.median(batch_s[b])
        curve[b] = {
            "row_steps": n_steps,
            "batched_s": bat_time,
            "sequential_s": seq_time,
            "batched_steps_per_s": n_steps / bat_time,
            "sequential_steps_per_s": n_steps / seq_time,
            "speedup": seq_time / bat_time,
        }
    result = {
        "model": tempo_lens.DEFAULT_MODEL,
        "device": str(model.cfg.device),
        "threads": args.threads,
        "clock": args.clock,
        "rounds": args.rounds,
        "tau": args.tau,
        "steps": args.steps,
        "stop_at_eos": args.stop_at_eos,
        "max_prob_diff_batched_vs_single": max_diff,
        "curve": curve,
        "target_speedup_b8": TARGET_B8,
    }
    return finish(result, args.json, _print)


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=(
            f"TEMPO steps/s summed over rows ({result['device']}, threads={result['threads']}, "
            f"clock={result['clock']}, tau={result['tau']}, {result['steps']} steps, "
            f"stop at EOS: {result['stop_at_eos']})"
        )
    )
    for col in ["B", "row steps", "batched s", "sequential s", "batched /s", "seq. /s", "speedup"]:
        t.add_column(col, justify="right")
    for b, c in result["curve"].items():
        mark = ""
        if int(b) == 8:
            mark = " ok" if c["speedup"] >= TARGET_B8 else " MISSED"
        t.add_row(
            str(b),
            str(c["row_steps"]),
            f"{c['batched_s']:.1f}",
            f"{c['sequential_s']:.1f}",
            f"{c['batched_steps_per_s']:.1f}",
            f"{c['sequential_steps_per_s']:.1f}",
            f"{c['speedup']:.2f}{mark}",
        )
    console = Console(width=140)
    console.print(t)
    console.print(
        f"max |p_batched - p_single| over all rows: {result['max_prob_diff_batched_vs_single']:.2e}"
        f"; target speedup at B=8 >= {TARGET_B8}"
    )


if __name__ == "__main__":
    main()
