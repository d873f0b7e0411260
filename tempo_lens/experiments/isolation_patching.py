"""RQ 2.1 / 6.2: which layers and heads carry sibling information? Visible -> isolated patching.

Per prompt TEMPO generates once (isolated, no pruning); the same token sequence is then
run twice teacher-forced: isolated (members cannot see their siblings) and visible (they
can). Activations of the visible run are patched into the isolated run (inside
:func:`tempo_lens.attach`): the residual stream ``resid_pre`` of one layer at all
positions, and the output ``z`` of one head at all positions. The patches of one layer are
batch rows of one forward that starts at that layer; the results equal TransformerLens'
own activation patching (``patching.generic_activation_patch`` and
``get_act_patch_attn_head_out_all_pos``, one forward per patch), which a test runs as the
oracle. Metric: recovery of the visible run's step
distributions (:func:`tempo_lens.hooks.interventions.step_distributions`),
``1 - KL(vis || patched) / KL(vis || iso)`` with KL summed over the steps after the
first parallel set; 1 = the patch carries all the sibling information, 0 = none.

Head-to-head path patching (RQ 6.2, "information routing"; ``--path-heads``, e.g. the top
heads of a first run): for every ordered pair (A, B) of the given heads with A in an
earlier layer, A's visible output is patched into only the query, key or value input (or
all three) of B in the isolated run (:func:`tempo_lens.hooks.interventions.path_patching`);
same recovery metric. Table ``paths``.

Summary: per layer and per (layer, head), the mean recovery over prompts with a
bootstrap CI; the heads with the largest recovery; a layer x head map; per path-patched
(sender, receiver, path) the mean recovery with its CI.

Example::

    python -m tempo_lens.experiments.isolation_patching --tiny --quick --output-dir /tmp/ip
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import tempo_lens as tl
from tempo_lens.analysis import estimate
from tempo_lens.analysis.replay import replay_state
from tempo_lens.backends import backend_of, hook_name
from tempo_lens.display.experiment_figures import layer_head_heatmaps_figure
from tempo_lens.experiments._common import ReplayConfig, fmt_estimate
from tempo_lens.hooks.interventions import (
    Workspace,
    head_patch_hooks,
    path_patching,
    readout_positions,
    step_distributions,
)
from tempo_lens.io import atomic_write_text
from tempo_lens.runner import ExperimentSpec, Unit, encode
from tempo_lens.runner.cli import run_cli


@dataclass(frozen=True, kw_only=True)
class Config(ReplayConfig):
    """Patching settings (generation settings apply to the isolated trace).

    Attributes:
        heads: Also patch every head's output (the heads of a layer in one forward).
        path_heads: Heads (``L5H5``) for head-to-head path patching: every ordered pair
            (A, B), A in an earlier layer, A -> B through q, k, v and all three.
    """

    heads: bool = True
    path_heads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_heads(self.path_heads)


def parse_heads(names: Sequence[str]) -> list[tuple[int, int]]:
    """``["L5H5", "L2H1"]`` -> ``[(5, 5), (2, 1)]``.

    Raises:
        ValueError: a name not of the form ``L<layer>H<head>``, or a repeated head.
    """
    out = []
    for name in names:
        m = re.fullmatch(r"L(\d+)H(\d+)", name.strip())
        if m is None:
            raise ValueError(f"path_heads: {name!r} is not a head name like L5H5")
        out.append((int(m.group(1)), int(m.group(2))))
    if len(set(out)) != len(out):
        raise ValueError(f"path_heads: repeated head in {list(names)}")
    return out


def recovery_metric(
    vis_logits: torch.Tensor,
    iso_logits: torch.Tensor,
    state: Any,
    probs: list[list[float]],
    readout: str,
    positions: Sequence[int] | None = None,
) -> Any:
    """The recovery metric ``logits -> 1 - KL(vis || patched) / KL(vis || iso)``, per row.

    KL is summed over the steps after the first parallel set. All logits hold the
    ``positions`` rows (default: every position; see
    :func:`~tempo_lens.hooks.interventions.step_distributions`). The metric maps
    ``[batch, pos, d_vocab]`` logits to a ``[batch]`` tensor.
    """
    first = next(s for s, m in enumerate(state.set_indices) if len(m) > 1) + 1
    work = Workspace()  # one full-vocabulary buffer for every call (no page faults per call)

    def kl(logits: torch.Tensor) -> torch.Tensor:
        q = step_distributions(logits, state, probs, readout, positions, workspace=work)
        # KL(p || q) = sum p (log p - log q), in place on the workspace buffer
        diff = q[:, first:].clamp_min_(1e-300).log_().neg_().add_(log_p)
        return torch.einsum("sv,bsv->b", p, diff)

    p = step_distributions(vis_logits, state, probs, readout, positions)[0, first:]
    log_p = p.clamp_min(1e-300).log()
    base = kl(iso_logits)
    return lambda logits: 1 - kl(logits) / base


def run_unit(cfg: Config, model: Any, unit: Unit) -> dict[str, list[dict[str, Any]]]:
    """Patch visible into isolated for one prompt: per layer (resid_pre) and per head (z).

    Every patch is a batch row of a forward that starts at the patched layer from the
    isolated run's residual stream and unembeds only the positions the step distributions
    read: the layer's ``n_heads`` head patches share one forward
    (:func:`~tempo_lens.hooks.interventions.head_patch_hooks`); a ``resid_pre`` patch
    replaces the layer's input with the visible run's (a ``hook_resid_pre`` hook, so a
    backend that reruns the earlier blocks patches the same point). The result equals TransformerLens'
    one-forward-per-patch ``patching`` functions (``tests/model/test_intervention_batching.py``).
    """
    _model_heads(cfg, model)  # a head outside the model fails before any work
    trace = tl.generate(model, encode(model, unit.prompt), cfg.tempo_config(prune=None))
    iso = trace.to_state()
    sets = [[iso.token_ids[i] for i in s] for s in iso.set_indices]
    empty: dict[str, list[dict[str, Any]]] = {"patching": []}
    if cfg.path_heads:
        empty["paths"] = []
    if not any(len(s) > 1 for s in sets[:-1]):
        return empty
    vis = replay_state(trace, isolate=False)
    probs = [[float(trace.tokens[i].probability or 0.0) for i in s] for s in iso.set_indices]
    toks = iso.tokens_tensor()
    n_l, n_h = model.cfg.n_layers, model.cfg.n_heads
    names = {hook_name(la, k) for la in range(n_l) for k in ("z", "resid_pre")}
    backend, pos = backend_of(model), readout_positions(iso)
    with torch.no_grad():
        with tl.attach(model, vis):
            vis_logits, vis_cache = model.run_with_cache(toks, names_filter=names.__contains__)
        with tl.attach(model, iso):
            iso_logits, iso_cache = model.run_with_cache(toks, names_filter=names.__contains__)
            metric = recovery_metric(
                vis_logits[:, pos], iso_logits[:, pos], iso, probs, cfg.readout, pos
            )
            rows = []
            for la in range(n_l):  # from the isolated run's layer la, its input replaced
                name = hook_name(la, "resid_pre")
                x, source = iso_cache[name], vis_cache[name]
                with model.hooks(fwd_hooks=[(name, lambda r, hook, v=source: v.to(r))]):
                    rec = metric(backend.logits_from_layer(toks, x, la, pos))
                rows.append(
                    {"kind": "resid_pre", "layer": la, "head": -1, "recovery": float(rec[0])}
                )
            for la in range(n_l) if cfg.heads else ():
                source = {la: vis_cache[hook_name(la, "z")][0]}
                for chunk in cfg.row_chunks([(la, h) for h in range(n_h)]):
                    x = iso_cache[hook_name(la, "resid_pre")].expand(len(chunk), -1, -1)
                    with model.hooks(fwd_hooks=head_patch_hooks(chunk, source)):
                        rec = metric(backend.logits_from_layer(toks, x, la, pos))
                    rows += [
                        {"kind": "z", "layer": la, "head": h, "recovery": float(rec[b])}
                        for b, (_, h) in enumerate(chunk)
                    ]
    out = {"patching": rows}
    if cfg.path_heads:
        full = recovery_metric(vis_logits, iso_logits, iso, probs, cfg.readout)
        out["paths"] = _path_rows(cfg, model, iso, toks, vis_cache, iso_cache, full)
    return out


def _model_heads(cfg: Config, model: Any) -> list[tuple[int, int]]:
    heads = parse_heads(cfg.path_heads)
    bad = [f"L{la}H{h}" for la, h in heads if la >= model.cfg.n_layers or h >= model.cfg.n_heads]
    if bad:
        raise ValueError(f"path_heads: {bad} outside the model ({model.cfg.n_layers} layers, "
                         f"{model.cfg.n_heads} heads)")  # fmt: skip
    return heads


def _path_rows(
    cfg: Config,
    model: Any,
    iso: Any,
    toks: torch.Tensor,
    vis_cache: Any,
    iso_cache: Any,
    metric: Any,
) -> list[dict[str, Any]]:
    """Recovery of every ordered head pair's path patch (see the module docstring)."""
    heads = _model_heads(cfg, model)
    rows = []
    for a in heads:
        for b in heads:
            if a[0] >= b[0]:
                continue
            paths = ("q", "k", "v", "qkv")  # the four variants as rows of one forward
            with (
                torch.no_grad(),
                tl.attach(model, iso),
                path_patching(
                    model, vis_cache, iso_cache, senders=[a], receivers=[b], paths=paths
                ),  # fmt: skip
            ):
                rec = metric(model(toks.expand(len(paths), -1)))
            for path, r in zip(paths, rec.tolist(), strict=True):
                rows.append(
                    {"sender": f"L{a[0]}H{a[1]}", "sender_layer": a[0], "receiver": f"L{b[0]}H{b[1]}",
                     "receiver_layer": b[0], "path": path, "recovery": r}
                )  # fmt: skip
    return rows


def summarize(cfg: Config, tables: dict[str, pd.DataFrame], out: Path) -> str:
    """Mean recovery per layer / head over prompts -> ``recovery.csv`` and a map."""
    df = tables.get("patching", pd.DataFrame(columns=["kind", "layer", "head", "recovery"]))
    rows = []
    for (kind, la, h), g in df.groupby(["kind", "layer", "head"], sort=True):
        e = estimate(g["recovery"].to_numpy(float), min_n=cfg.min_prompts, seed=cfg.seed)
        rows.append(
            {
                "kind": kind,
                "layer": la,
                "head": h,
                "recovery": e.mean,
                "ci_low": e.ci[0],
                "ci_high": e.ci[1],
                "n_prompts": e.n,
            }
        )
    res = pd.DataFrame(rows)
    atomic_write_text(out / "recovery.csv", res.to_csv(index=False))
    if res.empty:
        return "no prompt produced a parallel set before its last step: nothing to patch"
    lines = []
    z = res[res["kind"] == "z"]
    if len(z):
        layer_head_heatmaps_figure(z, ["recovery"], out / "isolation_patching.png", facet="kind")
        for r in z.sort_values("recovery", ascending=False).head(5).itertuples():
            e = estimate(
                df[(df["kind"] == "z") & (df["layer"] == r.layer) & (df["head"] == r.head)][
                    "recovery"
                ],
                min_n=cfg.min_prompts,
                seed=cfg.seed,
            )
            lines.append(f"head L{r.layer}H{r.head}: recovery {fmt_estimate(e)}")
    for r in res[res["kind"] == "resid_pre"].itertuples():
        lines.append(
            f"resid_pre layer {r.layer}: recovery {r.recovery:.3g} "
            f"[{r.ci_low:.3g}, {r.ci_high:.3g}] (n={r.n_prompts})"
        )
    paths = tables.get("paths")
    if paths is not None and len(paths):
        lines += _summarize_paths(cfg, paths, out)
    return "\n".join(lines)


def _summarize_paths(cfg: Config, paths: pd.DataFrame, out: Path) -> list[str]:
    """Per (sender, receiver, path): mean recovery over prompts -> ``path_recovery.csv``."""
    rows = []
    keys = ["sender", "receiver", "path"]
    for (snd, rcv, path), g in paths.groupby(keys, sort=True):
        e = estimate(g["recovery"].to_numpy(float), min_n=cfg.min_prompts, seed=cfg.seed)
        rows.append({"sender": snd, "receiver": rcv, "path": path, "recovery": e.mean,
                     "ci_low": e.ci[0], "ci_high": e.ci[1], "n_prompts": e.n,
                     "direction": e.direction})  # fmt: skip
    res = pd.DataFrame(rows).sort_values("recovery", ascending=False)
    atomic_write_text(out / "path_recovery.csv", res.to_csv(index=False))
    lines = ["path patching (sender -> receiver via path):"]
    for r in res.head(8).itertuples():
        lines.append(
            f"  {r.sender} -> {r.receiver} ({r.path}): recovery {r.recovery:.3g} "
            f"[{r.ci_low:.3g}, {r.ci_high:.3g}] (n={r.n_prompts}, {r.direction})"
        )
    return lines


SPEC = ExperimentSpec(
    name="isolation_patching",
    prompts_resource="suite.csv",  # n >= 48 by default: the packaged suite (issue 22)
    config=Config,
    run_unit=run_unit,
    summarize=summarize,
    check_model=lambda cfg, model: _model_heads(cfg, model),
    quick={"max_steps": 4},
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line (:func:`tempo_lens.runner.run_cli`); 0 on success."""
    return run_cli(SPEC, argv)


if __name__ == "__main__":
    raise SystemExit(main())
