"""docs/models.md's feature matrix, checked cell by cell against the code.

Each row of the table between ``<!-- matrix:begin -->`` and ``<!-- matrix:end -->`` has a
check here, run on the tiny model of each backend the installed TransformerLens has
(both on 3.9; the bridge only on 4.x, which runs this file in its CI tier): "yes" must
run and give a sane value, "refused" must raise one ``ValueError`` before any work,
"no-op" must leave the model untouched. A row without a check, or a cell the code
contradicts, fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import tempo_lens as tl
from tempo_lens.backends import HAS_HOOKED_TRANSFORMER, backend_of
from tempo_lens.hooks.interventions import attention_bias, head_ablation_hooks, path_patching

pytestmark = pytest.mark.bridge

ROOT = Path(__file__).resolve().parents[2]
PROMPT = [3, 14, 15, 9]
COLUMNS = {"hooked": 1, "bridge": 2}


def matrix() -> dict[str, dict[str, str]]:
    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    block = text.split("<!-- matrix:begin -->")[1].split("<!-- matrix:end -->")[0]
    rows = [r for r in block.strip().splitlines()[2:] if r.startswith("|")]
    out = {}
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        out[cells[0]] = {b: cells[i] for b, i in COLUMNS.items()}
    return out


def _trace(model, **kw):
    cfg = tl.TempoConfig(selection_threshold=0.05, max_steps=6, **kw)
    return tl.generate(model, PROMPT, cfg)


def check_generate(model, tmp_path) -> None:
    for mode in ("soft", "hard"):
        prune = tl.PruningConfig(rule=tl.RelativeRule(ratio=0.9), mode=mode)
        t = _trace(model, prune=prune)
        assert any(d.pruned for s in t.steps for d in s.pruning)
    rows = tl.generate_batch(model, [PROMPT, [5, 6]], tl.TempoConfig(max_steps=3))
    assert len(rows) == 2 and all(r.steps for r in rows)


def check_attach(model, tmp_path) -> None:
    st = _trace(model).to_state()
    with tl.attach(model, st):
        _, cache = model.run_with_cache(st.tokens_tensor())
    assert cache["pattern", 0].shape[-1] == len(st)


def check_capture(model, tmp_path) -> None:
    cap = tl.AttentionCapture(hook_names=["blocks.0.attn.hook_k"])
    trace = tl.generate(model, PROMPT, tl.TempoConfig(max_steps=3), observers=[cap])
    data = cap.result(trace)
    assert "blocks.0.attn.hook_k" in data.extra(data.steps[-1])


def check_baselines(model, tmp_path) -> None:
    for fn in (tl.greedy, tl.sample, tl.beam_search):
        assert len(fn(model, PROMPT, max_steps=3).steps) == 3


def check_interventions(model, tmp_path) -> None:
    st = _trace(model).to_state()
    tokens = st.tokens_tensor()
    with torch.no_grad(), tl.attach(model, st):
        clean = model(tokens)
        with model.hooks(fwd_hooks=attention_bias(st, keys=[1], beta=2.0, layers=[1])):
            biased = model(tokens)
        with model.hooks(fwd_hooks=head_ablation_hooks([(1, 0)])):
            ablated = model(tokens)
        _, src = model.run_with_cache(tokens)
    assert not torch.equal(clean, biased) and not torch.equal(clean, ablated)
    with torch.no_grad(), tl.attach(model, st):
        tgt = src  # patching a run into itself changes nothing
        with path_patching(model, src, tgt, senders=[(0, 1)], receivers=[(1, 0)]):
            same = model(tokens)
    assert torch.allclose(same, clean, atol=1e-5)


def check_replay(model, tmp_path) -> None:
    from tempo_lens.analysis.teacher_forced import Replay

    r = Replay(model, _trace(model))
    [row] = r.measure(1, head_ablation_hooks([(1, 0)]), start_layer=1)
    assert np.isfinite(row["dnll"])


def check_continuation(model, tmp_path) -> None:
    from tempo_lens.analysis.replay import continuation_support

    cap = tl.AttentionCapture()
    trace = tl.generate(
        model, PROMPT, tl.TempoConfig(selection_threshold=0.05, max_steps=6), observers=[cap]
    )
    df = continuation_support(model, trace, cap.result(trace), window=2)
    assert len(df) and np.isfinite(df["loglik"]).all()


def check_experiments(model, tmp_path) -> None:
    from tempo_lens.experiments import available, spec
    from tempo_lens.runner import run_experiment

    name = backend_of(model).name
    for exp in available():
        s = spec(exp)
        own = dict(s.tiny_model)  # its own tiny shape: built on this backend
        m = tl.make_tiny_model(backend=name, **own) if own else model
        cfg = s.config(tiny=True, **dict(s.quick))
        prompts = s.prompts(cfg)[: s.quick_prompts]
        res = run_experiment(s, cfg, tmp_path / exp, prompts=prompts, model=m, progress=False)
        assert res.tables, exp


def check_tiny(model, tmp_path) -> None:
    m = tl.make_tiny_model(backend=backend_of(model).name)
    assert backend_of(m).name == backend_of(model).name


def check_tiny_variants(model, tmp_path) -> None:
    name = backend_of(model).name
    tl.make_tiny_model(backend=name, window_size=4)
    tl.make_tiny_model(backend=name, rotary_dim=8)


def check_hf_llama(model, tmp_path) -> None:
    from tempo_lens.models.hf_export import hf_llama_from_hooked

    hf_llama_from_hooked(model)


def check_hf_causal_lm(model, tmp_path) -> None:
    from tempo_lens.models.hf_export import hf_causal_lm

    hf = hf_causal_lm(model)
    x = torch.tensor([PROMPT])
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, model(x), atol=1e-4)


def check_fast(model, tmp_path) -> None:
    before = {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()}
    with tl.fast_weights(model):
        after = {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()}
        status = tl.fast_path_status(model)
    if backend_of(model).name == "bridge":
        raise _NoOp(before == after and not status.enabled)
    assert status.enabled


class _NoOp(Exception):
    def __init__(self, untouched: bool) -> None:
        super().__init__("no-op")
        self.untouched = untouched


CHECKS: dict[str, Callable] = {
    "`generate`, `generate_batch`, KV cache, soft and hard pruning": check_generate,
    "`attach` + `run_with_cache`": check_attach,
    "`AttentionCapture` (incl. extra hooks)": check_capture,
    "baselines: `greedy`, `sample`, `beam_search`": check_baselines,
    "interventions: `attention_bias`, `head_ablation_hooks`, `path_patching`": check_interventions,
    "`analysis.teacher_forced.Replay`": check_replay,
    "`analysis.replay.continuation_support` (`reorder_kv_cache(lengths=)`)": check_continuation,
    "every experiment (`tempo-lens experiment NAME --tiny --quick`)": check_experiments,
    "`make_tiny_model` (Llama-shaped)": check_tiny,
    "`make_tiny_model(window_size=...)` / partial or adjacent-pair rotary": check_tiny_variants,
    "`hf_export.hf_llama_from_hooked`": check_hf_llama,
    "`hf_export.hf_causal_lm`": check_hf_causal_lm,
    "fast weight layout (`fast_weights`)": check_fast,
}

BACKENDS = (["hooked"] if HAS_HOOKED_TRANSFORMER else []) + ["bridge"]


def test_every_row_has_a_check() -> None:
    assert set(matrix()) == set(CHECKS)


@pytest.fixture(scope="module")
def models():
    return {b: tl.make_tiny_model(backend=b) for b in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feature", list(CHECKS))
def test_matrix_cell(feature, backend, models, tmp_path) -> None:
    cell = matrix()[feature][backend]
    model = models[backend]
    check = CHECKS[feature]
    if cell == "yes":
        check(model, tmp_path)
    elif cell == "refused":
        with pytest.raises(ValueError, match=re.compile("backend|bridge|Bridge|hooked")):
            check(model, tmp_path)
    elif cell == "no-op":
        with pytest.raises(_NoOp) as info:
            check(model, tmp_path)
        assert info.value.untouched
    else:
        pytest.fail(f"unknown cell {cell!r} for {feature!r} / {backend}")
