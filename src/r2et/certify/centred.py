"""The gradient's backward pass in centred form, for the deterministic certificate's
``bound="crown"`` (MLPs; :func:`~r2et.certify.deterministic.gradient_bounds`).

The logit gradient of an MLP with hidden layers ``1..H`` is a product
``g = ((((W_L[c] ⊙ d_H) W_H) ⊙ d_{H−1}) W_{H−1} ⋯ ⊙ d_1) W_1``, ``d_i`` the activation
derivatives of layer ``i`` over the box: a ReLU's ``{1}``, ``{0}`` or (unstable) ``[0, 1]``, a
Softplus's ``[σ(β l), σ(β u)]`` from the pre-activation bounds. Carried back in interval
arithmetic (the plain pass), every layer's interval is treated as if its coordinates were
independent, although all are functions of the same derivatives: the wrapping effect, which
left the gradient bounds of a Softplus MLP about 20x wider than the sampled spread on COMPAS.

``g`` is multilinear in ``(d_1, …, d_H)``, so around the midpoints ``m_i`` (``d_i = m_i + δ_i``,
``|δ_i| <= ρ_i``, the half-widths) it expands exactly into

    g = g(m) + Σ_i A_i δ_i + (terms with two or more δ's),

``A_i[u, f] = R_i[u] · Q_i[u, f]``, where ``R_i`` is the row vector that reaches layer ``i``
from the output with every other derivative at its midpoint, and ``Q_i`` the matrix from the
input to layer ``i`` (``Q_1 = W_1``, ``Q_i = W_i diag(m_{i−1}) Q_{i−1}``). The first-order
part is bounded exactly over the box of the δ's, ``Σ_u |A_i[u, f]| ρ_i[u]``; each higher-order
term (a subset ``S`` of at least two layers, at most ``2^H − H − 1`` of them) by interval
arithmetic, which is symmetric about 0 once a δ has entered. Sound for every derivative vector
in the box, hence for every point of the input box; intersected by the caller with the plain
pass. Networks of more than :data:`MAX_HIDDEN` hidden layers keep the plain pass.

For a Softplus layer the derivatives are not independent: all are functions of the same
input. Its first-order term is also bounded through CROWN: each ``σ(β z_u)`` lies between two
lines in ``z_u`` (:func:`sigmoid_relaxation`), each coefficient's sign picks a line, and the
resulting linear function of the layer's pre-activations is bounded over the input box by
CROWN's back-substitution (:func:`~r2et.certify.crown.upper_over_box`); the tighter of the two
bounds is kept.
"""

from __future__ import annotations

import math
from itertools import combinations

import torch

from r2et.certify.crown import CrownForward, upper_over_box
from r2et.certify.intervals import ActState

__all__ = ["MAX_HIDDEN", "centred_gradient_bounds", "derivative_box", "sigmoid_relaxation"]

#: Deeper networks keep the plain interval pass (the higher-order terms number 2^H − H − 1).
MAX_HIDDEN = 6


def derivative_box(state: ActState) -> tuple[torch.Tensor, torch.Tensor]:
    """An activation state as its derivative interval ``(d_l, d_u)``: a ReLU's fixed-on units
    ``[1, 1]``, fixed-off ``[0, 0]``, unstable ``[0, 1]``; a Softplus's as stored."""
    a, b, smooth = state
    if smooth:
        return a, b
    on, off = a, b
    return on.to(torch.float64), (~off).to(torch.float64)


def centred_gradient_bounds(
    params: list[tuple[torch.Tensor, torch.Tensor]],
    states: list[ActState],
    target: torch.Tensor,
    box: tuple[torch.Tensor, torch.Tensor] | None = None,
    softplus: list[tuple[float, float] | None] | None = None,
    forward: CrownForward | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Bounds ``(g_l, g_u)`` ``(N, F)`` of the logit gradient of class ``target`` ``(N,)``
    over every derivative vector in the boxes of ``states`` (one per hidden layer), by the
    centred form of the module docstring; ``None`` for more than :data:`MAX_HIDDEN` hidden
    layers (the caller keeps its interval pass).

    With the input ``box`` ``(low, high)``, the layers' ``softplus`` ``(beta, threshold)``
    (``None`` for a ReLU) and the CROWN pass over that box (``forward``,
    :func:`~r2et.certify.crown.crown_forward`), the first-order term ``Σ_u A_i[u, f] δ_i[u]``
    of every Softplus layer is also bounded as a function of the input: its derivatives
    ``σ(β z_i)`` lie between lines in ``z_i`` (:func:`sigmoid_relaxation` on the layer's
    CROWN pre-activation bounds), and the resulting linear function of ``z_i`` is bounded over
    the box by CROWN's back-substitution (:func:`~r2et.certify.crown.upper_over_box`), which
    keeps that all the derivatives move with the same ``x``; the tighter of that and
    ``Σ_u |A_i[u, f]| ρ_i[u]`` is used."""
    h = len(states)
    if h == 0 or h > MAX_HIDDEN:
        return None
    boxes = [derivative_box(s) for s in states]
    mid = [(lo + hi) / 2 for lo, hi in boxes]
    rad = [(hi - lo) / 2 for lo, hi in boxes]
    weights = [w for w, _ in params]
    out_row = weights[-1][target]  # (N, n_H)
    linear = box is not None and softplus is not None and forward is not None
    # R[i]: the row vector reaching layer i's derivatives from the output (others at midpoints)
    rows = [out_row] * h
    for i in range(h - 1, 0, -1):
        rows[i - 1] = (rows[i] * mid[i]) @ weights[i]
    # Q[i]: the map from the input to layer i's pre-activations (others at midpoints), (N, n_i, F)
    q = weights[0].expand(len(target), *weights[0].shape)
    centre = ((rows[0] * mid[0])[:, :, None] * q).sum(1)
    lower, upper = centre.clone(), centre.clone()
    for i in range(h):
        if i > 0:
            q = weights[i] @ (mid[i - 1][:, :, None] * q)
        coef = rows[i][:, :, None] * q  # A_i[u, f] = R_i[u] Q_i[u, f]
        hi = (coef.abs() * rad[i][:, :, None]).sum(1)
        lo = -hi
        if linear and softplus[i] is not None:
            lin_lo, lin_hi = _layer_linear(coef, mid[i], i, params, forward, box, *softplus[i])
            lo, hi = torch.maximum(lo, lin_lo), torch.minimum(hi, lin_hi)
        lower, upper = lower + lo, upper + hi
    rest = _higher_order(weights, mid, rad, out_row)
    return lower - rest, upper + rest


def sigmoid_relaxation(
    tl: torch.Tensor, tu: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a_l, b_l, a_u, b_u)`` with ``a_l t + b_l <= d(t) <= a_u t + b_u`` on ``[tl, tu]``,
    ``d`` the derivative torch's softplus takes in ``t = β z``: ``σ(t)``, and exactly 1 past
    ``t > threshold``. ``σ`` is convex for ``t <= 0`` (chord above, the tangent at the
    midpoint below) and concave for ``t >= 0`` (chord below, tangent above); an interval
    across 0, or of width 0, gets the constants ``σ(tl)`` and ``σ(tu)``. ``d <= σ + (1 −
    σ(threshold))`` everywhere, so the upper line is raised by that step, and ``d >= σ``.
    Every slope is >= 0."""
    sl, su = torch.sigmoid(tl), torch.sigmoid(tu)
    width = tu - tl
    wide = width > 0
    chord = torch.where(wide, (su - sl) / torch.where(wide, width, torch.ones_like(width)), 0.0)
    tm = (tl + tu) / 2
    sm = torch.sigmoid(tm)
    tangent = sm * (1 - sm)
    convex, concave = wide & (tu <= 0), wide & (tl >= 0)
    zero = torch.zeros_like(tl)
    a_u = torch.where(convex, chord, torch.where(concave, tangent, zero))
    b_u = torch.where(convex, sl - chord * tl, torch.where(concave, sm - tangent * tm, su))
    a_l = torch.where(convex, tangent, torch.where(concave, chord, zero))
    b_l = torch.where(convex, sm - tangent * tm, torch.where(concave, sl - chord * tl, sl))
    step = 1.0 - 1.0 / (1.0 + math.exp(-float(threshold)))
    return a_l, b_l, a_u, b_u + step


def _layer_linear(
    coef: torch.Tensor,
    mid: torch.Tensor,
    m: int,
    params: list[tuple[torch.Tensor, torch.Tensor]],
    forward: CrownForward,
    box: tuple[torch.Tensor, torch.Tensor],
    beta: float,
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds over the input box of ``Σ_u coef[n, u, f] (d_u(x) − mid[n, u])`` ``(N, F)``, with
    ``d_u`` the softplus derivative of hidden layer ``m``'s pre-activation ``z_u``, enclosed
    by :func:`sigmoid_relaxation` in ``t = β z`` on the layer's CROWN bounds: the upper bound
    is linear in ``z_m = W_m h_{m−1} + b_m`` (each coefficient's sign picks a line), bounded
    over the box by CROWN's back-substitution; the lower one likewise (minus the upper bound
    of the negation)."""
    (pl, pu, _), relax = forward[0][m], forward[2]
    w, b = params[m]
    a_l, b_l, a_u, b_u = sigmoid_relaxation(beta * pl, beta * pu, threshold)
    pos, neg = coef.clamp_min(0), coef.clamp_max(0)
    offset = (coef * mid[:, :, None]).sum(1)  # (N, F)
    out = []
    for sign, up, down in ((1.0, (a_u, b_u), (a_l, b_l)), (-1.0, (a_l, b_l), (a_u, b_u))):
        # sign 1: the upper bound (a positive coefficient takes the upper line); -1: the lower
        kappa = beta * (pos * up[0][:, :, None] + neg * down[0][:, :, None])  # (N, U, F), on z
        const = (pos * up[1][:, :, None] + neg * down[1][:, :, None]).sum(1) - offset
        const = const + torch.einsum("nuf,u->nf", kappa, b)
        lam = torch.einsum("nuf,uh->nfh", kappa, w)
        out.append(sign * upper_over_box(sign * lam, sign * const, params, relax, m - 1, *box))
    return out[1], out[0]


def _higher_order(
    weights: list[torch.Tensor],
    mid: list[torch.Tensor],
    rad: list[torch.Tensor],
    out_row: torch.Tensor,
) -> torch.Tensor:
    """The sum over layer subsets ``S`` (``|S| >= 2``) of an interval radius of the term with
    ``δ_i`` at ``i ∈ S`` and ``m_i`` elsewhere: carried back exactly until the first δ, then as
    a radius (``r ← |v| ρ_i`` at the first δ, ``r ← r ρ_i`` at later ones, ``r ← r m_i``
    elsewhere, each followed by ``r ← r |W_i|``)."""
    h = len(mid)
    total = torch.zeros(out_row.shape[0], weights[0].shape[1], dtype=out_row.dtype,
                        device=out_row.device)  # fmt: skip
    for size in range(2, h + 1):
        for subset in combinations(range(h), size):
            v, r = out_row, None  # exact row until the first δ, then a radius
            for i in range(h - 1, -1, -1):
                if i in subset:
                    r = (v.abs() if r is None else r) * rad[i]
                    v = None
                elif r is None:
                    v = v * mid[i]
                else:
                    r = r * mid[i]
                if r is None:
                    v = v @ weights[i]
                else:
                    r = r @ weights[i].abs()
            total = total + r
    return total
