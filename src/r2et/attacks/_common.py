"""What the explanation attacks share (internal): the logits of the original model, the input
box, the feasible-set projection and per-row bookkeeping helpers (the result type and the
contract live in :mod:`r2et.attacks.base`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch

from r2et._ball import project_ball
from r2et._checks import model_inputs as model_inputs  # used by the attacks
from r2et._kwargs import take_rows as take_rows  # used by the attacks
from r2et.attacks.base import AttackResult, LogitRecorder
from r2et.metrics import topk_mask


def measure(
    ex: Any,
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    fkw: dict[str, Any],
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, logits)`` of the original model at ``x``: the scores carry a graph to ``x``
    when ``create_graph`` (``x`` must then require grad); the logits are detached and come
    from the explainer's own forward pass when it makes one at ``x`` (gradient methods)."""
    rec = LogitRecorder(model)
    s = ex.scores(rec, x, target, create_graph=create_graph, **fkw)
    if ex.method in ("grad", "grad_x_input") and rec.logits is not None:
        logits = rec.logits
    else:
        with torch.no_grad():
            logits = model(x.detach(), **fkw)
    return (s if create_graph else s.detach()), logits


def to_caller(
    res: AttackResult, x: torch.Tensor, eps: float, norm: str, bounds: Any
) -> AttackResult:
    """``res`` with every tensor on the device of the caller's input ``x`` and the floating
    ones (``x_adv``, scores, P@k) in ``x``'s dtype; when the dtype changed, ``x_adv`` is
    projected again onto the ball and the box in ``x``'s precision (:func:`feasible`), so
    that ``‖x_adv − x‖ <= eps`` and the bounds hold for the caller's own ``x`` (the move is of
    the order of the model dtype's rounding). Unchanged when nothing was moved."""
    if res.x_adv.device == x.device and res.x_adv.dtype == x.dtype:
        return res
    moved: dict[str, Any] = {}
    for f in fields(res):
        v = getattr(res, f.name)
        if isinstance(v, torch.Tensor):
            v = v.to(device=x.device, dtype=x.dtype) if v.is_floating_point() else v.to(x.device)
        moved[f.name] = v
    out = type(res)(**moved)
    if res.x_adv.dtype != x.dtype:
        box = None
        if bounds is not None:
            lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
            box = (lo, hi)
        out.x_adv = feasible(x, out.x_adv, eps, norm, box)
    return out


def check_bounds_pair(bounds: Any) -> Any:
    """``bounds`` unchanged when it is None or a pair ``(low, high)``; ``ValueError`` otherwise
    (the values are checked against the inputs by :func:`as_bounds` at call time)."""
    if bounds is not None and (not isinstance(bounds, (tuple, list)) or len(bounds) != 2):
        raise ValueError(f"bounds must be None or a pair (low, high), got {type(bounds).__name__}")
    return bounds


def better(
    p: torch.Tensor, obj: torch.Tensor, best_p: torch.Tensor, best_obj: torch.Tensor
) -> torch.Tensor:
    """Where a point beats the best so far: lower P@k, or equal P@k and a lower objective."""
    return (p < best_p) | ((p == best_p) & (obj < best_obj))


def overlap_with(s: torch.Tensor, top0: torch.Tensor, k: int) -> torch.Tensor:
    """P@k of scores ``s`` against the clean top-k given as a boolean mask ``top0``."""
    return (topk_mask(s, k) & top0).sum(1).to(s.dtype) / k


def rescore_moved(
    ex: Any,
    model: Callable[..., torch.Tensor],
    best_x: torch.Tensor,
    x: torch.Tensor,
    s0: torch.Tensor,
    top0: torch.Tensor,
    target: torch.Tensor,
    fkw: dict[str, Any],
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ex``'s scores and P@k (``|topk(s) ∩ top0| / k``) at every row's best point
    ``best_x``, for an attack whose loop ranked its points with a cheaper explanation
    (``inner``): rows still at ``x`` keep the clean scores ``s0`` and P@k 1 without a new
    evaluation."""
    s = s0.clone()
    p = torch.ones(x.shape[0], dtype=s0.dtype, device=x.device)
    moved = (best_x != x).flatten(1).any(1).nonzero().squeeze(1)
    if moved.numel():
        kw = take_rows(fkw, moved, x.shape[0])
        s[moved] = ex.scores(model, best_x[moved], target[moved], **kw).detach().to(s.dtype)
        p[moved] = overlap_with(s[moved], top0[moved], k).to(p.dtype)
    return s, p


def keep_best(
    state: Any,
    rows: torch.Tensor,
    z: torch.Tensor,
    s: torch.Tensor,
    p: torch.Tensor,
    obj: torch.Tensor,
    ok: torch.Tensor,
) -> None:
    """Update ``state.best_x``, ``best_s``, ``best_p``, ``best_obj`` at ``rows`` with the
    label-preserving (``ok``) points ``z`` that beat them (:func:`better`)."""
    take = ok & better(p, obj, state.best_p[rows], state.best_obj[rows])
    idx = rows[take]
    state.best_x[idx] = z[take]
    state.best_s[idx] = s[take]
    state.best_p[idx] = p[take]
    state.best_obj[idx] = obj[take]


def as_bounds(bounds: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``bounds`` as two tensors broadcastable to ``x``, validated against ``x``."""
    if bounds is None:
        return None
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(
            "bounds must be None or a pair (low, high) of scalars or tensors shaped like one "
            f"input {tuple(x.shape[1:])}, got {type(bounds).__name__}"
        )
    lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
    for name, b in (("low", lo), ("high", hi)):
        try:
            torch.broadcast_shapes(b.shape, x.shape[1:])
        except RuntimeError:
            raise ValueError(
                f"bounds {name} of shape {tuple(b.shape)} does not broadcast to one input of "
                f"shape {tuple(x.shape[1:])}"
            ) from None
        if not bool(torch.isfinite(b).all()):
            raise ValueError(f"bounds {name} contains NaN or Inf")
    if bool((lo > hi).any()):
        raise ValueError("bounds must satisfy low <= high everywhere")
    tol = 1e-6 * (1 + torch.maximum(lo.abs(), hi.abs()))
    if bool((x < lo - tol).any() or (x > hi + tol).any()):
        below = float((lo - x).clamp_min(0).max())
        above = float((x - hi).clamp_min(0).max())
        raise ValueError(
            "x lies outside bounds (the attack's valid input box): up to "
            f"{below:.3g} below low and {above:.3g} above high; clip x, widen bounds or "
            "create the attack with clip_inputs=True"
        )
    return lo, hi


def clip_into(bounds: Any, x: torch.Tensor) -> torch.Tensor:
    """``x`` clipped into the box ``bounds`` (unchanged when None): what an attack created
    with ``clip_inputs=True`` attacks, so that inputs slightly outside a box computed from the
    training data (test rows beyond the training range) are attacked instead of refused. The
    clean explanation, the prediction and P@k are then those of the clipped input."""
    if bounds is None:
        return x
    lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
    return torch.maximum(torch.minimum(x, hi), lo)


def feasible(
    x: torch.Tensor,
    z: torch.Tensor,
    eps: float,
    norm: str,
    box: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """Project ``z`` onto the ``eps``-ball around ``x``, clip into ``box``, and make the
    constraints hold exactly in floating point: ``‖z − x‖ <= eps`` as computed in the dtype of
    ``x`` (rounding of ``x + δ`` can overshoot by an ulp; such entries are pulled towards
    ``x``)."""
    z = x + project_ball(z - x, eps, norm)
    if box is not None:
        z = torch.maximum(torch.minimum(z, box[1]), box[0])
    shape = (-1, *([1] * (x.dim() - 1)))
    for _ in range(4):  # almost always 0 or 1 pass
        d = z - x
        if norm == "linf":
            bad = d.abs() > eps
            if not bool(bad.any()):
                break
            z = torch.where(bad, torch.nextafter(z, x), z)
        else:
            nrm = d.flatten(1).norm(dim=1)
            bad = nrm > eps
            if not bool(bad.any()):
                break
            shrink = eps / nrm * (1 - 16 * torch.finfo(x.dtype).eps)
            z = torch.where(bad.view(shape), x + d * shrink.view(shape), z)
        if box is not None:
            z = torch.maximum(torch.minimum(z, box[1]), box[0])
    return z


def rowwise(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-row flag ``(R,)`` viewed to broadcast over rows of ``x``."""
    return mask.view(-1, *([1] * (x.dim() - 1)))


def pick_best(p: torch.Tensor, obj: torch.Tensor, reps: int, n: int) -> torch.Tensor:
    """Row of the best of ``reps`` copies of each of ``n`` inputs (copy-major rows): lowest
    P@k, then lowest objective, then the first copy. Returns ``(n,)`` row indices."""
    p, o = p.view(reps, n), obj.view(reps, n)
    pick = torch.zeros(n, dtype=torch.long, device=p.device)
    bp, bo = p[0], o[0]
    for j in range(1, reps):  # a loop over copies, not samples
        wins = better(p[j], o[j], bp, bo)
        pick = torch.where(wins, torch.full_like(pick, j), pick)
        bp, bo = torch.where(wins, p[j], bp), torch.where(wins, o[j], bo)
    return pick * n + torch.arange(n, device=p.device)
