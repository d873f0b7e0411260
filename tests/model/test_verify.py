"""Issue 28: ``tl.verify`` / ``tempo-lens verify`` — the TEMPO battery against Hugging Face.

The battery's reference (:mod:`tempo_lens.models.hf_reference`) is itself checked against
the tests' independent oracle (``hf_oracle.hf_step_distributions``), and every check is
made to fail once on purpose (a position off by one).
"""

from __future__ import annotations

import pytest
import torch

import tempo_lens as tl
from tempo_lens.analysis.verify import CHECKS
from tempo_lens.cli import main
from tempo_lens.state import SequenceState

from .hf_oracle import hf_logits, hf_step_distributions, tiny_llama_hf

pytestmark = pytest.mark.bridge


@pytest.fixture(scope="module")
def tiny_bridge():
    return tl.load_model(tiny_llama_hf(seed=3))


@pytest.fixture(scope="module")
def tiny_default():
    """The tiny model of the installed TransformerLens' default backend."""
    return tl.make_tiny_model(n_key_value_heads=2)


def test_every_check_passes_on_the_tiny_model(tiny_default) -> None:
    report = tl.verify(tiny_default, max_steps=4)
    assert [r.name for r in report.results] == list(CHECKS)
    assert report.ok, report.lines()
    assert report.max_abs_dp < 1e-5  # measured <= 2.8e-6 on both lines
    by = {r.name: r for r in report.results}
    assert all(r.parallel_sets >= 3 for r in report.results)  # sets of 3, never vacuous
    assert by["soft-prune"].pruned > 0 and by["hard-prune"].pruned > 0
    assert by["ragged-batch"].steps == 2 * by["isolated"].steps
    assert len(report.lines()) == len(CHECKS) + 2


def test_every_check_passes_on_a_bridge(tiny_bridge) -> None:
    report = tl.verify(tiny_bridge, max_steps=4)
    assert report.ok and report.backend == "bridge", report.lines()


def test_reference_matches_the_independent_oracle(tiny_bridge) -> None:
    """verify's reference == the tests' oracle (separate mask and position code)."""
    from tempo_lens.backends.bridge import unwrapped_hf_copy
    from tempo_lens.models.hf_reference import reference_distributions, reference_logits

    hf = unwrapped_hf_copy(tiny_bridge)
    for isolate, offset in [(True, 0.0), (False, 0.0), (True, 0.37)]:
        trace = tl.generate(
            tiny_bridge,
            [3, 10, 17, 24, 31],
            tl.TempoConfig(
                selection_threshold=1e-9, max_parallel=3, max_steps=3, isolate=isolate,
                positions=tl.PositionScheme(member_offset=offset), stop_at_eos=False,
            ),
        )  # fmt: skip
        st = trace.state
        full = reference_logits(hf, st, len(st), st.n_steps + 1)
        torch.testing.assert_close(full, hf_logits(hf, st)[0], rtol=0, atol=1e-6)
        if offset:  # hf_step_distributions rebuilds states with the default scheme
            continue
        probs = [s.probabilities for s in trace.steps]
        ours = reference_distributions(hf, st, probs, "mixture", len(trace.steps))
        oracle = hf_step_distributions(hf, trace)
        for a, b in zip(ours, oracle, strict=True):  # one forward vs one per step: roundoff
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def _off_by_one(monkeypatch) -> None:
    """Sabotage: the last member of every set sits one logical position too far."""
    append = SequenceState.append_set

    def wrong(self, *args, **kwargs):
        idx = append(self, *args, **kwargs)
        self.logical[idx[-1]] += 1.0
        return idx

    monkeypatch.setattr(SequenceState, "append_set", wrong)


def test_a_position_off_by_one_is_a_mismatch(tiny_default, monkeypatch) -> None:
    _off_by_one(monkeypatch)
    report = tl.verify(tiny_default, max_steps=3)
    assert not report.ok
    assert all(not r.ok for r in report.results), report.lines()  # every check sees it
    assert report.max_abs_dp > 1e-3
    assert report.lines()[-1].startswith("MISMATCH")


def test_cli_exit_codes(monkeypatch, capsys) -> None:
    argv = ["verify", "--tiny", "--checks", "isolated,hard-prune", "--max-steps", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("isolated") and out[1].endswith(" ok") and out[-1] == "all checks ok"
    _off_by_one(monkeypatch)
    assert main(argv) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert main(["verify", "--tiny", "--checks", "nope"]) == 2


def test_non_rotary_hf_model_is_refused(capsys) -> None:
    """GPT-2 (learned positions): refused by load_model and by the command line."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2)).eval()
    with pytest.raises(tl.NotRotaryError, match="rotary"):
        tl.load_model(hf)
    with pytest.raises(ValueError, match="tokenizer= is for a Hugging Face model"):
        tl.load_model("SmolLM2-135M-Instruct", tokenizer=object())


def test_load_hf_model_with_tokenizer_is_one_call() -> None:
    from tests.tokenizer_fixtures import word_tokenizer

    model = tl.load_model(tiny_llama_hf(seed=1), tokenizer=word_tokenizer())
    trace = tl.generate(model, "t3 t4 t5", selection_threshold=0.05, max_steps=2)
    assert trace.state.token_ids[:3] == [3, 4, 5] and len(trace.steps) == 2
    assert trace.texts[:3] == ["t3", " t4", " t5"] or "".join(trace.texts[:3]).split() == [
        "t3", "t4", "t5"
    ]  # fmt: skip


def test_bad_arguments_are_refused_before_any_work(tiny_default) -> None:
    from tempo_lens.cli.verify import CHECK_NAMES

    assert tuple(CHECKS) == CHECK_NAMES  # the CLI's copy (it imports no model library)
    with pytest.raises(ValueError, match="unknown checks"):
        tl.verify(tiny_default, checks=["isolated", "nope"])
    with pytest.raises(ValueError, match="two prompts"):
        tl.verify(tiny_default, prompts=[[1, 2, 3]])
    with pytest.raises(ValueError, match="max_steps"):
        tl.verify(tiny_default, max_steps=0)


def test_architecture_refusal_exits_3(monkeypatch, capsys) -> None:
    from tempo_lens.backends import UnsupportedAttentionError

    def refuse(model):
        raise UnsupportedAttentionError("chunked attention (test)")

    monkeypatch.setattr("tempo_lens.analysis.verify.check_rotary", refuse)
    assert main(["verify", "--tiny", "--checks", "isolated"]) == 3
    assert "refused: chunked attention (test)" in capsys.readouterr().err
