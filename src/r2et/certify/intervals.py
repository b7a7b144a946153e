"""Interval-arithmetic steps shared by the MLP bounds (:mod:`r2et.certify.deterministic`) and
the CNN bounds (:mod:`r2et.certify.conv`): the activations' boxes and derivative intervals,
their effect on a backward row vector, and the logit margins over the last hidden box."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["activation_backward", "logit_margins", "relu_state", "softplus_box"]

#: One activation's backward state: ``(on, off, None)`` masks of a ReLU, or the derivative
#: interval ``(d_l, d_u, True)`` of a Softplus.
ActState = tuple[torch.Tensor, torch.Tensor, bool | None]


def relu_state(
    pl: torch.Tensor, pu: torch.Tensor, eps: torch.Tensor | float, slack: float
) -> ActState:
    """The masks of a ReLU whose pre-activations lie in ``[pl, pu]``: fixed on where
    ``pl > eps``, fixed off where ``pu < −eps`` (``slack > 0``; ``eps`` = slack × magnitude,
    the float32 safety margin), or, exactly, on where ``pl > 0`` and off where ``pu <= 0``
    (``slack = 0``; ReLU'(0) = 0 as in torch); the rest are unstable."""
    if slack > 0:
        return pl > eps, pu < -eps, None
    return pl > 0, pu <= 0, None


def softplus_box(
    pl: torch.Tensor, pu: torch.Tensor, beta: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softplus over pre-activations in ``[pl, pu]``: the output box (torch's softplus is
    monotone up to a step of ``log(1 + e^-threshold)/beta`` where it turns linear, added to the
    upper bound and taken off the lower) and the derivative box ``[σ(β pl), σ(β pu)]`` (1
    where torch's derivative is exactly 1, past the threshold)."""
    step = math.log1p(math.exp(-threshold)) / beta
    lo = F.softplus(pl, beta, threshold) - step
    hi = F.softplus(pu, beta, threshold) + step
    dl = torch.where(beta * pl > threshold, torch.ones_like(pl), torch.sigmoid(beta * pl))
    du = torch.where(beta * pu > threshold, torch.ones_like(pu), torch.sigmoid(beta * pu))
    return lo, hi, dl, du


def activation_backward(
    vl: torch.Tensor, vu: torch.Tensor, state: ActState
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward row vector ``v ∈ [vl, vu]`` times an activation's derivative: a ReLU's
    masks keep (on), zero (off) or relax an unstable unit to ``[min(0, v_l), max(0, v_u)]``;
    a Softplus derivative ``d ∈ [d_l, d_u]`` (positive) gives the interval product
    ``[min(v_l d_l, v_l d_u), max(v_u d_l, v_u d_u)]``."""
    a, b, smooth = state
    if smooth:
        return torch.minimum(vl * a, vl * b), torch.maximum(vu * a, vu * b)
    on, off = a, b
    unstable = ~(on | off)
    vl = torch.where(off, torch.zeros_like(vl), torch.where(unstable, vl.clamp_max(0), vl))
    vu = torch.where(off, torch.zeros_like(vu), torch.where(unstable, vu.clamp_min(0), vu))
    return vl, vu


def logit_margins(
    w_last: torch.Tensor,
    b_last: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    target: torch.Tensor,
    slack: float,
) -> torch.Tensor:
    """A lower bound ``(N, C)`` of the logit margins ``z_c − z_j = (W[c] − W[j]) h + b_c − b_j``
    over the last hidden box ``h ∈ [lo, hi]`` ``(N, H)`` (centre-radius form:
    ``(W[c] − W[j]) c_h − |W[c] − W[j]| r_h + b_c − b_j``), lowered by ``slack`` times its
    magnitude; ``+inf`` at ``j = c``."""
    wd = w_last[target].unsqueeze(1) - w_last.unsqueeze(0)  # (N, C, H)
    bd = b_last[target].unsqueeze(1) - b_last.unsqueeze(0)  # (N, C)
    c, r = (lo + hi) / 2, (hi - lo) / 2
    spread = (wd.abs() @ r.unsqueeze(-1)).squeeze(-1)
    margin = (wd @ c.unsqueeze(-1)).squeeze(-1) - spread + bd
    if slack > 0:
        size = (wd.abs() @ c.abs().unsqueeze(-1)).squeeze(-1) + spread + bd.abs()
        margin = margin - slack * size
    own = torch.arange(w_last.shape[0], device=target.device)[None, :] == target[:, None]
    return margin.masked_fill(own, float("inf"))
