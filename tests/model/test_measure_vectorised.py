"""Issue 22: the vectorised ``Replay.measure`` equals the per-step reference.

The reference (:mod:`tests.model.measure_reference`) is the implementation issue 22
profiled: a full forward, then ``readout_distribution`` and ``select_from_probs`` per row
and step. The vectorised path starts at a later layer, unembeds only the positions read and
counts the width instead of sorting — each of those is covered here, on every readout, with
a cap that binds, a threshold schedule and partial isolation.
"""

from __future__ import annotations

import math

import pytest

import tempo_lens as tl
from tempo_lens.analysis.teacher_forced import Replay
from tempo_lens.hooks.interventions import attention_bias, head_ablation_hooks
from tests.model.measure_reference import reference_measure

pytestmark = pytest.mark.bridge  # also run under TransformerLens 4 (the README's TL4 tier)

KEYS = ("kl_parallel", "kl_nonparallel", "dwidth_parallel", "dwidth_nonparallel", "dnll")


def _agree(got: list[dict[str, float]], want: list[dict[str, float]]) -> None:
    assert len(got) == len(want)
    for b, (g, w) in enumerate(zip(got, want, strict=True)):
        for k in KEYS:
            if math.isnan(w[k]):
                assert math.isnan(g[k]), (b, k)
            else:
                # the width is a count: equal. KL and NLL come from forwards of another batch
                # shape and start layer, which differ by float32 roundoff (~1e-6 relative
                # with 2 threads; bit-equal with 1)
                tol = {"abs": 1e-9} if k.startswith("dwidth") else {"rel": 2e-5, "abs": 1e-7}
                assert g[k] == pytest.approx(w[k], **tol), (b, k, g[k], w[k])


CONFIGS = {
    "mixture": {"readout": "mixture"},
    "top-capped": {"readout": "top", "max_parallel": 2},
    "last-schedule": {
        "readout": "last",
        "schedule": tl.ThresholdSchedule(kind="linear", tau0=0.05, tau_final=0.2),
    },
    "partial-isolation": {"readout": "mixture", "isolate": True, "isolate_layers": (1,)},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_measure_equals_the_per_step_reference(name) -> None:
    model = tl.make_tiny_model(n_layers=3)
    conf = tl.TempoConfig(selection_threshold=0.05, max_steps=6, **CONFIGS[name])
    trace = tl.generate(model, [3, 14, 15, 9], conf)
    r = Replay(model, trace)
    assert (r.widths > 1).any(), "the trace needs a parallel step"
    chunk = [(1, h) for h in range(model.cfg.n_heads)]
    hooks = head_ablation_hooks(chunk)
    want = reference_measure(r, len(chunk), hooks)
    _agree(r.measure(len(chunk), hooks, start_layer=1), want)
    _agree(r.measure(len(chunk), hooks), want)  # from layer 0 as well
    assert any(row["kl_parallel"] > 1e-6 for row in want)  # the ablation changed something


def test_measure_width_counts_the_threshold_and_the_cap() -> None:
    """A bias that flattens distributions changes widths; the count must follow the sort."""
    model = tl.make_tiny_model(n_layers=2)
    conf = tl.TempoConfig(selection_threshold=0.02, max_steps=6, max_parallel=3)
    trace = tl.generate(model, [3, 14, 15, 9], conf)
    r = Replay(model, trace)
    st = r.state
    betas = [-4.0, 0.0, 3.0]
    hooks = attention_bias(st, keys=list(range(st.prompt_length)), beta=betas, layers=[0, 1])
    want = reference_measure(r, len(betas), hooks)
    _agree(r.measure(len(betas), hooks), want)


def test_width_count_equals_select_from_probs_on_fallback_ties_and_cap() -> None:
    """The count rule on distributions built to hit the fallback, exact ties at tau and the cap."""
    import torch

    from tempo_lens.selection import select_from_probs

    model = tl.make_tiny_model(n_layers=2)
    conf = tl.TempoConfig(selection_threshold=0.25, max_steps=4, max_parallel=2)
    r = Replay(model, tl.generate(model, [3, 14, 15, 9], conf))
    n, v = r.state.n_steps, model.cfg.d_vocab
    g = torch.Generator().manual_seed(0)
    d = torch.softmax(torch.randn(5, n, v, generator=g, dtype=torch.float64), -1)  # flat: fallback
    d[1, :, :4] = 0.25  # four tokens exactly at tau: all qualify, the cap keeps 2
    d[2, :, 0] = 0.6  # one qualifies
    d[3, :, :3] = 0.3  # three qualify, capped to 2
    width, _ = r._width_nll(d)
    for b in range(5):
        for s in range(n):
            want = select_from_probs(d[b, s], conf.threshold_at(s), max_parallel=2).size
            assert width[b, s] == want, (b, s)
    assert set(width.flatten().tolist()) == {1, 2}


def test_softmax_into_and_workspace_reuse() -> None:
    """The in-place softmax equals torch's float64 softmax; a workspace reuses its buffer and
    step_distributions through a workspace equals the allocating call."""
    import torch

    from tempo_lens.hooks.interventions import Workspace, softmax_into, step_distributions

    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 97, generator=g) * 4
    x[0, 0, :10] = -torch.inf  # masked entries get probability 0
    out = torch.empty(3, 5, 97, dtype=torch.float64)
    got = softmax_into(x, out)
    assert got.data_ptr() == out.data_ptr()
    want = torch.softmax(x, -1, dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-14, atol=1e-17)
    assert (got[0, 0, :10] == 0).all()

    ws = Workspace()
    a = ws.buffer("a", (4, 6), torch.float64, "cpu")
    b = ws.buffer("a", (2, 3), torch.float64, "cpu")  # smaller: same storage
    assert a.data_ptr() == b.data_ptr() and b.shape == (2, 3)
    c = ws.buffer("a", (5, 6), torch.float64, "cpu")  # larger: a new buffer
    assert c.numel() == 30

    model = tl.make_tiny_model(n_layers=2)
    trace = tl.generate(model, [3, 14, 15, 9], selection_threshold=0.05, max_steps=6)
    r = Replay(model, trace)
    st = r.state
    logits = model(st.tokens_tensor()).expand(2, -1, -1)
    for readout in ("mixture", "top", "last"):
        plain = step_distributions(logits, st, r.member_probs, readout)
        reused = step_distributions(logits, st, r.member_probs, readout, workspace=ws)
        assert torch.equal(plain, reused)
        again = step_distributions(logits, st, r.member_probs, readout, workspace=ws)
        assert again.data_ptr() == reused.data_ptr()  # the workspace's buffer, not a new one
