"""Prompt encoding and token text for models with or without a tokenizer.

Models without a tokenizer (e.g. :func:`tempo_lens.make_tiny_model`) take prompts as
token ids and render token ``i`` as ``<i>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformer_lens import HookedTransformer

__all__ = ["encode_prompt", "eos_token_id", "token_text"]


def encode_prompt(model: HookedTransformer, prompt: str | Sequence[int]) -> list[int]:
    """Token ids of a prompt (text through ``model.to_tokens``; ids are validated)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        if model.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass the prompt as a list of token ids")
        return [int(t) for t in model.to_tokens(prompt)[0].tolist()]
    ids = [int(t) for t in prompt]
    if not ids:
        raise ValueError("the prompt is empty")
    bad = [t for t in ids if not 0 <= t < model.cfg.d_vocab]
    if bad:
        raise ValueError(f"token ids out of range [0, {model.cfg.d_vocab}): {bad[:5]}")
    return ids


def parse_token_ids(text: str) -> list[int]:
    """``"3 14 15"`` or ``"3,14,15"`` -> ``[3, 14, 15]``.

    Raises:
        ValueError: ``text`` is not a list of integers.
    """
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(
            f"this model has no tokenizer: give prompts as token ids, got {text!r}"
        ) from None
    if not ids:
        raise ValueError(f"empty prompt {text!r}")
    return ids


def prompt_input(model: HookedTransformer, text: str) -> str | list[int]:
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


def token_text(model: HookedTransformer, token_id: int) -> str:
    """The text of one token (``<id>`` without a tokenizer)."""
    if model.tokenizer is None:
        return f"<{token_id}>"
    return str(model.tokenizer.decode([token_id]))


def eos_token_id(model: HookedTransformer) -> int | None:
    """The tokenizer's EOS id, or None."""
    if model.tokenizer is None:
        return None
    eos = getattr(model.tokenizer, "eos_token_id", None)
    return int(eos) if eos is not None else None
