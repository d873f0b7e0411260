"""Token trees in one sequence: beam search and lossless tree speculative decoding.

TEMPO appends several tokens per step to one sequence; so do the fastest exact decoders,
as a *tree*: every token has a parent, sits at its depth as its logical (RoPE) position,
and sees only its ancestors (EAGLE's ``tree_mask``, SpecInfer, Hugging Face's 4-D custom
masks). Here a tree is a :class:`~tempo_lens.SequenceState` whose tokens carry
``parents`` (:meth:`~tempo_lens.SequenceState.append_set`), run through the very hooks
TEMPO uses (positions at ``hook_rot_q``/``hook_rot_k``, masks at ``hook_attn_scores``),
one KV cache, every token fed once. So step observers such as
:class:`~tempo_lens.AttentionCapture` record a tree's attention exactly as TEMPO's.

* :func:`tree_beam_search` — Hugging Face beam search (``generate(num_beams=k)``), all
  beams as one tree: each step appends the ``k`` new beam tokens as one set whose parents
  are their beams' last tokens; no per-beam cache copy, no cache reordering. Dead beams
  stay in the cache, invisible to the living ones (not their ancestors).
* :func:`tree_speculative` — greedy decoding, verified a draft tree at a time. The draft:
  the *n-gram candidates* of the prompt and the output so far (prompt lookup with several
  branches): for ``n = max_ngram .. 1``, every earlier occurrence of the last ``n``
  tokens (most recent first) proposes the ``depth`` tokens that followed it; the first
  ``branches`` distinct proposals are merged into a trie under the next greedy token (the
  root, known from the previous forward). One forward over the root and the trie with the
  tree mask gives every node's next-token argmax; the longest path whose tokens agree with
  their parents' argmax is accepted, and the argmax after its last node is the next root.
  The output is greedy decoding token for token (:func:`~tempo_lens.greedy`); rejected
  nodes are (soft-)pruned in the record and never seen again.

Size: a little over 500 lines, as one concept: the two decoders share the tree trace, the
result objects and the drafter's checks, and each is its reference's loop run as a tree.

Examples:
    >>> from tempo_lens import make_tiny_model, tree_beam_search, tree_speculative
    >>> model = make_tiny_model()
    >>> res = tree_beam_search(model, [1, 2, 3], max_steps=4, num_beams=2)
    >>> len(res.token_ids), res.state.is_tree
    (4, True)
    >>> spec = tree_speculative(model, [1, 2, 3, 1, 2], max_steps=6)
    >>> len(spec.token_ids), spec.n_forwards <= 6
    (6, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tempo_lens._numbers import BoolLike, IntLike, RealLike
from tempo_lens.backends import TempoModel, check_rotary, max_context, model_name, provenance
from tempo_lens.generation.baselines import (
    BeamRules,
    _count,
    _real,
    candidate_threshold_value,
)
from tempo_lens.generation.batch_forward import BatchForward
from tempo_lens.generation.loop import StepObserver
from tempo_lens.generation.text import encode_prompt, eos_token_id, label_texts
from tempo_lens.prompts import PromptLike
from tempo_lens.selection import probabilities
from tempo_lens.state import SequenceState
from tempo_lens.trace import Candidate, StepRecord, Trace

__all__ = [
    "DraftFn",
    "TreeBeamResult",
    "TreeSpecResult",
    "ngram_draft",
    "tree_beam_search",
    "tree_speculative",
]


@dataclass
class TreeBeamResult:
    """What :func:`tree_beam_search` returns.

    Attributes:
        token_ids: The best finished hypothesis (EOS not included), as Hugging Face
            ``generate(num_beams=k)`` returns it (followed there by EOS when
            ``stop_reason == "eos"``).
        stop_reason: ``"eos"``, ``"max_steps"`` or ``"context"``.
        beams: The finished hypotheses, best first (``token_ids``, ``score``,
            ``sum_logprob``, ``eos``), as :func:`~tempo_lens.beam_search` records them.
        trace: The whole tree as a :class:`~tempo_lens.trace.Trace` (method
            ``"tree_beam"``): one set per step (the running beams' new tokens), tokens off
            the best hypothesis pruned at the last step, so ``trace.clean_ids()`` is the
            output. Pass it to ``AttentionCapture.result``.
        n_forwards: Model forwards (the prompt's included).
        tokens_forwarded: Token positions fed through the model, the prompt's included:
            ``len(prompt)`` plus, per step, the running beams' new tokens (``k``, or fewer
            under ``candidate_threshold``); the best hypothesis' last token, never fed,
            is not counted. What a :class:`~tempo_lens.analysis.budget.ForwardCounter` on
            the token embedding counts.
    """

    token_ids: list[int]
    stop_reason: str
    beams: list[dict[str, Any]]
    trace: Trace
    n_forwards: int
    tokens_forwarded: int = 0

    @property
    def state(self) -> SequenceState:
        """The tree's :class:`~tempo_lens.SequenceState` (``trace.state``)."""
        return self.trace.state

    @property
    def forwarded_per_token(self) -> float:
        """``tokens_forwarded / len(token_ids)``: the compute measure of RQ 8.3 (NaN if empty)."""
        return self.tokens_forwarded / len(self.token_ids) if self.token_ids else float("nan")


@dataclass
class TreeSpecResult:
    """What :func:`tree_speculative` returns.

    Attributes:
        token_ids: The output, equal to greedy decoding's (EOS not included).
        stop_reason: ``"eos"``, ``"max_steps"`` or ``"context"``.
        trace: Every verified tree as one set per forward (method ``"tree_spec"``);
            rejected nodes are pruned at their step, so ``trace.clean_ids()`` is the output.
        n_forwards: Model forwards, the prompt's included.
        accepted: Per verification forward, the tokens it produced (root plus accepted
            draft tokens; ``>= 1``).
        drafted: Per verification forward, the number of draft nodes verified.
    """

    token_ids: list[int]
    stop_reason: str
    trace: Trace
    n_forwards: int
    accepted: list[int] = field(default_factory=list)
    drafted: list[int] = field(default_factory=list)

    @property
    def state(self) -> SequenceState:
        """The tree's :class:`~tempo_lens.SequenceState` (``trace.state``)."""
        return self.trace.state

    @property
    def accepted_per_forward(self) -> float:
        """Mean tokens produced per verification forward (1.0 is plain greedy)."""
        return sum(self.accepted) / len(self.accepted) if self.accepted else 0.0

    @property
    def forwards_per_token(self) -> float:
        """Model forwards (the prompt's included) per output token (greedy: 1.0)."""
        return self.n_forwards / len(self.token_ids) if self.token_ids else float("nan")


def _tree_trace(
    model: TempoModel,
    prompt: PromptLike,
    state: SequenceState,
    records: list[StepRecord],
    method: str,
    config: dict[str, Any],
    stop: str,
    extra: dict[str, Any],
) -> Trace:
    trace = Trace(
        prompt=prompt if isinstance(prompt, str) else state.token_ids[: state.prompt_length],
        model=model_name(model),
        method=method,
        config=config,
        state=state,
        texts=[""] * len(state),
        steps=records,
        stop_reason=stop,
        extra=extra,
        provenance=provenance(model),
    )
    return label_texts(trace, model)


def _record(step: int, method: str, token_ids: Sequence[int], indices: list[int], probs=None):
    p = [float(x) for x in probs] if probs is not None else []
    cands = [Candidate(int(t), "", p[k] if p else 0.0, True) for k, t in enumerate(token_ids)]
    return StepRecord(step, 0.0, method, cands, indices, probabilities=p)


def _observers(observers: Sequence[StepObserver]) -> list[list[StepObserver]]:
    return [list(observers)]


def tree_beam_search(
    model: TempoModel,
    prompt: PromptLike,
    *,
    max_steps: IntLike,
    num_beams: IntLike = 4,
    length_penalty: RealLike = 1.0,
    stop_at_eos: BoolLike = True,
    observers: Sequence[StepObserver] = (),
    candidate_threshold: RealLike | None = None,
) -> TreeBeamResult:
    """Beam search with all beams in one sequence and one KV cache (a token tree).

    The same rules as :func:`~tempo_lens.beam_search` (Hugging Face
    ``generate(num_beams=k, do_sample=False)``, shared through
    :class:`~tempo_lens.generation.baselines.BeamRules`); only the forwards differ: step
    ``s`` appends the ``k`` running beams' new tokens as one set (logical position
    ``L + s``, each token's parent its beam's previous token) and forwards those ``k``
    columns against the one cache, under the tree mask. The tokens of step ``s`` are
    physical indices ``L + k*s ...`` (fewer when fewer beams run).

    Args:
        model: A rotary ``HookedTransformer`` or ``TransformerBridge`` (with a tokenizer
            if ``prompt`` is text).
        prompt: Text, or token ids.
        max_steps: Maximum number of tokens to generate (``>= 1``).
        num_beams: ``k >= 1``.
        length_penalty: Exponent of the length normalisation of finished hypotheses.
        stop_at_eos: Let hypotheses finish at EOS.
        observers: Step observers (e.g. :class:`~tempo_lens.AttentionCapture`); each
            forward of step ``s`` is recorded as step ``s`` with its ``k`` queries.
        candidate_threshold: ``τ`` in ``(0, 1]``: *threshold beam search* (TEMPO's sets as
            beam search's candidate pool): per running beam only the tokens with
            ``p >= τ`` — the set TEMPO would select there, always at least the top-1 —
            are candidates, instead of the top ``2k`` of all beams; the rest of the rules
            is unchanged (:class:`~tempo_lens.generation.baselines.BeamRules`). Fewer
            than ``k`` beams run when fewer candidates exist, so fewer tokens are
            forwarded (``tokens_forwarded``). ``τ → 0`` is beam search; ``k = 1`` is
            greedy. ``None`` (default): plain beam search.

    Returns:
        A :class:`TreeBeamResult` (output, hypotheses, the tree as a trace, forwards and
        tokens forwarded).

    Raises:
        ValueError: ``max_steps`` or ``num_beams`` < 1; ``candidate_threshold`` not in
            ``(0, 1]``; a bad prompt; the tree would not fit the model's context
            (``prompt + num_beams * max_steps`` tokens, all physically in one sequence);
            NaN or ``+inf`` logits.
    """
    check_rotary(model)
    max_steps, num_beams = _count("max_steps", max_steps), _count("num_beams", num_beams)
    lp = _real("length_penalty", length_penalty, -float("inf"), float("inf"))
    tau = candidate_threshold_value(candidate_threshold)
    ids = encode_prompt(model, prompt)
    n_ctx = max_context(model)
    if len(ids) + num_beams * max_steps > n_ctx:
        raise ValueError(
            f"tree beam search keeps every beam in one sequence: prompt ({len(ids)}) + "
            f"num_beams ({num_beams}) * max_steps ({max_steps}) tokens exceed the model's "
            f"context of {n_ctx}"
        )
    eos = eos_token_id(model) if stop_at_eos else None
    rules = BeamRules(
        num_beams=num_beams, length_penalty=lp, eos=eos, n_max=max_steps, candidate_threshold=tau
    )
    state = SequenceState(ids, isolate=True)
    fwd = BatchForward(model, [state], use_kv_cache=True, observers=_observers(observers))
    records: list[StepRecord] = []
    last = [len(ids) - 1]  # physical index of each running beam's last token
    n_forwards, n_tokens = 1, len(ids)
    with fwd.attached():
        logits = fwd.run([list(range(len(ids)))], -1)[0][-1:]
        for step in range(max_steps):
            parents = rules.advance(step, logits)
            if parents is None:
                break
            beams = rules.running
            idx = state.append_set(
                [b.tokens[-1] for b in beams], parents=[last[p] for p in parents]
            )
            records.append(
                _record(
                    step,
                    "tree_beam",
                    [b.tokens[-1] for b in beams],
                    idx,
                    [b.probs[-1] for b in beams],
                )
            )
            last = idx
            logits = fwd.run([idx], step)[0]
            n_forwards, n_tokens = n_forwards + 1, n_tokens + len(idx)
    tokens, probs, stop, extra = rules.outcome(context_bound=False)
    path = _path_of(state, tokens)
    if len(path) < len(tokens) - 1:  # every forwarded beam token is in the tree
        raise AssertionError(f"the best hypothesis is not a path of the tree: {tokens}")
    if len(path) < len(tokens):  # the last token was chosen but never needed a forward
        parent = path[-1] if path else len(ids) - 1
        idx = state.append_set([tokens[-1]], parents=[parent])
        records.append(_record(state.n_steps - 1, "tree_beam", [tokens[-1]], idx, probs[-1:]))
        path += idx
    keep = set(path)
    for i in range(len(ids), len(state)):
        if i not in keep:
            state.prune(i, at_step=state.n_steps - 1)
    config: dict[str, Any] = {"max_steps": max_steps, "num_beams": num_beams, "length_penalty": lp}
    if tau is not None:
        config["candidate_threshold"] = tau
    trace = _tree_trace(model, prompt, state, records, "tree_beam", config, stop, extra)
    return TreeBeamResult(list(tokens), stop, extra["beams"], trace, n_forwards, n_tokens)


def _path_of(state: SequenceState, tokens: Sequence[int]) -> list[int]:
    """Physical indices of the tree path spelling ``tokens`` from the prompt.

    As far as the tree has it: at depth ``d`` the member of set ``d`` whose parent is the
    path's previous token and whose id is ``tokens[d]`` (unique: beams are distinct
    sequences).
    """
    path: list[int] = []
    parent = state.prompt_length - 1
    for d, tok in enumerate(tokens):
        if d >= state.n_steps:
            break
        hits = [
            i
            for i in state.set_indices[d]
            if state.parents[i] == parent and state.token_ids[i] == tok
        ]
        if not hits:
            break
        parent = hits[0]
        path.append(parent)
    return path


def ngram_draft(
    context: Sequence[int], *, max_ngram: int = 3, branches: int = 4, depth: int = 5
) -> tuple[list[int], list[int]]:
    """The n-gram draft tree under the last token of ``context`` (see the module docstring).

    Args:
        context: Prompt, output so far, and the root (the next greedy token) last.
        max_ngram: Longest suffix matched.
        branches: Most distinct proposals merged into the trie.
        depth: Tokens per proposal (the tree's depth below the root).

    Returns:
        ``(token_ids, parents)`` of the draft nodes in trie order; a parent is ``0`` for
        the root and ``k + 1`` for the ``k``-th draft node (parents come first).

    Raises:
        ValueError: ``context`` is empty, or a count is not an int ``>= 1``.

    Examples:
        >>> ngram_draft([5, 6, 7, 5, 6, 8, 5, 6], max_ngram=2, branches=2, depth=2)
        ([8, 5, 7, 5], [0, 1, 0, 3])
    """
    max_ngram, branches = _count("max_ngram", max_ngram), _count("branches", branches)
    depth = _count("depth", depth)
    ctx = [int(t) for t in context]
    if not ctx:
        raise ValueError("ngram_draft needs a non-empty context (ending with the root)")
    proposals: list[tuple[int, ...]] = []
    for n in range(min(max_ngram, len(ctx) - 1), 0, -1):
        suffix = ctx[-n:]
        for j in range(len(ctx) - n - 1, -1, -1):
            if ctx[j : j + n] == suffix:
                prop = tuple(ctx[j + n : j + n + depth])
                if prop and prop not in proposals:
                    proposals.append(prop)
                    if len(proposals) >= branches:
                        break
        if len(proposals) >= branches:
            break
    tokens: list[int] = []
    parents: list[int] = []
    children: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
    for prop in proposals:
        node = 0
        for tok in prop:
            nxt = children.get((node, tok))
            if nxt is None:
                tokens.append(tok)
                parents.append(node)
                nxt = len(tokens)
                children[(node, tok)] = nxt
            node = nxt
    return tokens, parents


DraftFn = Callable[[list[int], int], tuple[list[int], list[int]]]
"""A drafter: ``(context ending with the root, depth) -> (token_ids, parents)``."""


def _checked_draft(drafted: tuple[list[int], list[int]], depth: int) -> tuple[list[int], list[int]]:
    """A drafter's tree, checked (parents before children) and cut at ``depth`` levels.

    Raises:
        ValueError: Token and parent lists of different lengths, or a parent that is not
            the root (0) or an earlier node.
    """
    tokens, parents = [int(t) for t in drafted[0]], [int(p) for p in drafted[1]]
    if len(tokens) != len(parents):
        raise ValueError(f"draft: {len(tokens)} tokens but {len(parents)} parents")
    levels = [0]
    keep_t, keep_p, new_id = [], [], {0: 0}
    for k, (t, p) in enumerate(zip(tokens, parents, strict=True)):
        if not 0 <= p <= k:
            raise ValueError(f"draft: node {k + 1} has parent {p}, not the root or an earlier node")
        levels.append(levels[p] + 1)
        if levels[-1] <= depth and p in new_id:
            keep_t.append(t)
            keep_p.append(new_id[p])
            new_id[k + 1] = len(keep_t)
    return keep_t, keep_p


def _greedy(logits: torch.Tensor) -> tuple[int, float]:
    """Greedy's choice and its probability, as ``greedy`` takes it.

    The argmax of the probabilities (ties: lowest id); NaN / ``+inf`` logits refused.
    """
    probs = probabilities(logits)
    tok = int(torch.argmax(probs))
    return tok, float(probs[tok])


def tree_speculative(
    model: TempoModel,
    prompt: PromptLike,
    *,
    max_steps: IntLike,
    max_ngram: IntLike = 3,
    branches: IntLike = 4,
    depth: IntLike = 5,
    stop_at_eos: BoolLike = True,
    observers: Sequence[StepObserver] = (),
    draft: DraftFn | None = None,
) -> TreeSpecResult:
    """Lossless tree speculative decoding: greedy output, a draft tree per forward.

    The draft is :func:`ngram_draft` (n-gram candidates from the prompt and the output,
    several branches) under the next greedy token; one forward verifies the whole tree
    under the tree mask (each node at logical position = its depth after the accepted
    text, seeing only its ancestors), and the longest branch agreeing with greedy is
    accepted (see the module docstring). Rejected nodes stay in the one KV cache,
    invisible to everything after them, and are soft-pruned in the record. They keep their
    sequence slots, so near the end of the context the generation can stop
    (``stop_reason == "context"``) before greedy's would: its tokens are then a prefix of
    greedy's.

    Args:
        model: A rotary ``HookedTransformer`` or ``TransformerBridge`` (with a tokenizer
            if ``prompt`` is text).
        prompt: Text, or token ids.
        max_steps: Number of tokens to generate (``>= 1``), as for :func:`~tempo_lens.greedy`.
        max_ngram: Longest suffix the draft matches (``>= 1``).
        branches: Most draft branches per forward (``>= 1``).
        depth: Draft tokens per branch (``>= 1``).
        stop_at_eos: Stop when greedy would choose EOS (not appended).
        observers: Step observers (e.g. :class:`~tempo_lens.AttentionCapture`); forward
            ``s`` (root and draft) is recorded as step ``s``.
        draft: Another drafter: ``draft(context, depth) -> (token_ids, parents)`` in the
            form :func:`ngram_draft` returns (``context`` ends with the root; at most
            ``depth`` levels are used). Default: :func:`ngram_draft` with ``max_ngram``,
            ``branches``, ``depth``. Any draft gives greedy's output; only speed differs.

    Returns:
        A :class:`TreeSpecResult`: the output (equal to ``greedy(...).clean_ids()``),
        forwards, tokens accepted per forward, and the trees as a trace.

    Raises:
        ValueError: A count < 1; a bad prompt; NaN or ``+inf`` logits. Near the end of
        the context the trees are cut (rejected nodes take physical room): the stop
        reason is then ``"context"``, possibly earlier than greedy's.
    """
    check_rotary(model)
    max_steps = _count("max_steps", max_steps)
    max_ngram, branches = _count("max_ngram", max_ngram), _count("branches", branches)
    depth = _count("depth", depth)
    ids = encode_prompt(model, prompt)
    eos = eos_token_id(model) if stop_at_eos else None
    n_ctx = max_context(model)
    state = SequenceState(ids, isolate=True)
    fwd = BatchForward(model, [state], use_kv_cache=True, observers=_observers(observers))
    out: list[int] = []
    accepted: list[int] = []
    drafted: list[int] = []
    records: list[StepRecord] = []
    last = len(ids) - 1
    stop = "max_steps"
    with fwd.attached():
        root, root_p = _greedy(fwd.run([list(range(len(ids)))], -1)[0][-1])
        while len(out) < max_steps:
            if eos is not None and root == eos:
                stop = "eos"
                break
            room = n_ctx - len(state)
            if len(ids) + len(out) + 1 > n_ctx or room < 1:
                stop = "context"
                break
            if len(out) + 1 == max_steps:  # greedy's last token needs no forward
                idx = state.append_set([root], parents=[last])
                records.append(_record(state.n_steps - 1, "tree_spec", [root], idx, [root_p]))
                out.append(root)
                break
            want = min(depth, max_steps - len(out) - 1)
            context = ids + out + [root]
            if draft is None:
                tokens, parents = ngram_draft(
                    context, max_ngram=max_ngram, branches=branches, depth=want
                )
            else:
                tokens, parents = _checked_draft(draft(context, want), want)
            keep = min(len(tokens), room - 1)
            tokens, parents = tokens[:keep], parents[:keep]  # parents precede children
            first = len(state)
            idx = state.append_set([root, *tokens], parents=[last] + [first + p for p in parents])
            step = state.n_steps - 1
            logits = fwd.run([idx], step)[0]
            node_p = torch.softmax(logits.to(torch.float64), dim=-1)  # p(node | its ancestors)
            probs = [root_p] + [float(node_p[p, t]) for p, t in zip(parents, tokens, strict=True)]
            records.append(_record(step, "tree_spec", [root, *tokens], idx, probs))
            children = {(p, t): k + 1 for k, (p, t) in enumerate(zip(parents, tokens, strict=True))}
            node, path = 0, [0]
            nxt, nxt_p = _greedy(logits[0])
            while len(out) + len(path) < max_steps and (eos is None or nxt != eos):
                child = children.get((node, nxt))
                if child is None:
                    break
                node = child
                path.append(node)
                nxt, nxt_p = _greedy(logits[node])
            out += [state.token_ids[idx[k]] for k in path]
            accepted.append(len(path))
            drafted.append(len(tokens))
            on_path = {idx[k] for k in path}
            for i in idx:
                if i not in on_path:
                    state.prune(i, at_step=step)
            last, root, root_p = idx[path[-1]], nxt, nxt_p
    config = {
        "max_steps": max_steps,
        "max_ngram": max_ngram,
        "branches": branches,
        "depth": depth,
    }
    extra = {"accepted": accepted, "drafted": drafted}
    trace = _tree_trace(model, prompt, state, records, "tree_spec", config, stop, extra)
    return TreeSpecResult(out, stop, trace, 1 + len(accepted), accepted, drafted)
