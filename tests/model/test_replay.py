"""``continuation_support`` (prefix KV cache, one masked batch) against plain full forwards."""

from __future__ import annotations

import pytest
import torch

import tempo_lens as tl
from tempo_lens.analysis.replay import continuation_support


@pytest.mark.parametrize("prompt", [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3, 5, 8]])
def test_continuation_loglik_equals_whole_sequence_forwards(prompt) -> None:
    model = tl.make_tiny_model()
    cap = tl.AttentionCapture()
    trace = tl.generate(model, prompt, selection_threshold=0.05, max_steps=10, observers=[cap])
    window = 3
    got = continuation_support(model, trace, cap.result(trace), window=window)
    assert got["set_step"].nunique() >= 2  # several prefixes share the cache
    st, clean = trace.state, trace.clean_ids()
    for row in got.itertuples():
        s = int(row.set_step)
        seq = prompt + clean[:s] + [st.token_ids[int(row.index)]] + clean[s + 1 : s + 1 + window]
        with torch.no_grad():
            x = torch.tensor([seq])
            logits = model(x, attention_mask=torch.ones_like(x))[0]
        lp = torch.log_softmax(logits.to(torch.float64), dim=-1)
        want = sum(
            float(lp[len(seq) - window - 1 + j, seq[len(seq) - window + j]]) for j in range(window)
        )
        assert row.loglik == pytest.approx(want, rel=1e-5, abs=1e-5), (s, row.index)
