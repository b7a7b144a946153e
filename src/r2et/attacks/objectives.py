"""Attack objectives on explanations, as registered rows.

An objective is a per-row loss ``L(s)`` that an attack *minimises* over the perturbed scores
``s = s(x')``, given the clean scores ``s⁰ = s(x)`` and ``k``; ``T`` is the clean top-k set.
Every objective can be applied to raw scores (``scale="raw"``) or to scale-free scores
(``scale="mean"``: ``ŝ = s / mean_j s_j``, differentiated through). A model trained on
scale-free scores (R2ET) can be insensitive to one and not the other, so a strong evaluation
tries both.

==================== ===========================================================================
``er-next``          ``mean_{i∈T} s_i − mean_{j∈B} s_j``, B the ``n_bottom`` (default k) features
                     ranked just below T (ERAttack, Chen et al., NeurIPS 2024)
``er-all``           ``mean_{i∈T} s_i − mean_{j∉T} s_j`` (ERAttack against every other feature)
``minmax``           ``smin_{i∈T} s_i − smax_{j∉T} s_j``, smooth min and max with temperature
                     ``τ = tau · mean(s⁰)``: ``smin = −τ log Σ e^{−s/τ}``,
                     ``smax = τ log Σ e^{s/τ}``
``overlap``          ``1/k Σ_{i∈T} σ((s_i − θ)/τ)``, ``θ`` the midpoint of the k-th and (k+1)-th
                     largest current scores: a smooth count of the clean top-k still on top,
                     i.e. a smooth P@k
``mse``              ``−‖s − s⁰‖²`` (the untargeted attack of Ghorbani et al., AAAI 2019)
==================== ===========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from r2et._checks import check_choice
from r2et._registry import Registry

SCALES = ("raw", "mean")


def scale_scores(s: torch.Tensor, scale: str) -> torch.Tensor:
    """``s`` unchanged (``"raw"``) or divided by each row's mean (``"mean"``, scale-free)."""
    if scale == "raw":
        return s
    return s / s.mean(1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny ** 0.5)


@dataclass(frozen=True)
class Objective:
    """One registered objective: ``setup(s0, k, options) -> ctx`` precomputes what the loss
    needs from the clean scores, ``value(s, ctx) -> (N,)`` is the loss to minimise.
    ``stationary_at_clean``: the gradient vanishes at ``s = s⁰`` (attacks then take a first
    random step)."""

    name: str
    summary: str
    setup: Callable[[torch.Tensor, int, dict[str, Any]], dict[str, Any]]
    value: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]
    stationary_at_clean: bool = False


def _top_bottom_weights(s0: torch.Tensor, k: int, nb: int) -> torch.Tensor:
    order = s0.topk(k + nb, dim=1).indices
    top = torch.zeros_like(s0).scatter_(1, order[:, :k], 1.0 / k)
    bottom = torch.zeros_like(s0).scatter_(1, order[:, k:], 1.0 / nb)
    return top - bottom


def _setup_er_next(s0: torch.Tensor, k: int, opts: dict[str, Any]) -> dict[str, Any]:
    f = s0.shape[1]
    nb = opts.get("n_bottom")
    nb = f - k if nb == "all" else min(k if nb is None else int(nb), f - k)
    return {"w": _top_bottom_weights(s0, k, nb)}


def _setup_er_all(s0: torch.Tensor, k: int, opts: dict[str, Any]) -> dict[str, Any]:
    return {"w": _top_bottom_weights(s0, k, s0.shape[1] - k)}


def _linear(s: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
    return (s * ctx["w"]).sum(1)


def _setup_masked(s0: torch.Tensor, k: int, opts: dict[str, Any]) -> dict[str, Any]:
    idx = s0.topk(k, dim=1).indices
    mask = torch.zeros_like(s0, dtype=torch.bool).scatter_(1, idx, True)
    tau = float(opts.get("tau", 0.1)) * s0.mean(1, keepdim=True)
    tau = tau.clamp_min(torch.finfo(s0.dtype).tiny ** 0.5)
    return {"mask": mask, "tau": tau, "k": k}


def _minmax(s: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
    mask, tau = ctx["mask"], ctx["tau"]
    inf = torch.finfo(s.dtype).max
    z = s / tau
    smin = -tau.squeeze(1) * torch.logsumexp((-z).masked_fill(~mask, -inf), dim=1)
    smax = tau.squeeze(1) * torch.logsumexp(z.masked_fill(mask, -inf), dim=1)
    return smin - smax


def _overlap(s: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
    mask, tau, k = ctx["mask"], ctx["tau"], int(ctx["k"])
    vals = s.topk(k + 1, dim=1).values
    theta = 0.5 * (vals[:, k - 1 : k] + vals[:, k : k + 1])
    inside = torch.sigmoid((s - theta) / tau)
    return (inside * mask).sum(1) / k


def _setup_mse(s0: torch.Tensor, k: int, opts: dict[str, Any]) -> dict[str, Any]:
    return {"s0": s0}


def _mse(s: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
    return -(s - ctx["s0"]).pow(2).sum(1)


#: The registered objectives, by name (registration order).
OBJECTIVES: Registry[Objective] = Registry("objective")
for _o in (
    Objective("er-next", "top-k mean minus the mean of the next n_bottom", _setup_er_next,
              _linear),
    Objective("er-all", "top-k mean minus the mean of all other features", _setup_er_all,
              _linear),
    Objective("minmax", "smooth min of the top-k minus smooth max of the rest",
              _setup_masked, _minmax),
    Objective("overlap", "smooth count of clean top-k features still in the top-k",
              _setup_masked, _overlap),
    Objective("mse", "minus the squared l2 change of the scores", _setup_mse, _mse,
              stationary_at_clean=True),
):  # fmt: skip
    OBJECTIVES.register(_o.name, _o)


def list_objectives() -> list[str]:
    """Names of the registered attack objectives."""
    return OBJECTIVES.names()


def get_objective(name: str) -> Objective:
    """The registered objective ``name`` (``ValueError`` for an unknown name)."""
    check_choice("objective", name, list_objectives())
    return OBJECTIVES[name]
