"""Prompt encoding and token text for models with or without a tokenizer.

Models without a tokenizer (e.g. :func:`tempo_lens.make_tiny_model`) take prompts as
token ids and render token ``i`` as ``<i>``.

Token text is decoded **in context**, never one token at a time: a token's text is what it
adds to the decoded text before it (incremental decoding, as text-generation servers
stream it). Decoding a token alone loses SentencePiece/Metaspace word boundaries (``▁cat``
alone decodes to ``cat``) and turns a character split across byte tokens into U+FFFD.
:func:`sequence_texts` applies the rule to a whole generation:

* the prompt and the *clean path* (the top surviving member of each step) are decoded
  incrementally, so ``prompt text + clean member texts == tokenizer.decode(prompt_ids +
  clean_ids)``. A token that ends inside a character (an incomplete byte sequence) gets
  ``""`` and the character goes to the token that completes it;
* any other member or candidate of step ``s`` gets what it adds to the clean text before
  step ``s``; if it ends inside a character itself (its continuation is not in the text),
  it shows its vocabulary entry (``tokenizer.convert_ids_to_tokens``) instead of U+FFFD.

Example:
    >>> from tempo_lens import make_tiny_model
    >>> encode_prompt(make_tiny_model(), [[1, 2, 3]])
    [1, 2, 3]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from tempo_lens.backends import TempoModel, max_context
from tempo_lens.prompts import PromptLike, parse_token_ids, prompt_token_ids
from tempo_lens.trace import Candidate, Trace

__all__ = [
    "check_prompt_fits",
    "encode_prompt",
    "eos_token_id",
    "label_texts",
    "prompt_input",
    "sequence_texts",
    "token_text",
]

REPLACEMENT = "\ufffd"


def encode_prompt(model: TempoModel, prompt: PromptLike) -> list[int]:
    """Token ids of a prompt, checked to fit the model's context.

    Args:
        model: The model (its tokenizer encodes text prompts).
        prompt: Text (never truncated), or token ids: a list, a 1-D tensor/array or a
            ``[1, pos]`` one such as ``model.to_tokens(text)``.

    Raises:
        ValueError: Empty prompt, a text prompt without a tokenizer, a shape that is not
            one prompt, ids outside the vocabulary, or a prompt that leaves no room in the
            model's context (``cfg.n_ctx``) for one generated token.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        if model.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass the prompt as a list of token ids")
        ids = [int(t) for t in model.to_tokens(prompt, truncate=False)[0].tolist()]
    else:
        ids = prompt_token_ids(prompt)
    if not ids:
        raise ValueError("the prompt is empty")
    bad = [t for t in ids if not 0 <= t < model.cfg.d_vocab]
    if bad:
        raise ValueError(f"token ids out of range [0, {model.cfg.d_vocab}): {bad[:5]}")
    check_prompt_fits(model, len(ids))
    return ids


def prompt_input(model: TempoModel, text: str) -> str | list[int]:
    """What a prompt written as text (command line, prompts file) means for ``model``.

    The text itself for a model with a tokenizer; for a model without one (the tiny test
    model) the token ids it spells, ``"3 14 15"`` or ``"3,14,15"``. Pass the result to
    :func:`tempo_lens.generate` or :func:`encode_prompt`.

    Raises:
        ValueError: An empty prompt, or not token ids for a model without tokenizer.
    """
    if not text.strip():
        raise ValueError("the prompt is empty")
    if getattr(model, "tokenizer", None) is None:
        return parse_token_ids(text)
    return text


def check_prompt_fits(model: TempoModel, n_prompt: int) -> None:
    """Raise ``ValueError`` unless a prompt of ``n_prompt`` tokens leaves room for one more."""
    limit = max_context(model)
    if n_prompt + 1 > limit:
        raise ValueError(
            f"the prompt has {n_prompt} tokens but the model's context is {limit} tokens "
            f"(cfg.n_ctx): at most {limit - 1} prompt tokens leave room to generate"
        )


def token_text(model: TempoModel, token_id: int) -> str:
    """The text of one token decoded alone (``<id>`` without a tokenizer).

    Context-free, so only right for labels of a vocabulary entry; the text a token adds to
    a sequence comes from :func:`sequence_texts`.
    """
    if model.tokenizer is None:
        return f"<{token_id}>"
    return str(model.tokenizer.decode([token_id]))


def eos_token_id(model: TempoModel) -> int | None:
    """The tokenizer's EOS id, or None.

    None without a tokenizer, without an EOS, or for an id outside the model's vocabulary
    (e.g. an EOS token the tokenizer added after the model was built).
    """
    if model.tokenizer is None:
        return None
    eos = getattr(model.tokenizer, "eos_token_id", None)
    if eos is None or not 0 <= int(eos) < model.cfg.d_vocab:
        return None
    return int(eos)


class _Incremental:
    """Incremental decoding of one token sequence (prefix/read offsets, as in vLLM).

    ``texts[i]`` is what token ``i`` adds to the text of tokens ``< i``; text of a token
    that ends inside a character is deferred to the token that completes it.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self.texts: list[str] = []
        self.prefix = 0  # first token of the decoding window
        self.read = 0  # tokens whose text has been emitted

    def push(self, token_id: int, *, last: bool = False) -> None:
        self.ids.append(int(token_id))
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if not last and (after.endswith(REPLACEMENT) or not after.startswith(before)):
            self.texts.append("")  # incomplete character: wait for the next token
            return
        self.texts.append(_added(before, after))
        self.prefix, self.read = self.read, len(self.ids)

    def added_by(self, token_id: int, fallback: Callable[[int], str]) -> str:
        """What ``token_id`` would add after the tokens pushed so far."""
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :] + [int(token_id)])
        text = _added(before, after)
        if text.endswith(REPLACEMENT):
            return fallback(token_id)
        return text


def _added(before: str, after: str) -> str:
    if after.startswith(before):
        return after[len(before) :]
    common = 0  # decoders that rewrite earlier text (clean-up of spaces): keep the new tail
    while common < min(len(before), len(after)) and before[common] == after[common]:
        common += 1
    return after[common:]


def sequence_texts(
    model: TempoModel,
    prompt_ids: Sequence[int],
    clean_ids: Sequence[int],
    others: Sequence[Sequence[int]] = (),
) -> tuple[list[str], list[str], list[dict[int, str]]]:
    """Token texts of a generation, decoded in context (see the module docstring).

    Args:
        model: The model (without a tokenizer every token is ``<id>``).
        prompt_ids: Prompt token ids.
        clean_ids: The clean path: one token id per step.
        others: Per step, further token ids (other members, candidates) whose text is
            what they add to the clean text before that step.

    Returns:
        ``(prompt_texts, clean_texts, other_texts)``: one string per prompt token, one per
        clean token, and per step a ``token_id -> text`` mapping for ``others``.
    """
    tok = model.tokenizer
    if tok is None:
        return (
            [f"<{t}>" for t in prompt_ids],
            [f"<{t}>" for t in clean_ids],
            [{int(t): f"<{t}>" for t in ids} for ids in others],
        )

    def decode(ids: list[int]) -> str:
        return str(tok.decode(ids)) if ids else ""

    def raw(token_id: int) -> str:
        return str(tok.convert_ids_to_tokens(int(token_id)))

    seq = [int(t) for t in prompt_ids] + [int(t) for t in clean_ids]
    inc = _Incremental(decode)
    n_prompt = len(prompt_ids)
    other_texts: list[dict[int, str]] = []
    for i, t in enumerate(seq):
        step = i - n_prompt
        if 0 <= step < len(others):
            other_texts.append({int(o): inc.added_by(o, raw) for o in others[step]})
        inc.push(t, last=i == len(seq) - 1)
    return inc.texts[:n_prompt], inc.texts[n_prompt:], other_texts


def label_texts(trace: Trace, model: TempoModel) -> Trace:
    """``trace`` with every text decoded in context by :func:`sequence_texts`.

    Token, candidate, prefiltered and pruning-decision texts are replaced; ids,
    probabilities and indices are kept.
    """
    ids = trace.state.token_ids
    n = trace.prompt_length
    clean = trace.clean_indices()
    if trace.state.is_tree:  # the output path in context, every other node alone
        prompt_texts, clean_texts, _ = sequence_texts(model, ids[:n], [ids[i] for i in clean])
        texts = prompt_texts + [token_text(model, t) for t in ids[n:]]
        for k, i in enumerate(clean):
            texts[i] = clean_texts[k]
        return dataclasses.replace(trace, texts=texts)
    others = [
        [ids[i] for i in rec.indices] + [c.token_id for c in [*rec.candidates, *rec.prefiltered]]
        for rec in trace.steps
    ]
    prompt_texts, clean_texts, other_texts = sequence_texts(
        model, ids[:n], [ids[i] for i in clean], others
    )
    texts = prompt_texts + [""] * (len(ids) - n)
    for s, rec in enumerate(trace.steps):
        for i in rec.indices:
            texts[i] = other_texts[s][ids[i]]
    for s, i in enumerate(clean):
        texts[i] = clean_texts[s]
    steps = []
    for s, rec in enumerate(trace.steps):
        by_id = {**other_texts[s], ids[clean[s]]: clean_texts[s]}

        def relabel(cands: list[Candidate], by_id: dict[int, str] = by_id) -> list[Candidate]:
            return [dataclasses.replace(c, text=by_id[c.token_id]) for c in cands]

        steps.append(
            dataclasses.replace(
                rec,
                candidates=relabel(rec.candidates),
                prefiltered=relabel(rec.prefiltered),
                pruning=[dataclasses.replace(p, text=texts[p.index]) for p in rec.pruning],
            )
        )
    return dataclasses.replace(trace, texts=texts, steps=steps)
