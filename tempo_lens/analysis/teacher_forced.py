"""Teacher-forced replay of a TEMPO trace, for interventions compared on the same tokens.

A :class:`Replay` fixes a generated trace as a :class:`~tempo_lens.SequenceState` and
measures what an intervention (any ``fwd_hooks``, e.g. head ablation or an attention bias)
changes, relative to the clean replay, in one batched forward of ``B`` copies:

* ``kl_parallel`` / ``kl_nonparallel``: mean KL(clean || intervened), in nats, of the
  distribution each step was selected from, over parallel steps (the set had > 1 member)
  and non-parallel steps;
* ``dwidth_parallel`` / ``dwidth_nonparallel``: mean change in the width that the trace's
  threshold would select from that distribution (:func:`tempo_lens.selection.select_from_probs`);
* ``dnll``: mean change of ``-log p`` of each step's top member (the clean path);
* ``dratio_late``: change in the parallel : non-parallel received-attention ratio at
  ``ratio_layers`` (per-token attention from later queries that may see the token, mean
  over heads and those layers; the non-parallel group is the generated singletons).

Differences are "intervened - clean". The replay is exact for traces generated without
pruning (the same logits as the generation loop; see ``tests/model/test_interventions.py``).

Examples:
    >>> import tempo_lens as tl
    >>> from tempo_lens.analysis.teacher_forced import Replay
    >>> model = tl.make_tiny_model()
    >>> trace = tl.generate(model, [3, 14, 15], selection_threshold=0.05, max_steps=3)
    >>> r = Replay(model, trace)
    >>> r.measure(1, [])[0]["kl_parallel"]
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tempo_lens.backends import backend_of, hook_name, layer_of, layer_windows
from tempo_lens.hooks import HookFn, attach
from tempo_lens.hooks.interventions import readout_positions, step_distributions
from tempo_lens.trace import Trace

__all__ = ["Replay"]


class Replay:
    """A trace replayed teacher-forced (see the module docstring).

    Args:
        model: The model the trace was generated with.
        trace: A TEMPO trace (its config gives threshold, readout and cap).
        ratio_layers: Layers of the received-attention ratio (default: the last third).

    Raises:
        ValueError: the trace has pruned tokens (teacher forcing would not replay it).
    """

    def __init__(self, model: Any, trace: Trace, ratio_layers: Sequence[int] | None = None) -> None:
        if any(t.pruned_at_step is not None for t in trace.tokens):
            raise ValueError("Replay needs a trace generated without pruning")
        self.model, self.trace = model, trace
        self._backend = backend_of(model)
        self.state = trace.to_state()
        st = self.state
        conf = trace.tempo_config
        if conf is None:
            raise ValueError(f"Replay needs a TEMPO trace, got method {trace.method!r}")
        self.config = conf
        self._isolation: dict[str, Any] = {  # partial isolation, as generated
            "isolate_layers": conf.isolate_layers,
            "isolate_heads": conf.isolate_heads,
        }
        self.member_probs = [
            [float(trace.tokens[i].probability or 0.0) for i in st.set_indices[s]]
            for s in range(st.n_steps)
        ]
        self.widths = np.array([len(s) for s in st.set_indices])
        self.top = [st.token_ids[s[0]] for s in st.set_indices]
        n_l = model.cfg.n_layers
        bad = [la for la in ratio_layers or () if not 0 <= la < n_l]
        if bad:
            raise ValueError(f"ratio_layers {bad} outside the model's {n_l} layers")
        self.ratio_layers = (
            list(ratio_layers)
            if ratio_layers is not None
            else list(range(n_l - max(1, n_l // 3), n_l))
        )
        steps = torch.tensor(st.steps)
        later = (steps[:, None] > steps[None, :]) & (steps[None, :] >= 0)
        self._windows = layer_windows(model)  # a sliding-window layer sees its window only
        self._vis = {w: (st.visibility(window=w) & later).double() for w in set(self._windows)}
        par = torch.tensor([st.is_parallel(i) for i in range(len(st))])
        self._groups = (par, (steps >= 0) & ~par)
        self._positions = readout_positions(st)
        self._layer_sums: dict[int, Tensor] = {}  # clean per-layer group means (ratio)
        names = {hook_name(la, "resid_pre") for la in range(n_l)}
        _, cache = self.run_with_cache(names_filter=lambda n: n in names)
        self._resid_pre = [cache[hook_name(la, "resid_pre")] for la in range(n_l)]
        self.clean = self.measure(1, [], _clean=True)[0]

    def run_with_cache(self, **kwargs: Any) -> tuple[Tensor, Any]:
        """``model.run_with_cache`` on the replayed sequence with the TEMPO hooks attached."""
        with torch.no_grad(), attach(self.model, self.state, **self._isolation):
            return self.model.run_with_cache(self.state.tokens_tensor(), **kwargs)

    def _ratio_hook(self, sums: Tensor, layer: int, clean: bool) -> Callable[[Tensor, Any], None]:
        def hook(pattern: Tensor, hook: Any) -> None:
            p = pattern.double().mean(1)  # batch query key
            vis = self._vis[self._windows[layer]]
            recv = (p * vis).sum(1) / vis.sum(0).clamp(min=1)  # batch key
            part = torch.stack(
                [
                    recv[:, m].mean(1) if bool(m.any()) else recv[:, 0] * math.nan
                    for m in self._groups
                ],
                dim=1,
            )
            if clean:
                self._layer_sums[layer] = part[0]
            sums.add_(part)

        return hook

    def measure(
        self,
        batch: int,
        fwd_hooks: Sequence[tuple[str, HookFn]],
        *,
        start_layer: int = 0,
        _clean: bool = False,
    ) -> list[dict[str, float]]:
        """Run ``batch`` copies with ``fwd_hooks`` (row ``b`` = intervention ``b``).

        Args:
            batch: Number of copies (one per intervention).
            fwd_hooks: The interventions' hooks.
            start_layer: First layer any hook changes: the forward starts there from the
                clean ``resid_pre`` (exact: earlier layers are untouched), which saves
                the cost of the layers before it.

        Raises:
            ValueError: ``batch < 1``, ``start_layer`` outside the model, or a hook the
                forward would skip (a block before ``start_layer``, the embedding).

        Returns:
            One dict per batch row with the metrics of the module docstring.
        """
        st, cfg = self.state, self.config
        n_l = self.model.cfg.n_layers
        if batch < 1:
            raise ValueError(f"measure needs batch >= 1 rows, got {batch}")
        if not 0 <= start_layer < n_l:
            raise ValueError(f"start_layer must be in [0, {n_l}), got {start_layer}")
        bad = sorted(  # a block before start_layer, or the embedding: both are skipped
            n
            for n, _ in fwd_hooks
            if n.startswith("hook_") or ((la := layer_of(n)) is not None and la < start_layer)
        )
        if bad:
            raise ValueError(
                f"hooks on {bad} act before start_layer={start_layer}: the forward starts "
                "there from the clean residual stream, so they would be ignored"
            )
        sums = torch.zeros(batch, 2, dtype=torch.float64)
        for la in self.ratio_layers:
            if la < start_layer:
                sums.add_(self._layer_sums[la])
        rec = [
            (hook_name(la, "pattern"), self._ratio_hook(sums, la, _clean))
            for la in self.ratio_layers
            if la >= start_layer
        ]
        x = self._resid_pre[start_layer].expand(batch, -1, -1)
        with (
            torch.no_grad(),
            attach(self.model, st, **self._isolation),
            self.model.hooks(fwd_hooks=[*fwd_hooks, *rec]),  # type: ignore[list-item]
        ):
            # only the rows the step distributions read are unembedded (it dominates)
            logits = self._backend.logits_from_layer(
                st.tokens_tensor().to(x.device), x, start_layer, self._positions
            )
        d = step_distributions(logits, st, self.member_probs, cfg.readout, self._positions)
        ratio = (sums[:, 0] / sums[:, 1]).numpy()  # sums of layer means: same ratio
        width, nll = self._width_nll(d)
        if _clean:
            self._dists, self._width, self._nll = d[0], width[0], nll[0]
            self._log_dists = d[0].clamp_min(1e-300).log()
            kl = np.zeros_like(nll)
        else:
            # KL(p || d) = sum p (log p - log d), in place on one buffer (exactly 0 for d = p)
            diff = d.clamp_min(1e-300).log_().neg_().add_(self._log_dists)
            kl = torch.einsum("sv,bsv->bs", self._dists, diff).cpu().numpy()
        par = self.widths > 1
        cols = {
            "kl_parallel": _row_means(kl, par),
            "kl_nonparallel": _row_means(kl, ~par),
            "dwidth_parallel": _row_means(width - self._width, par),
            "dwidth_nonparallel": _row_means(width - self._width, ~par),
            "dnll": _row_means(nll - self._nll, np.ones_like(par)),
            "ratio_late": ratio,
        }
        with np.errstate(invalid="ignore"):  # no parallel group: NaN ratios, as before
            cols["dratio_late"] = np.zeros(batch) if _clean else ratio - self.clean["ratio_late"]
        return [{k: float(v[b]) for k, v in cols.items()} for b in range(batch)]

    def _width_nll(self, d: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per row and step: the width tau selects (a count) and ``-log p`` of the top member.

        The width is the size :func:`tempo_lens.selection.select_from_probs` would return: the number
        of tokens with ``p >= tau`` (at least 1, the top-1 fallback; at most
        ``max_parallel``), so no sort over the vocabulary is needed.
        """
        cfg, n = self.config, self.state.n_steps
        taus = torch.tensor([float(cfg.threshold_at(s)) for s in range(n)], dtype=torch.float64)
        width = (d >= taus.to(d.device)[None, :, None]).sum(-1).clamp_min(1)
        if cfg.max_parallel is not None:
            width = width.clamp_max(cfg.max_parallel)
        top = d[:, torch.arange(n), torch.tensor(self.top)]
        nll = -torch.log(top.clamp_min(1e-300))
        return width.cpu().numpy(), nll.cpu().numpy()


def _row_means(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of each row of ``x`` over the columns in ``mask`` (NaN when none)."""
    if not mask.any():
        return np.full(x.shape[0], math.nan)
    return x[:, mask].astype(float).mean(1)
