"""Analyses of captured attention on a sliding-window model count only the keys each
layer can see: a local layer's queries see keys within ``window`` logical positions.

Reference: loops over ``hf_oracle.reference_mask`` (the visibility rules written out,
window by logical distance), independent of ``AttentionData.visible``. Model: a tiny
Gemma 3 on the bridge (window 4 on layers 0 and 1, layer 2 global), generating ~4x past
the window.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from tempo_lens import TempoConfig, generate
from tempo_lens.analysis import (
    attention_entropy,
    load_attention,
    received_attention,
    save_attention,
)
from tempo_lens.hooks.capture import AttentionCapture, AttentionData

from .hf_oracle import bridge_of, reference_mask, tiny_gemma3_hf, tiny_tokenizer

pytestmark = pytest.mark.bridge


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> AttentionData:
    hf = tiny_gemma3_hf(seed=2, window=4)
    bridge = bridge_of(copy.deepcopy(hf), tiny_tokenizer(str(tmp_path_factory.mktemp("tok"))))
    cap = AttentionCapture()
    cfg = TempoConfig(selection_threshold=0.005, max_parallel=4, max_steps=8, isolate=True)
    trace = generate(bridge, [1, 2, 3], cfg, observers=[cap])
    assert len(trace.tokens) > 3 * 4 and max(trace.widths()) > 1
    return cap.result(trace)


def _without_windows(data: AttentionData) -> AttentionData:
    return AttentionData(
        state=data.state,
        rows={s: data.rows(s) for s in data.steps},
        query_indices={s: data.query_indices(s) for s in data.steps},
        layers=data.layers,
        heads=data.heads,
    )


def _receivers(data: AttentionData):
    """``(layer, key j) -> [(head values of A[i, j])]`` over the visible later queries."""
    st = data.state
    masks = {w: reference_mask(st, window=w).numpy() for w in set(data.windows)}
    out: dict[tuple[int, int], list[np.ndarray]] = {}
    for s in data.steps:
        if s < 0:
            continue
        rows = data.rows(s).astype(np.float64)
        for r, i in enumerate(data.query_indices(s)):
            for li, w in enumerate(data.windows):
                for j in range(rows.shape[-1]):
                    if st.steps[j] < s and masks[w][i, j]:
                        out.setdefault((li, j), []).append(rows[li, :, r, j])
    return out


def test_windows_are_recorded_and_saved(data, tmp_path) -> None:
    assert data.windows == [4, 4, None]
    save_attention(data, tmp_path)
    assert load_attention(tmp_path).windows == [4, 4, None]


def test_received_counts_receivers_within_the_window(data) -> None:
    res = received_attention(data)
    ref = np.full(res.per_head_received.shape, np.nan)
    for (li, j), vals in _receivers(data).items():
        ref[li, :, j] = np.mean(vals, axis=0)
    np.testing.assert_allclose(res.per_head_received, ref, atol=1e-9, equal_nan=True)
    # Ignoring the window counts out-of-window receivers (which give exactly 0) on the
    # local layers: the per-token numbers there come out lower.
    flat = received_attention(_without_windows(data)).per_head_received
    assert np.nanmax(np.abs(flat[:2] - ref[:2])) > 1e-3
    np.testing.assert_allclose(flat[2], ref[2], atol=1e-9, equal_nan=True)


def test_entropy_normalises_by_the_keys_each_layer_sees(data) -> None:
    res = attention_entropy(data)
    st = data.state
    masks = {w: reference_mask(st, window=w).numpy() for w in set(data.windows)}
    row = res.per_query.iloc[-1]
    s, i = int(row["step"]), int(row["index"])
    r = data.query_indices(s).index(i)
    a = data.rows(s)[:, :, r].astype(np.float64)  # layer head key
    ratios = []
    for li, w in enumerate(data.windows):
        n_vis = int(masks[w][i].sum())
        for h in range(a.shape[1]):
            p = a[li, h][a[li, h] > 0]
            ratios.append(float(-(p * np.log(p)).sum()) / math.log(n_vis))
    assert row["normalised"] == pytest.approx(np.mean(ratios), rel=1e-6)
    assert row["n_visible"] == int(masks[None][i].sum())


def test_normalised_entropy_per_layer_window(data) -> None:
    from tempo_lens.analysis.controls import normalised_entropy

    st = data.state
    masks = {w: reference_mask(st, window=w).numpy() for w in set(data.windows)}
    total = np.zeros((len(data.layers), len(data.heads)))
    count = np.zeros(len(data.layers))
    for s in data.steps:
        if s < 0:
            continue
        rows = data.rows(s).astype(np.float64)
        for r, i in enumerate(data.query_indices(s)):
            for li, w in enumerate(data.windows):
                n_vis = int(masks[w][i].sum())
                if n_vis < 2:
                    continue
                for h in range(rows.shape[1]):
                    p = rows[li, h, r][rows[li, h, r] > 0]
                    total[li, h] += float(-(p * np.log(p)).sum()) / math.log(n_vis)
                count[li] += 1
    ref = total / count[:, None]
    np.testing.assert_allclose(normalised_entropy(data), ref, rtol=1e-5)
    assert np.abs(normalised_entropy(_without_windows(data))[:2] - ref[:2]).max() > 1e-3
