"""Linear relaxation (CROWN; Zhang et al., NeurIPS 2018) of an MLP's pre-activations over an
l_inf box, for the deterministic certificate's ``bound="crown"``.

Interval bound propagation (IBP) bounds each layer from the previous layer's *box*, forgetting
that the box's coordinates are functions of the same input. CROWN keeps that dependence: each
activation ``h = act(z)`` is enclosed, on the unit's pre-activation interval ``[l, u]``, by two
lines ``a_l z + b_l <= act(z) <= a_u z + b_u``, and a pre-activation ``z_m = W_m h_{m−1} + b_m``
is bounded by substituting backwards to the input: a row ``Λ`` of coefficients on ``h_j``
becomes, for the upper bound, ``Λ⁺ (a_u z_j + b_u) + Λ⁻ (a_l z_j + b_l)`` (``Λ⁺ = max(Λ, 0)``,
``Λ⁻ = min(Λ, 0)``), then ``z_j = W_j h_{j−1} + b_j``; at the input, the linear function
``Λ x + ν`` is maximised over the box exactly, ``Λ c_x + |Λ| r_x + ν``. A lower bound is minus
the upper bound of ``−z_m`` (the same pass on ``−Λ``). The layers are bounded first to last,
each with the relaxations of the layers below it, and every bound is intersected with IBP's
(from the tightened box of the layer below, and from the plain IBP chain), so it is never
looser than IBP.

Relaxations, sound on ``[l, u]``:

* ReLU: ``u <= 0``: ``0``; ``l >= 0``: ``z``; otherwise (unstable) the chord
  ``u (z − l) / (u − l)`` above and ``α z`` below with ``α = 1`` if ``u > −l`` else ``0``
  (the adaptive choice; any ``α ∈ [0, 1]`` is sound).
* Softplus ``sp(z) = log(1 + e^{β z}) / β`` (convex): the chord between ``(l, sp(l))`` and
  ``(u, sp(u))`` above, and below the tangent at the point ``z*`` where the slope
  ``σ(β z*)`` equals the chord's (so the two lines are parallel; any tangent of a convex
  function lies below it). torch's ``nn.Softplus`` switches to the identity past
  ``β z > threshold``, where it lies in ``[sp(z) − δ, sp(z)]`` with
  ``δ = log(1 + e^{−threshold}) / β``: the chord stays above it and the tangent is lowered
  by ``δ``.

The logit margins ``z_c − z_j`` are bounded the same way (``Λ = W_L[c] − W_L[j]``), and the
larger of that and the interval margin is kept. ``slack`` (the float32 safety margin of
:func:`~r2et.certify.deterministic.gradient_bounds`) is applied as there, with the
magnitudes of the plain IBP chain: a ReLU is stable only if its tightened bound clears 0 by
``slack · (|W| |c| + |W| r + |b|)`` and the margins are lowered by ``slack`` times the
interval margin's magnitude, so a unit stable for IBP is stable here and the margin is never
below IBP's. Everything is batched over the inputs' rows, in float64 on their device.
"""

from __future__ import annotations

import math

import torch

from r2et.certify.intervals import ActState, logit_margins, relu_state, softplus_box

__all__ = [
    "CrownForward",
    "crown_forward",
    "crown_preactivations",
    "crown_states",
    "relu_relaxation",
    "softplus_relaxation",
    "upper_over_box",
]

Params = list[tuple[torch.Tensor, torch.Tensor]]
Relaxation = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
#: What :func:`crown_forward` returns: per hidden layer ``(pl, pu, magnitude)``, the last
#: hidden boxes ``(lo, hi, plain_lo, plain_hi)`` and the layers' relaxations.
CrownForward = tuple[list[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...], list[Relaxation]]


def relu_relaxation(low: torch.Tensor, high: torch.Tensor) -> Relaxation:
    """``(a_l, b_l, a_u, b_u)`` with ``a_l z + b_l <= max(z, 0) <= a_u z + b_u`` for every
    ``z ∈ [low, high]``: exact where the sign is fixed, else the chord above and ``α z``
    below (``α = 1`` where ``high > −low``, else 0)."""
    zero, one = torch.zeros_like(low), torch.ones_like(low)
    on, off = low >= 0, high <= 0
    unstable = ~(on | off)
    chord = high / torch.where(unstable, high - low, one)
    a_u = torch.where(on, one, torch.where(off, zero, chord))
    b_u = torch.where(unstable, -chord * low, zero)
    a_l = torch.where(on, one, torch.where(off, zero, (high > -low).to(low.dtype)))
    return a_l, zero, a_u, b_u


def _softplus(z: torch.Tensor, beta: float) -> torch.Tensor:
    """``log(1 + e^{β z}) / β`` without torch's switch to the identity (stable form)."""
    return z.clamp_min(0) + torch.log1p(torch.exp(-beta * z.abs())) / beta


def softplus_relaxation(
    low: torch.Tensor, high: torch.Tensor, beta: float, threshold: float
) -> Relaxation:
    """``(a_l, b_l, a_u, b_u)`` enclosing torch's ``softplus(z, beta, threshold)`` on
    ``[low, high]``: the chord of ``sp`` above; below, the tangent of ``sp`` at the point
    whose slope is the chord's (clamped into ``[low, high]``), lowered by torch's switch step
    ``log(1 + e^-threshold)/β``. A degenerate interval (``low == high``) gets the tangent at
    ``low`` for both lines."""
    step = math.log1p(math.exp(-threshold)) / beta
    width = high - low
    wide = width > 0
    s_lo, s_hi = _softplus(low, beta), _softplus(high, beta)
    slope = torch.where(wide, (s_hi - s_lo) / torch.where(wide, width, torch.ones_like(width)),
                        torch.sigmoid(beta * low))  # fmt: skip
    a_u, b_u = slope, s_lo - slope * low
    # tangent with the chord's slope: σ(β z*) = slope, z* = logit(slope) / β (any z* is sound)
    z_star = torch.logit(slope, eps=1e-15) / beta
    z_star = torch.minimum(torch.maximum(z_star, low), high)
    a_l = torch.sigmoid(beta * z_star)
    b_l = _softplus(z_star, beta) - a_l * z_star - step
    return a_l, b_l, a_u, b_u


def _upper(
    lam: torch.Tensor,
    const: torch.Tensor,
    params: Params,
    relax: list[Relaxation],
    top: int,
    xc: torch.Tensor,
    xr: torch.Tensor,
) -> torch.Tensor:
    """The upper bound over the box (centre ``xc``, radius ``xr``, ``(N, F)``) of
    ``Λ h_top + ν`` (``lam`` ``(N, M, H)`` or ``(M, H)``, ``const`` ``(N, M)`` or ``(M,)``),
    ``h_top`` the output of hidden layer ``top``: back-substitution through the relaxations
    of layers ``top, top − 1, …, 0`` and their linear maps, then ``Λ c_x + |Λ| r_x + ν``."""
    n = xc.shape[0]
    lam = lam.expand(n, *lam.shape[-2:])
    const = const.expand(n, lam.shape[1])
    for j in range(top, -1, -1):
        a_l, b_l, a_u, b_u = relax[j]
        pos, neg = lam.clamp_min(0), lam.clamp_max(0)
        const = const + torch.einsum("nmh,nh->nm", pos, b_u) + torch.einsum("nmh,nh->nm", neg, b_l)
        lam = pos * a_u[:, None, :] + neg * a_l[:, None, :]
        w, b = params[j]
        const = const + lam @ b
        lam = lam @ w
    return torch.einsum("nmf,nf->nm", lam, xc) + torch.einsum("nmf,nf->nm", lam.abs(), xr) + const


def _linear_bounds(
    lam: torch.Tensor,
    const: torch.Tensor,
    params: Params,
    relax: list[Relaxation],
    top: int,
    xc: torch.Tensor,
    xr: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` of ``Λ h_top + ν`` over the box: one back-substitution of ``Λ`` and
    ``−Λ`` stacked (a lower bound of ``f`` is minus an upper bound of ``−f``)."""
    m = lam.shape[-2]
    both = _upper(torch.cat([lam, -lam], -2), torch.cat([const, -const], -1), params, relax,
                  top, xc, xr)  # fmt: skip
    return -both[:, m:], both[:, :m]


def upper_over_box(
    lam: torch.Tensor,
    const: torch.Tensor,
    params: Params,
    relax: list[Relaxation],
    top: int,
    low: torch.Tensor,
    high: torch.Tensor,
) -> torch.Tensor:
    """An upper bound ``(N, M)`` over the input box ``[low, high]`` of ``Λ h_top + ν``
    (``lam`` ``(N, M, H)``, ``const`` ``(N, M)``; ``h_top`` the output of hidden layer
    ``top``, ``top = −1`` for the input itself): CROWN's back-substitution through the
    relaxations ``relax`` of :func:`crown_forward`, then the exact maximum over the box."""
    return _upper(lam, const, params, relax, top, (low + high) / 2, (high - low) / 2)


def _tighten(
    pl: torch.Tensor, pu: torch.Tensor, bounds: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The intersection of sound intervals of the same quantity (``[pl, pu]`` and
    ``bounds``); should rounding make it cross (only ever by an ulp, the true value lying in
    every interval), the two crossing ends are taken as the interval."""
    for lo, hi in bounds:
        pl, pu = torch.maximum(pl, lo), torch.minimum(pu, hi)
    return torch.minimum(pl, pu), torch.maximum(pl, pu)


def crown_forward(
    params: Params,
    low: torch.Tensor,
    high: torch.Tensor,
    softplus: list[tuple[float, float] | None] | None = None,
) -> CrownForward:
    """Per hidden layer ``(pl, pu, magnitude)``: the CROWN pre-activation bounds (intersected
    with IBP's) and the float32-safety magnitude ``|W| |c| + |W| r + |b|`` of the plain IBP
    chain; the boxes ``(lo, hi, plain_lo, plain_hi)`` of the last hidden layer's output
    (tightened chain, plain IBP chain); the layers' relaxations."""
    acts = softplus or [None] * (len(params) - 1)
    xc, xr = (low + high) / 2, (high - low) / 2
    lo, hi = low, high  # the tightened chain's box
    plo, phi = low, high  # the plain IBP chain's box
    relax: list[Relaxation] = []
    out: list[tuple[torch.Tensor, ...]] = []
    for m, ((w, b), act) in enumerate(zip(params[:-1], acts)):
        wa = w.abs()
        c, r = (lo + hi) / 2, (hi - lo) / 2
        pc, pr = c @ w.T + b, r @ wa.T
        ibp = (pc - pr, pc + pr)
        c, r = (plo + phi) / 2, (phi - plo) / 2
        pc, plain_r = c @ w.T + b, r @ wa.T
        plain = (pc - plain_r, pc + plain_r)
        magnitude = c.abs() @ wa.T + plain_r + b.abs()
        if m == 0:  # linear in x: IBP is exact
            pl, pu = ibp
        else:
            cl, cu = _linear_bounds(w, b, params, relax, m - 1, xc, xr)
            pl, pu = _tighten(cl, cu, [ibp, plain])
        out.append((pl, pu, magnitude))
        if act is None:
            relax.append(relu_relaxation(pl, pu))
            lo, hi = pl.clamp_min(0), pu.clamp_min(0)
            plo, phi = plain[0].clamp_min(0), plain[1].clamp_min(0)
        else:
            relax.append(softplus_relaxation(pl, pu, *act))
            lo, hi = softplus_box(pl, pu, *act)[:2]
            plo, phi = softplus_box(*plain, *act)[:2]
    return out, (lo, hi, plo, phi), relax


def crown_preactivations(
    params: Params,
    low: torch.Tensor,
    high: torch.Tensor,
    softplus: list[tuple[float, float] | None] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per hidden layer, bounds ``(pl, pu)`` ``(N, H)`` of the pre-activations over the box
    ``[low, high]`` ``(N, F)`` of the MLP ``(W, b)`` pairs ``params`` (ReLU, or Softplus
    ``(beta, threshold)`` per layer in ``softplus``): the CROWN bound intersected with IBP's
    (never looser than IBP)."""
    return [(pl, pu) for pl, pu, _ in crown_forward(params, low, high, softplus)[0]]


def crown_states(
    params: Params,
    low: torch.Tensor,
    high: torch.Tensor,
    target: torch.Tensor,
    slack: float = 0.0,
    softplus: list[tuple[float, float] | None] | None = None,
    forward: CrownForward | None = None,
) -> tuple[list[ActState], torch.Tensor]:
    """The backward states of every hidden activation (ReLU masks by
    :func:`~r2et.certify.intervals.relu_state` with ``eps = slack ·`` the IBP magnitude;
    Softplus derivative intervals ``[σ(β l), σ(β u)]``) from the CROWN pre-activations, and a
    lower bound ``(N, C)`` of the logit margins ``z_c − z_j`` (``+inf`` at ``j = c``): the
    larger of the CROWN margin, the interval margin on the tightened last box and the plain
    interval margin, each lowered by ``slack`` times the plain interval margin's
    magnitude. ``forward``: :func:`crown_forward`'s result for the same arguments, when the
    caller has it."""
    acts = softplus or [None] * (len(params) - 1)
    layers, (lo, hi, plo, phi), relax = forward or crown_forward(params, low, high, softplus)
    xc, xr = (low + high) / 2, (high - low) / 2
    states: list[ActState] = []
    for (pl, pu, magnitude), act in zip(layers, acts):
        if act is None:
            eps = slack * magnitude if slack > 0 else 0.0
            states.append(relu_state(pl, pu, eps, slack))
        else:
            _, _, dl, du = softplus_box(pl, pu, *act)
            states.append((dl, du, True))
    w_last, b_last = params[-1]
    wd = w_last[target].unsqueeze(1) - w_last.unsqueeze(0)  # (N, C, H)
    bd = b_last[target].unsqueeze(1) - b_last.unsqueeze(0)  # (N, C)
    lower = _linear_bounds(wd, bd, params, relax, len(params) - 2, xc, xr)[0]
    raw = torch.maximum(lower, logit_margins(w_last, b_last, lo, hi, target, 0.0))
    plain = logit_margins(w_last, b_last, plo, phi, target, slack)
    if slack > 0:
        c, r = (plo + phi) / 2, (phi - plo) / 2
        size = (wd.abs() @ c.abs().unsqueeze(-1)).squeeze(-1)
        size = size + (wd.abs() @ r.unsqueeze(-1)).squeeze(-1) + bd.abs()
        raw = raw - slack * size
    return states, torch.maximum(raw, plain)
