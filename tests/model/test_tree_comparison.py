"""The tree_comparison experiment: the relayout, its measures, the command and its resume.

* the tree relayout keeps the TEMPO trace's tokens, sets and logical positions, and its
  visibility is exactly rule 5's ancestor-only view under the clean path (written out here);
* on a greedy-like trace (every set of width 1) the two layouts are the same sequence, so
  every difference and the KL are exactly 0 — and a wrong relayout (every set hung under the
  prompt) makes them non-zero, so the check can fail;
* ``--tiny --quick`` writes its files and a second call resumes every unit.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import tempo_lens as tl
from tempo_lens.experiments import tree_comparison as tc
from tempo_lens.state import SequenceState

PROMPT = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def model():
    return tl.make_tiny_model()


def tempo_state(model, tau: float) -> SequenceState:
    cfg = tl.TempoConfig(selection_threshold=tau, max_steps=6, max_parallel=4, isolate=True)
    return tl.generate(model, PROMPT, cfg).state


def test_relayout_keeps_tokens_and_positions_and_sees_ancestors_only(model) -> None:
    st = tempo_state(model, 0.02)
    widths = [len(m) for m in st.set_indices]
    assert max(widths[:-1]) > 1, widths  # a parallel set before the last: the views differ
    tree = tc.tree_relayout(st)
    assert tree.token_ids == st.token_ids and tree.logical == st.logical
    assert tree.set_indices == st.set_indices and tree.is_tree
    n, clean = st.prompt_length, [m[0] for m in st.set_indices]
    vis_tree, vis_tempo = tree.visibility(), st.visibility()
    for s, members in enumerate(st.set_indices):
        for i in members:
            tree_keys = [*range(n), *clean[:s], i]  # the prompt, the clean path, itself
            tempo_keys = [*range(n), *(j for j in range(n, i) if st.steps[j] < s), i]
            assert vis_tree[i].nonzero().flatten().tolist() == sorted(tree_keys)
            assert vis_tempo[i].nonzero().flatten().tolist() == sorted(tempo_keys)
    assert not torch.equal(vis_tree, vis_tempo)
    m = tc.compare_layouts(model, st, tree)
    assert m["kl_clean"] > 0 and m["context_share_diff"] != 0
    with pytest.raises(ValueError, match="unpruned TEMPO sequence"):
        tc.tree_relayout(tree)


def hung_under_the_prompt(state: SequenceState) -> SequenceState:
    """A wrong relayout: every set's parent is the last prompt token (no clean path)."""
    n = state.prompt_length
    tree = SequenceState(state.token_ids[:n], isolate=state.isolate)
    for members in state.set_indices:
        tree.append_set(
            [state.token_ids[i] for i in members],
            positions=[state.logical[i] for i in members],
            parents=[n - 1] * len(members),
        )
    return tree


def test_greedy_like_trace_gives_exact_zeros_and_a_wrong_relayout_does_not(model) -> None:
    st = tempo_state(model, 1.0)  # nothing reaches tau = 1: top-1 fallback, width 1
    assert all(len(m) == 1 for m in st.set_indices) and st.n_steps == 6
    m = tc.compare_layouts(model, st, tc.tree_relayout(st))
    assert m["context_share_diff"] == 0.0 and m["kl_clean"] == 0.0
    assert m["context_share_tempo"] > 0 and pd.isna(m["sibling_received_diff"])  # no set > 1
    wrong = tc.compare_layouts(model, st, hung_under_the_prompt(st))
    assert wrong["kl_clean"] > 1e-4 and abs(wrong["context_share_diff"]) > 1e-4


def test_rules() -> None:
    assert tc.verdict("context_share_diff", (0.02, 0.05), 48) == "supported"
    assert tc.verdict("context_share_diff", (-0.05, -0.02), 48) == "supported"
    assert tc.verdict("context_share_diff", (-0.005, 0.008), 48) == "refuted"
    assert tc.verdict("context_share_diff", (0.005, 0.02), 48) == "inconclusive"
    assert tc.verdict("sibling_received_diff", (0.006, 0.02), 48) == "supported"
    assert tc.verdict("kl_clean", (0.01, 0.3), 48) == "supported"
    assert tc.verdict("kl_clean", (0.001, 0.009), 48) == "refuted"
    assert tc.verdict("kl_clean", (0.001, 0.3), 48) == "inconclusive"
    assert tc.verdict("spec_forward_ratio", (0.7, 0.9), 48) == "supported"
    assert tc.verdict("spec_forward_ratio", (0.992, 0.999), 48) == "refuted"
    assert tc.verdict("spec_forward_ratio", (0.9, 1.0), 48) == "inconclusive"
    assert tc.verdict("kl_clean", (0.1, 0.3), 9) == "insufficient"


def test_tiny_quick_run_writes_its_files_and_resumes(tmp_path, capsys) -> None:
    argv = ["--tiny", "--quick", "--output-dir", str(tmp_path)]
    assert tc.main(argv) == 0
    first = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "per_prompt.csv")
    assert len(table) == 2 and table["spec_exact"].all()
    assert (table["tempo_tokens"] == 4).all() and (table["greedy_forwards"] > 0).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["primary"]) == set(tc.PRIMARY)
    assert summary["primary"]["kl_clean"]["verdict"] == "insufficient"  # 2 prompts < 10
    assert "tree_comparison: 2 prompts" in (tmp_path / "summary.md").read_text()
    assert "0 resumed" in first
    assert tc.main(argv) == 0
    assert "2 resumed, 0 run" in capsys.readouterr().out
    again = pd.read_csv(tmp_path / "per_prompt.csv")
    pd.testing.assert_frame_equal(table, again)
