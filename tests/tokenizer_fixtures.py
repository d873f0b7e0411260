"""Real tokenizers built with the ``tokenizers`` library for the tiny model (no downloads).

* :func:`metaspace_tokenizer` — a SentencePiece-style WordLevel tokenizer whose word
  boundaries live in the tokens (``▁The``) with a Metaspace pre-tokenizer and decoder;
* :func:`byte_tokenizer` — a byte-level BPE tokenizer without merges (one token per
  byte, like GPT-2/SmolLM2 on unseen text): multi-byte characters span several tokens.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tempo_lens.models.convert import attach_tokenizer

WORDS = ["<unk>", "</s>", "▁The", "▁cat", "▁sat", "▁on", "▁mat"]


def metaspace_tokenizer(
    words: list[str] = WORDS,
    *,
    eos: str | None = "</s>",
    pad: str | None = None,
    side: str = "right",
) -> PreTrainedTokenizerFast:
    """WordLevel over ``words`` (id = position) with Metaspace pre-tokenizer and decoder.

    ``eos=None`` gives a tokenizer without an EOS id (``attach_tokenizer`` then names an EOS
    token that is not in the vocabulary).
    """
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token=eos, pad_token=pad
    )
    hf.padding_side = side
    return hf


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with the 256 byte symbols and no merges (vocabulary of 256)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=None)


def with_tokenizer(model, tokenizer):
    """``model`` with ``tokenizer`` attached as-is (returns the model)."""
    attach_tokenizer(model, tokenizer)
    return model


def word_tokenizer(n: int = 64) -> PreTrainedTokenizerFast:
    """WordLevel over ``t0 .. t{n-1}`` (id = number), whitespace-split, no special tokens
    added on encode: the tiny architecture matrix's tokenizer (vocabulary 64)."""
    tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(n)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", eos_token=None)
