"""Batched generation (``generate_batch``) against single-sequence ``generate``, row by row.

Each row of a batch must produce the trace ``generate`` produces for that prompt alone:
the same tokens, indices, logical positions, selections, pruning decisions and stops, with
probabilities and pruning scores equal to float rounding (bound: 1e-5). Configurations are
drawn from a seeded grid covering thresholds, schedules, readouts, isolation, position
schemes, width caps, pre-filters, retroactive pruning, KV cache on/off, EOS and context
stops (rows stopping at different steps) and three model variants.
"""

from __future__ import annotations

import math
import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from tempo_lens import (
    AbsoluteRule,
    AttentionCapture,
    PositionScheme,
    ProbabilityRatioRule,
    PruningConfig,
    RelativeRule,
    TempoConfig,
    ThresholdSchedule,
    Trace,
    generate,
    generate_batch,
    make_tiny_model,
)

TOL = 1e-5
MODELS = {
    "mha": {},
    "gqa_partial": {"n_key_value_heads": 2, "rotary_dim": 8},
    "adjacent": {"rotary_adjacent_pairs": True, "n_layers": 3},
}
MAX_DIFF: dict[str, float] = {}  # measured maximum probability difference, per test


def compare(batch: Trace, single: Trace) -> float:
    """Assert equality of everything but floats; floats to ``TOL``. Returns the max diff."""
    worst = 0.0

    def walk(x: Any, y: Any, path: str) -> None:
        nonlocal worst
        if isinstance(x, float) or isinstance(y, float):
            assert x is not None and y is not None, path
            diff = abs(x - y)
            worst = max(worst, diff)
            assert diff <= TOL or math.isclose(x, y, rel_tol=TOL), f"{path}: {x} vs {y}"
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), path
            for k in x:
                walk(x[k], y[k], f"{path}.{k}")
        elif isinstance(x, list):
            assert len(x) == len(y), f"{path}: {len(x)} vs {len(y)}"
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                walk(u, v, f"{path}[{i}]")
        else:
            assert x == y, f"{path}: {x!r} vs {y!r}"

    walk(batch.to_dict(), single.to_dict(), "trace")
    return worst


def random_config(rng: random.Random) -> TempoConfig:
    prune = None
    if rng.random() < 0.6:
        rule = (
            RelativeRule(ratio=rng.choice([0.3, 0.6, 0.9]))
            if rng.random() < 0.7
            else AbsoluteRule(threshold=rng.choice([0.01, 0.05]))
        )
        prune = PruningConfig(
            rule=rule,
            lookahead=rng.choice([1, 1, 2, 3]),
            layers=rng.choice(["all", "late", [0]]),
            head_agg=rng.choice(["mean", "max"]),
            query_agg=rng.choice(["mean", "sum"]),
        )
    tau = rng.choice([0.02, 0.04, 0.08, 0.15])
    schedule = None
    if rng.random() < 0.3:
        schedule = ThresholdSchedule(
            kind=rng.choice(["linear", "exponential", "bezier"]), tau0=tau, tau_final=0.3
        )
    positions = rng.choice(
        [PositionScheme(), PositionScheme(member_offset=0.5), PositionScheme(kind="distinct")]
    )
    return TempoConfig(
        selection_threshold=tau,
        max_steps=rng.randint(3, 9),
        max_parallel=rng.choice([None, 1, 3, 8]),
        isolate=rng.random() < 0.7,
        positions=positions,
        readout=rng.choice(["last", "top", "mixture"]),
        schedule=schedule,
        prune=prune,
        prefilter=ProbabilityRatioRule(ratio=0.2) if rng.random() < 0.2 else None,
        use_kv_cache=rng.random() < 0.8,
        min_steps=rng.choice([0, 0, 2]),
    )


def _tokenizer(eos: int) -> SimpleNamespace:
    return SimpleNamespace(eos_token_id=eos, padding_side="right", decode=lambda ids: f"<{ids[0]}>")


@pytest.fixture(scope="module")
def models():
    return {name: make_tiny_model(**kw) for name, kw in MODELS.items()}


@pytest.mark.parametrize("seed", range(24))
def test_batch_rows_equal_single_generation(models, seed) -> None:
    rng = random.Random(seed)
    name = list(MODELS)[seed % len(MODELS)]
    model = models[name]
    config = random_config(rng)
    prompts = [
        [rng.randrange(64) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(2, 5))
    ]
    eos = rng.randrange(64) if seed % 3 == 0 else None  # EOS stops at different steps
    model.tokenizer = _tokenizer(eos) if eos is not None else None
    try:
        batch = generate_batch(model, prompts, config)
        singles = [generate(model, p, config) for p in prompts]
    finally:
        model.tokenizer = None
    worst = max(compare(b, s) for b, s in zip(batch, singles, strict=True))
    MAX_DIFF[f"seed{seed}"] = worst


def test_mixed_early_stops_and_pruning(models) -> None:
    """Rows stop for different reasons at different steps while others keep pruning."""
    model = make_tiny_model(n_ctx=24)
    config = TempoConfig(
        selection_threshold=0.03,
        max_steps=30,
        prune=PruningConfig(rule=RelativeRule(ratio=0.7)),
    )
    prompts = [[1, 2, 3], list(range(5, 19)), [7], list(range(20, 30))]
    sizes: list[int] = []
    handle = model.embed.register_forward_hook(lambda m, i, o: sizes.append(o.shape[0]))
    try:
        batch = generate_batch(model, prompts, config)
    finally:
        handle.remove()
    assert sizes[0] == 4 and sizes[-1] == 1  # finished rows leave the batch
    assert sizes == sorted(sizes, reverse=True)
    singles = [generate(model, p, config) for p in prompts]
    for b, s in zip(batch, singles, strict=True):
        MAX_DIFF["mixed"] = max(MAX_DIFF.get("mixed", 0.0), compare(b, s))
    lengths = {len(t.steps) for t in batch}
    assert len(lengths) > 1, "rows should stop at different steps"
    assert {t.stop_reason for t in batch} == {"context"}
    assert sum(t.summary()["pruned"] for t in batch) > 0
    assert max(max(t.widths()) for t in batch) > 1


def test_sliding_window_rows_equal_single() -> None:
    """Local-attention layers: the logical window per row, pads do not shift it."""
    model = make_tiny_model(window_size=4, init_scale=0.5)
    config = TempoConfig(
        selection_threshold=0.03, max_steps=8, prune=PruningConfig(rule=RelativeRule(ratio=0.9))
    )
    prompts = [[1, 2, 3, 4, 5, 6], [9, 8], [4, 4, 4, 4]]
    batch = generate_batch(model, prompts, config)
    assert len({len(t.tokens) for t in batch}) > 1  # ragged rows: pads in the batch
    for p, row in zip(prompts, batch, strict=True):
        MAX_DIFF["window"] = max(
            MAX_DIFF.get("window", 0.0), compare(row, generate(model, p, config))
        )


def test_one_forward_per_step_for_all_rows(models) -> None:
    model = models["mha"]
    sizes: list[int] = []
    handle = model.embed.register_forward_hook(lambda m, i, o: sizes.append(o.shape[0]))
    try:
        traces = generate_batch(
            model, [[1, 2], [3, 4, 5], [6]], TempoConfig(selection_threshold=0.05, max_steps=4)
        )
    finally:
        handle.remove()
    assert sizes == [3] * (1 + 4)  # prompt forward + one per step, each with all 3 rows
    assert all(len(t.steps) == 4 for t in traces)


def test_capture_per_row(models) -> None:
    """An AttentionCapture per row records exactly what it records in a single generation."""
    model = models["gqa_partial"]
    config = TempoConfig(selection_threshold=0.04, max_steps=5)
    prompts = [[1, 2, 3, 4, 5], [9], [11, 12]]
    caps = [AttentionCapture(layers=[0, 1]) for _ in prompts]
    batch = generate_batch(model, prompts, config, observers=[[c] for c in caps])
    for p, cap, trace in zip(prompts, caps, batch, strict=True):
        alone = AttentionCapture(layers=[0, 1])
        single = generate(model, p, config, observers=[alone])
        compare(trace, single)
        got, want = cap.result(trace).full_matrix(), alone.result(single).full_matrix()
        assert got.shape == want.shape == (len(trace.tokens), len(trace.tokens))
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_single_row_batch_is_generate(models) -> None:
    model = models["mha"]
    config = TempoConfig(
        selection_threshold=0.04, max_steps=6, prune=PruningConfig(rule=RelativeRule(ratio=0.7))
    )
    (only,) = generate_batch(model, [[3, 1, 4]], config)
    assert compare(only, generate(model, [3, 1, 4], config)) == 0.0  # same code path, bitwise


def test_bad_batch_inputs(models) -> None:
    model = models["mha"]
    with pytest.raises(ValueError, match="at least one prompt"):
        generate_batch(model, [], TempoConfig())
    with pytest.raises(ValueError, match="observer lists"):
        generate_batch(model, [[1], [2]], TempoConfig(), observers=[[]])


def test_report_max_difference() -> None:
    """Runs last in this module: the measured maximum, printed with ``-s``."""
    if MAX_DIFF:
        print(
            f"\nmax |p_batch - p_single| over {len(MAX_DIFF)} cases: {max(MAX_DIFF.values()):.2e}"
        )
        assert max(MAX_DIFF.values()) <= TOL
    _ = torch
