"""compare_decoders: baselines equal Hugging Face generate, replays equal plain forwards,
budgets equal counted forwards, and the --quick experiment runs end to end."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import tempo_lens as tl
from tempo_lens.analysis.budget import ForwardCounter, trace_budget
from tempo_lens.analysis.decoders import convergence_depth, covered, pairwise_cosine_distance
from tempo_lens.analysis.paths import continuation_nlls, member_paths, replay_sets
from tempo_lens.analysis.quality import token_nll
from tempo_lens.backends import hook_name
from tempo_lens.experiments import compare_decoders as cd
from tempo_lens.models.convert import attach_tokenizer
from tempo_lens.models.hf_export import hf_llama_from_hooked
from tempo_lens.pruning import PruningConfig, RelativeRule
from tempo_lens.runner import run_experiment
from tests.model.hf_oracle import tiny_llama_pair

EOS = 2
PROMPTS = ([3, 14, 15, 9], [5, 35, 8], [7, 1, 8, 2, 8, 18])


def word_tokenizer(vocab: int = 64) -> PreTrainedTokenizerFast:
    """A real (in-memory) tokenizer whose EOS is token 2, so the EOS rules are exercised."""
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=f"t{EOS}", pad_token="t0", unk_token="t0"
    )


@pytest.fixture(scope="module", params=[0, 1])
def pair(request):
    """HF Llama and the HookedTransformer built from it; EOS made likely (same change in both)."""
    hf, ht = tiny_llama_pair(seed=request.param)
    with torch.no_grad():
        hf.lm_head.weight[EOS] *= 1.6
        ht.W_U[:, EOS] *= 1.6
    attach_tokenizer(ht, word_tokenizer())
    return hf, ht


def hf_generate(hf, prompt, *, k: int, n: int, eos: bool) -> list[int]:
    x = torch.tensor([prompt])
    out = hf.generate(
        x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, num_beams=k,
        eos_token_id=EOS if eos else None, pad_token_id=0,
    )  # fmt: skip
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("eos", [True, False])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_greedy_and_beam_equal_hf_generate(pair, k, eos) -> None:
    hf, ht = pair
    hits = 0
    for prompt in PROMPTS:
        want = hf_generate(hf, prompt, k=k, n=8, eos=eos)
        if k == 1:
            trace = tl.greedy(ht, prompt, max_steps=8, stop_at_eos=eos)
        else:
            trace = tl.beam_search(ht, prompt, max_steps=8, num_beams=k, stop_at_eos=eos)
        got = trace.clean_ids() + ([EOS] if trace.stop_reason == "eos" else [])
        assert got == want, (prompt, k, eos)
        hits += want[-1:] == [EOS]
    if eos and k > 1:
        assert hits, "no beam ended in EOS: the EOS rules were not exercised"


def test_beam_records_steps_and_hypotheses(pair) -> None:
    _, ht = pair
    trace = tl.beam_search(ht, PROMPTS[0], max_steps=6, num_beams=3)
    beams = trace.extra["beams"]
    assert len(beams) == 3
    assert [b["score"] for b in beams] == sorted((b["score"] for b in beams), reverse=True)
    assert beams[0]["token_ids"] == trace.clean_ids()
    assert all(len(s["top_k"]) == 3 for s in trace.extra["steps"])


def test_nucleus_keeps_the_crossing_token() -> None:
    from tempo_lens.generation.baselines import nucleus

    p = torch.tensor([0.1, 0.5, 0.3, 0.1], dtype=torch.float64)
    assert nucleus(p, 0.6).tolist() == pytest.approx([0, 0.5 / 0.8, 0.3 / 0.8, 0])
    assert nucleus(p, 0.5).tolist() == pytest.approx([0, 1, 0, 0])
    a = tl.sample(tl.make_tiny_model(), [1, 2, 3], max_steps=6, seed=3, top_p=0.9)
    b = tl.sample(tl.make_tiny_model(), [1, 2, 3], max_steps=6, seed=3, top_p=0.9)
    assert a.clean_ids() == b.clean_ids()


def test_member_replay_equals_plain_forward(tiny) -> None:
    trace = tl.generate(tiny, [3, 14, 15, 9], selection_threshold=0.04, max_steps=6)
    s = next(i for i, w in enumerate(trace.widths()) if w > 1)
    prefix = [3, 14, 15, 9] + trace.clean_ids()[:s]
    members = [trace.state.token_ids[i] for i in trace.steps[s].indices]
    paths = member_paths(tiny, prefix, members, horizon=4)
    for m, p in zip(members, paths, strict=True):
        seq = prefix + [m, *p.continuation]
        plain = token_nll(tiny, seq, start=len(prefix))
        got = torch.tensor([p.member_nll, *p.continuation_nll], dtype=torch.float64)
        torch.testing.assert_close(got, plain, atol=1e-5, rtol=0)
        assert (
            list(p.continuation)
            == tl.greedy(tiny, prefix + [m], max_steps=4, stop_at_eos=False).clean_ids()
        )
    cache: dict = {}
    again = member_paths(tiny, prefix, members[::-1], horizon=4, cache=cache)
    assert [p.token_id for p in again] == members[::-1] and len(cache) == len(members)
    other = [*prefix[:-1], 11]  # same length, other prefix: one batch with the first set
    replay_sets(tiny, [(prefix, members), (other, [5, 6])], horizon=4, cache=cache)
    assert len(cache) == len(members) + 2
    for m, p in zip([5, 6], member_paths(tiny, other, [5, 6], horizon=4), strict=True):
        q = cache[(tuple(other), 4, m)]
        assert q.continuation == p.continuation
        assert q.continuation_nll == pytest.approx(p.continuation_nll, abs=1e-5)


def test_continuation_nlls_equal_token_nll(tiny) -> None:
    prompt, outs = [3, 14, 15], [[1, 2, 3, 4], [], [9], [5, 6]] * 3
    got = continuation_nlls(tiny, prompt, outs)
    for o, g in zip(outs, got, strict=True):
        want = token_nll(tiny, prompt + o, start=len(prompt)).tolist()
        assert g == pytest.approx(want, abs=1e-5)


def _count(model, fn):
    """Forwards, tokens and peak cached positions seen by TransformerLens hook points."""
    seen = {"forwards": 0, "tokens": 0, "peak": 0}

    def embed(x, hook):
        seen["forwards"] += 1
        seen["tokens"] += x.shape[0] * x.shape[1]

    def pattern(x, hook):  # [batch, head, q, key]: keys = the cached positions in use
        seen["peak"] = max(seen["peak"], x.shape[0] * x.shape[-1])

    with model.hooks(fwd_hooks=[("hook_embed", embed), (hook_name(0, "pattern"), pattern)]):
        trace = fn()
    return trace, seen


@pytest.mark.parametrize(
    "method",
    ["tempo", "tempo_prune", "tempo_no_cache", "greedy", "sample", "beam2", "beam4"],
)
def test_budget_rule_matches_counted_forwards(method) -> None:
    model = tl.make_tiny_model()
    prompt = [3, 14, 15, 9, 26]
    prune = PruningConfig(rule=RelativeRule(ratio=0.9))
    runs = {
        "tempo": lambda: tl.generate(model, prompt, selection_threshold=0.04, max_steps=8),
        "tempo_prune": lambda: tl.generate(
            model, prompt, selection_threshold=0.04, max_steps=8, prune=prune
        ),
        "tempo_no_cache": lambda: tl.generate(
            model, prompt, selection_threshold=0.04, max_steps=6, use_kv_cache=False
        ),
        "greedy": lambda: tl.greedy(model, prompt, max_steps=7),
        "sample": lambda: tl.sample(model, prompt, max_steps=7, seed=1),
        "beam2": lambda: tl.beam_search(model, prompt, max_steps=7, num_beams=2),
        "beam4": lambda: tl.beam_search(model, prompt, max_steps=7, num_beams=4),
    }
    trace, seen = _count(model, runs[method])
    b = trace_budget(trace)
    assert (b.forwards, b.tokens_forwarded, b.peak_kv_positions) == (
        seen["forwards"],
        seen["tokens"],
        seen["peak"],
    )
    if method == "tempo_prune":
        assert any(d.pruned for s in trace.steps for d in s.pruning), "nothing was pruned"
    if method.startswith("tempo"):
        assert max(trace.widths()) > 1


def test_forward_counter_on_hf_and_export(tiny) -> None:
    hf = hf_llama_from_hooked(tiny)
    x = torch.tensor([[3, 14, 15, 9, 26]])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, tiny(x), atol=1e-4, rtol=0)
    counter = ForwardCounter(hf.get_input_embeddings())
    with counter.counting(), torch.no_grad():
        hf(x)
        hf(x[:, :2])
    assert (counter.forwards, counter.tokens) == (2, 7)


def test_decoder_metrics() -> None:
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert pairwise_cosine_distance(w, [0, 1]) == pytest.approx(1.0)
    assert pairwise_cosine_distance(w, [0, 0]) != pairwise_cosine_distance(w, [0, 0])  # NaN
    assert pairwise_cosine_distance(w, [0, 1, 2]) == pytest.approx((1 + 2 * (1 - 0.5**0.5)) / 3)
    assert covered([1, 2, 9], [1, 2, 3], [[1], [2], [3, 9]]) is True
    assert covered([1, 5, 3], [1, 2, 3], [[1], [2, 4], [3]]) is False
    assert covered([1, 2], [1, 2, 3], [[1], [2], [3]]) is None
    assert convergence_depth([[5, 7, 7], [6, 8, 7]]) == 3


def test_quick_experiment_end_to_end(tmp_path) -> None:
    cfg = cd.Config(tiny=True, **cd.SPEC.quick)
    res = run_experiment(
        cd.SPEC, cfg, tmp_path, prompts=tl.runner.prompts_from_texts(cd.SPEC.tiny_prompts[:1]),
        progress=False,
    )  # fmt: skip
    runs = res.tables["runs"]
    assert set(runs["family"]) == {"greedy", "tempo", "beam", "sampling", "hf_greedy", "pld"}
    assert runs["budget_matches_count"].dropna().astype(bool).all()
    by = runs.set_index("method")["output_ids"]
    assert by["pld"] == by["hf_greedy"] == by["greedy"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["budget_rule_matches_counter"][0] == summary["budget_rule_matches_counter"][1]
    for name in ("trees.png", "compute.png", "methods.csv", "sets.csv", "coverage.csv"):
        assert (tmp_path / name).stat().st_size > 0
    with pytest.raises(ValueError, match="modes"):
        cd.Config(tiny=True, modes=("sideways",))


@pytest.mark.parametrize(
    ("seed", "scale", "prompt"), [(1, 2.0, [7, 1, 8, 2, 8, 18]), (3, 1.3, [11, 12])]
)
def test_beam_finishes_eos_only_among_the_top_k(seed, scale, prompt) -> None:
    """Cases (found by search) where an EOS continuation ranked between k and 2k would win
    if it were allowed to finish a hypothesis; Hugging Face ignores it, and so must we."""
    hf, ht = tiny_llama_pair(seed=seed)
    with torch.no_grad():
        hf.lm_head.weight[EOS] *= scale
        ht.W_U[:, EOS] *= scale
    attach_tokenizer(ht, word_tokenizer())
    trace = tl.beam_search(ht, prompt, max_steps=10, num_beams=2)
    got = trace.clean_ids() + ([EOS] if trace.stop_reason == "eos" else [])
    assert got == hf_generate(hf, prompt, k=2, n=10, eos=True)
