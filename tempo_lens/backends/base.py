"""What every backend shares: the model and backend protocols, errors, hook names.

A *backend* is one way of running a rotary transformer with TransformerLens hook points:
``HookedTransformer`` (TransformerLens 3.x, :mod:`tempo_lens.backends.hooked`) or
``TransformerBridge`` around a Hugging Face model (3.9 and 4.x,
:mod:`tempo_lens.backends.bridge`). :class:`Backend` lists everything that differs between
them; :func:`tempo_lens.backends.backend_of` returns the one for a model. Everything here is
the same on both: hook names (TransformerLens' ``get_act_name``), hook registration on
``HookPoint`` objects, and the errors a model that TEMPO cannot handle raises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint

__all__ = [
    "Backend",
    "BackendBase",
    "HookPoint",
    "KVCache",
    "NotRotaryError",
    "TempoModel",
    "UnsupportedAttentionError",
    "add_permanent_hooks",
    "hook_functions",
    "hook_name",
    "is_attention_shaped",
    "layer_of",
    "model_name",
    "remove_hooks",
]


class TempoModel(Protocol):
    """A rotary model with TransformerLens hook points: what every ``model`` parameter takes.

    A ``HookedTransformer`` (TransformerLens 3.x) or a ``TransformerBridge`` around a rotary
    Hugging Face model (3.9 and 4.x). Structural: both classes satisfy it as they are, and
    attributes beyond the ones listed (``to_tokens``, ``run_with_cache``, ...) are typed
    ``Any`` through ``__getattr__`` (both are ``torch.nn.Module`` subclasses).
    """

    cfg: Any
    """The TransformerLens config (``n_layers``, ``n_heads``, ``d_head``, ``n_ctx``, ...)."""
    hook_dict: dict[str, Any]
    """Hook name -> TransformerLens ``HookPoint``."""
    blocks: Any
    """The transformer blocks, indexable by layer."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A forward: logits ``[batch, pos, d_vocab]``."""
        ...

    def __getattr__(self, name: str) -> Any:
        """Any other attribute (``to_tokens``, ``run_with_cache``, ...)."""
        ...


if not TYPE_CHECKING:
    # At run time (beartype checks annotations in the test suite) a ``model`` argument is
    # checked by the function itself (:func:`tempo_lens.backends.backend_of`), whose error
    # names what it got; the protocol above is for static type checkers.
    TempoModel = Any  # noqa: F811


KVCache: TypeAlias = Any
"""A backend's KV cache: TransformerLens' ``TransformerLensKeyValueCache``
(``HookedTransformer``) or a :class:`tempo_lens.backends.bridge.BridgeCache`
(``TransformerBridge``)."""


class NotRotaryError(ValueError):
    """The model does not use rotary position embeddings."""


class UnsupportedAttentionError(ValueError):
    """The model's attention has a variant the TEMPO hooks cannot reproduce exactly."""


@runtime_checkable
class Backend(Protocol):
    """Everything that differs between ``HookedTransformer`` and ``TransformerBridge``.

    One instance per model (:func:`tempo_lens.backends.backend_of`). A third backend (a
    plain Hugging Face model with hook points, say) is one new module with a class
    satisfying this protocol and one entry in :data:`tempo_lens.backends.BACKENDS`.
    """

    name: ClassVar[str]
    """``"hooked"`` or ``"bridge"``: the value ``load_model(backend=...)`` takes."""
    model: TempoModel
    keys_cached_rotated: ClassVar[bool]
    """True if the KV cache holds keys *after* ``hook_rot_k`` (the bridge: ``hook_rot_k``
    then sees only the new keys); False if keys are cached unrotated and re-rotated from
    position 0 every forward (``HookedTransformer``: ``hook_rot_k`` sees every key)."""

    def check(self) -> None:
        """Raise unless TEMPO can act on the model exactly.

        Raises:
            NotRotaryError: No RoPE, or length-dependent RoPE.
            UnsupportedAttentionError: An attention variant the hooks cannot reproduce.
        """

    def rotary_inv_freqs(self) -> list[Tensor]:
        """Per layer, RoPE inverse frequencies: float64 ``[rotary_dim // 2]``, rad/position."""

    def rotary_layout(self) -> tuple[int, bool]:
        """``(rotary_dim, adjacent_pairs)``: rotated dims per head, GPT-J pairing."""

    def attention_windows(self) -> list[int | None]:
        """Per layer, the sliding-window size in tokens (``None``: full attention)."""

    def physical_windows_disabled(self) -> AbstractContextManager[None]:
        """Within the block the model masks sliding layers causally only.

        TEMPO's mask hook then applies the window by logical distance.
        """

    def make_kv_cache(self, batch_size: int = 1) -> KVCache:
        """A fresh, empty KV cache."""

    def forward(
        self,
        tokens: Tensor,
        *,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[batch, pos, d_vocab]``; see :func:`tempo_lens.backends.forward`."""

    def max_context(self) -> int:
        """The model's maximum context length in tokens (``math.inf`` if unbounded)."""

    final_residual_hook: ClassVar[str]
    """The hook whose activation :meth:`unembed` turns into logits: the final residual
    stream after the final norm (``ln_final.hook_normalized`` on ``HookedTransformer``,
    whose final-norm weights are folded into the unembedding; ``ln_final.hook_out`` on a
    bridge)."""

    def pre_rotation_keys(self, layer: int, k: Tensor) -> Tensor:
        """The keys RoPE rotates, from ``hook_k`` activations ``[batch, pos, head_index, d_head]``.

        ``hook_k`` is the key projection; models with a key norm (Gemma 3, Qwen 3, OLMo 2)
        normalise it before the rotation, so an angle read between ``hook_k`` and
        ``hook_rot_k`` is not the rotation. Identity for models without one.
        """

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits ``[..., d_vocab]`` from :attr:`final_residual_hook` activations.

        ``resid`` is ``[..., d_model]``; the logits are what the model's forward computes
        (final-logit soft-capping included, e.g. Gemma 2).
        """

    def logit_lens(self, resid: Tensor) -> Tensor:
        """Logits ``[..., d_vocab]`` of the final norm and unembedding of residual vectors.

        ``resid`` is ``[..., d_model]``, a residual stream read anywhere (e.g. a block's
        ``hook_resid_post``); it goes through the model's own final norm (``ln_final``),
        unembedding and final-logit soft-capping, so for the last block's
        ``hook_resid_post`` the result is the model's logits (the logit lens).

        Raises:
            ValueError: the model has no final-norm component this backend can apply (the
                message names the backend).
        """

    def logits_from_layer(
        self, tokens: Tensor, resid_pre: Tensor, start_layer: int, positions: Sequence[int]
    ) -> Tensor:
        """Logits ``[batch, len(positions), d_vocab]`` of a forward from block ``start_layer``.

        The forward enters block ``start_layer`` with ``resid_pre`` ``[batch, pos,
        d_model]`` (the clean residual of ``tokens`` ``[1, pos]``); hooks attached by the
        caller apply. Exact: blocks before
        ``start_layer`` are not changed by those hooks. ``HookedTransformer`` skips them;
        a bridge reruns them from ``tokens`` (TransformerLens 3.9's bridge has no
        ``start_at_layer``; 4.x's runs the earlier blocks anyway).
        """


class BackendBase:
    """What every backend class shares: it holds its model; ``n_ctx`` bounds the context.

    Args:
        model: The model this backend object answers for.
    """

    name: ClassVar[str]

    def __init__(self, model: TempoModel) -> None:
        self.model = model

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {model_name(self.model)}>"

    def max_context(self) -> int:
        """The maximum context length in tokens (``cfg.n_ctx``; ``math.inf`` if 0)."""
        n = int(self.model.cfg.n_ctx)
        return n if n > 0 else math.inf  # type: ignore[return-value]


@runtime_checkable
class CacheOps(Protocol):
    """The KV-cache operations generation needs, for one backend's cache type."""

    def owns(self, cache: Any) -> bool: ...
    def length(self, cache: Any) -> int: ...
    def nbytes(self, cache: Any) -> int: ...
    def truncate(self, cache: Any, length: int) -> None: ...
    def reorder(self, cache: Any, batch_indices: Tensor, lengths: list[int] | None) -> None: ...
    def select(self, cache: Any, batch_indices: Tensor, positions: Tensor) -> None: ...
    def scratch(self, cache: Any, length: int) -> AbstractContextManager[None]: ...


def __getattr__(name: str) -> Any:
    """``HookPoint`` (re-exported), imported from TransformerLens on first access."""
    if name == "HookPoint":
        from transformer_lens.hook_points import HookPoint

        return HookPoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def hook_name(layer: int, name: str) -> str:
    """The full name of hook ``name`` of block ``layer``, e.g. ``blocks.3.attn.hook_pattern``.

    Built by TransformerLens' own ``get_act_name``, so its aliases work: ``"pattern"``,
    ``"attn_scores"``, ``"rot_q"``, ``"rot_k"``, ``"q"``, ``"k"``, ``"v"``, ``"z"`` give
    ``blocks.{layer}.attn.hook_*``; ``"resid_pre"``, ``"mlp_out"``, ... give
    ``blocks.{layer}.hook_*``. The same names on both backends.
    """
    from transformer_lens.utilities import get_act_name  # on first use: CLI help stays light

    return get_act_name(name, int(layer))


def is_attention_shaped(name: str) -> bool:
    """Whether hook ``name`` is ``[batch, head_index, query_pos, key_pos]`` (pattern, scores)."""
    return name.rsplit(".", 1)[-1] in ("hook_pattern", "hook_attn_scores")


def layer_of(name: str) -> int | None:
    """The block index of a hook name (``"blocks.3.attn.hook_pattern"`` -> 3), else None.

    The inverse of :func:`hook_name` for any hook inside a block; names outside the
    blocks (``hook_embed``, ``ln_final.hook_normalized``) give ``None``.
    """
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def model_name(model: TempoModel) -> str:
    """A human-readable name for the model (``cfg.model_name``)."""
    return str(getattr(model.cfg, "model_name", "") or "custom")


def hook_functions(hook_point: Any) -> list[Any]:
    """The user functions of the forward hooks registered on a ``HookPoint`` (in order)."""
    return [getattr(h, "user_hook", None) for h in getattr(hook_point, "fwd_hooks", [])]


def add_permanent_hooks(model: Any, fwd_hooks: list[tuple[str, Any]]) -> list[tuple[Any, Any]]:
    """Register ``fwd_hooks`` as *permanent* TransformerLens hooks.

    ``model`` is a ``HookedTransformer`` or a ``TransformerBridge`` (both have
    ``hook_dict`` of TransformerLens ``HookPoint`` objects).

    ``reset_hooks()`` with its default ``including_permanent=False`` keeps them. Returns
    ``(hook_point, handle)`` pairs for :func:`remove_hooks`.
    """
    added = []
    for name, fn in fwd_hooks:
        hp = model.hook_dict[name]
        hp.add_hook(fn, dir="fwd", is_permanent=True)
        added.append((hp, hp.fwd_hooks[-1]))
    return added


def remove_hooks(added: list[tuple[Any, Any]]) -> int:
    """Remove hooks registered by :func:`add_permanent_hooks`.

    Returns how many were no longer registered (removed by someone else in the meantime).
    """
    missing = 0
    for hp, handle in added:
        if any(h is handle for h in hp.fwd_hooks):
            handle.hook.remove()
            hp.fwd_hooks = [h for h in hp.fwd_hooks if h is not handle]
        else:
            missing += 1
    return missing
