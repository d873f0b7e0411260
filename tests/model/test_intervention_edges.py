"""Edges of the intervention path found by a new user (issue 22 review).

No parallel set in any prompt; logits and positions that do not agree; hooks that a later
start layer would skip; bad (layer, head) pairs; a cache entry passed as a patch source; a
``--prune`` that a replaying experiment cannot honour.
"""

from __future__ import annotations

import pytest
import torch

import tempo_lens as tl
from tempo_lens.analysis.teacher_forced import Replay
from tempo_lens.cli import main
from tempo_lens.hooks.interventions import (
    head_ablation_hooks,
    head_patch_hooks,
    readout_positions,
    step_distributions,
)

NO_SET = ["--tiny", "--prompt", "3 14 15 9 26", "--selection-threshold", "0.9", "--max-steps", "4"]
MESSAGES = {
    "isolation_patching": "nothing to patch",
    "layer_intervention": "nothing to intervene on",
    "head_ablation": "nothing to compare at parallel steps",
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_no_parallel_set_gives_a_report_not_a_traceback(name, tmp_path) -> None:
    out = tmp_path / name
    assert main(["experiment", name, *NO_SET, "-q", "--output-dir", str(out)]) == 0
    assert MESSAGES[name] in (out / "report.txt").read_text(encoding="utf-8")
    assert main(["experiment", name, "--summarize-only", "-q", "--output-dir", str(out)]) == 0


@pytest.mark.parametrize("name", list(MESSAGES))
def test_replaying_experiments_refuse_pruning(name, tmp_path, capsys) -> None:
    argv = [
        "experiment",
        name,
        "--tiny",
        "--prune",
        "relative:0.5",
        "--output-dir",
        str(tmp_path / "x"),
    ]
    assert main(argv) == 2
    assert "prune must be none" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_tree_comparison_refuses_pruning_with_its_own_reason(tmp_path, capsys) -> None:
    out = tmp_path / "x"
    argv = ["experiment", "tree_comparison", "--tiny", "--prune", "relative:0.5"]
    assert main([*argv, "--output-dir", str(out)]) == 2
    assert "prune must be none: the tree relayout re-lays" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def replay():
    model = tl.make_tiny_model(n_layers=2)
    trace = tl.generate(model, [3, 14, 15, 9], selection_threshold=0.05, max_steps=5)
    return Replay(model, trace)


def test_step_distributions_checks_logits_against_the_state(replay) -> None:
    st, probs = replay.state, replay.member_probs
    with torch.no_grad(), tl.attach(replay.model, st):
        logits = replay.model(st.tokens_tensor())
    pos = readout_positions(st)
    with pytest.raises(ValueError, match=r"logits have \d+ positions, expected \d+ \(one per"):
        step_distributions(logits, st, probs, "mixture", pos)  # full logits with positions
    # the runtime type checks of the test suite (jaxtyping) or the function's own check
    with pytest.raises((ValueError, TypeError), match=r"batch pos d_vocab|\[batch, pos, d_vocab\]"):
        step_distributions(logits[0], st, probs, "mixture")
    with pytest.raises(ValueError, match="positions lack"):
        step_distributions(logits[:, pos[:-1]], st, probs, "mixture", pos[:-1])
    with pytest.raises(ValueError, match="member_probs"):
        step_distributions(logits, st, probs[:1], "mixture")
    assert step_distributions(logits[:, pos], st, probs, "mixture", pos).shape[1] == st.n_steps


def test_measure_refuses_hooks_a_later_start_would_skip(replay) -> None:
    with pytest.raises(ValueError, match=r"blocks.0.attn.hook_z.*before start_layer=1"):
        replay.measure(1, head_ablation_hooks([(0, 1)]), start_layer=1)
    with pytest.raises(ValueError, match="batch >= 1"):
        replay.measure(0, [])
    with pytest.raises(ValueError, match=r"start_layer must be in \[0, 2\)"):
        replay.measure(1, [], start_layer=5)
    with pytest.raises(ValueError, match=r"ratio_layers \[5\]"):
        Replay(replay.model, replay.trace, ratio_layers=[5])
    (row,) = replay.measure(1, head_ablation_hooks([(1, 1)]), start_layer=1)
    assert row["kl_parallel"] > 0 or row["kl_nonparallel"] > 0


def test_head_hooks_refuse_bad_heads_and_take_a_cache_entry(replay) -> None:
    model, st = replay.model, replay.state
    with pytest.raises(ValueError, match="non-negative"):
        head_ablation_hooks([(0, -1)])
    toks = st.tokens_tensor()
    with torch.no_grad(), tl.attach(model, st):
        _, cache = model.run_with_cache(toks)
        (name, fn) = head_ablation_hooks([(1, 7)])[0]
        with (
            pytest.raises(ValueError, match="head 7 >= n_heads 4"),
            model.hooks(fwd_hooks=[(name, fn)]),
        ):
            model(toks)
        entry = cache["blocks.1.attn.hook_z"]  # [1, pos, head, d_head], as a user passes it
        with model.hooks(fwd_hooks=head_patch_hooks([(1, 0)], {1: entry})):
            patched = model(toks)
        with model.hooks(fwd_hooks=head_patch_hooks([(1, 0)], {1: entry[0]})):
            assert torch.equal(patched, model(toks))
        short = {1: entry[0, :-1]}
        with (
            pytest.raises(ValueError, match="positions"),
            model.hooks(fwd_hooks=head_patch_hooks([(1, 0)], short)),
        ):
            model(toks)
    with pytest.raises((ValueError, TypeError), match=r"pos head_index d_head|\[pos, head_index"):
        head_patch_hooks([(1, 0)], {1: entry[0, :, 0]})


def test_replay_warns_when_the_trace_came_from_another_model(replay) -> None:
    other = tl.make_tiny_model(n_layers=3)
    with pytest.warns(UserWarning, match="generated by .*n_layers=2.*n_layers=3"):
        Replay(other, replay.trace)
