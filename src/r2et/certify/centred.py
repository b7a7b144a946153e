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
"""

from __future__ import annotations

from itertools import combinations

import torch

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
    first_softplus: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Bounds ``(g_l, g_u)`` ``(N, F)`` of the logit gradient of class ``target`` ``(N,)``
    over every derivative vector in the boxes of ``states`` (one per hidden layer), by the
    centred form of the module docstring; ``None`` for more than :data:`MAX_HIDDEN` hidden
    layers (the caller keeps its interval pass).

    With the input ``box`` ``(low, high)`` and the first hidden layer a Softplus
    ``(beta, threshold)`` (``first_softplus``), the first layer's first-order term
    ``Σ_u A_1[u, f] δ_1[u]`` is also bounded as a function of the input: its derivatives
    ``d_1 = σ(β (W_1 x + b_1))`` are enclosed between lines in ``W_1 x + b_1``
    (:func:`sigmoid_relaxation`), which keeps that all of them move with the same ``x``; the
    tighter of that and ``Σ_u |A_1[u, f]| ρ_1[u]`` is used."""
    h = len(states)
    if h == 0 or h > MAX_HIDDEN:
        return None
    boxes = [derivative_box(s) for s in states]
    mid = [(lo + hi) / 2 for lo, hi in boxes]
    rad = [(hi - lo) / 2 for lo, hi in boxes]
    weights = [w for w, _ in params]
    out_row = weights[-1][target]  # (N, n_H)
    # R[i]: the row vector reaching layer i's derivatives from the output (others at midpoints)
    rows = [out_row] * h
    for i in range(h - 1, 0, -1):
        rows[i - 1] = (rows[i] * mid[i]) @ weights[i]
    # Q[i]: the map from the input to layer i's pre-activations (others at midpoints), (N, n_i, F)
    q = weights[0].expand(len(target), *weights[0].shape)
    first = rows[0][:, :, None] * q  # A_1 = R_1[u] Q_1[u, f]
    centre = ((rows[0] * mid[0])[:, :, None] * q).sum(1)
    first_hi = (first.abs() * rad[0][:, :, None]).sum(1)
    first_lo = -first_hi
    if box is not None and first_softplus is not None:
        lin_lo, lin_hi = _first_layer_linear(first, mid[0], params[0], box, *first_softplus)
        first_lo, first_hi = torch.maximum(first_lo, lin_lo), torch.minimum(first_hi, lin_hi)
    spread = torch.zeros_like(centre)
    for i in range(1, h):
        q = weights[i] @ (mid[i - 1][:, :, None] * q)
        spread = spread + ((rows[i][:, :, None] * q).abs() * rad[i][:, :, None]).sum(1)
    spread = spread + _higher_order(weights, mid, rad, out_row)
    return centre + first_lo - spread, centre + first_hi + spread


def sigmoid_relaxation(
    tl: torch.Tensor, tu: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a_l, b_l, a_u, b_u)`` with ``a_l t + b_l <= d(t) <= a_u t + b_u`` on ``[tl, tu]``,
    ``d`` the derivative torch's softplus takes in ``t = β z``: ``σ(t)``, and exactly 1 past
    ``t > threshold``. ``σ`` is convex for ``t <= 0`` (chord above, the tangent at the
    midpoint below) and concave for ``t >= 0`` (chord below, tangent above); an interval
    across 0, or of width 0, gets the constants ``σ(tl)`` and ``σ(tu)``. ``d <= σ + (1 −
    σ(threshold))`` everywhere, so the upper line is raised by that step, and ``d >= σ``."""
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
    step = 1.0 - torch.sigmoid(torch.tensor(float(threshold), dtype=tl.dtype)).item()
    return a_l, b_l, a_u, b_u + step


def _first_layer_linear(
    coef: torch.Tensor,
    mid: torch.Tensor,
    layer: tuple[torch.Tensor, torch.Tensor],
    box: tuple[torch.Tensor, torch.Tensor],
    beta: float,
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds over the input box of ``Σ_u coef[n, u, f] (d_u(x) − mid[n, u])`` ``(N, F)``, with
    ``d_u(x)`` the softplus derivative of ``z_u = W x + b`` enclosed by
    :func:`sigmoid_relaxation` in ``t = β z``: each bound is a linear function of ``x``,
    maximised (minimised) over the box exactly."""
    w, b = layer
    low, high = box
    xc, xr = (low + high) / 2, (high - low) / 2
    zc, zr = xc @ w.T + b, xr @ w.abs().T
    a_l, b_l, a_u, b_u = sigmoid_relaxation(beta * (zc - zr), beta * (zc + zr), threshold)
    pos, neg = coef.clamp_min(0), coef.clamp_max(0)
    offset = (coef * mid[:, :, None]).sum(1)  # (N, F)
    bounds = []
    for hi_line, lo_line, sign in (((a_u, b_u), (a_l, b_l), 1.0), ((a_l, b_l), (a_u, b_u), -1.0)):
        # upper: pos takes the upper line, neg the lower; lower: the reverse
        slope = pos * hi_line[0][:, :, None] + neg * lo_line[0][:, :, None]  # (N, U, F), per t
        const = (pos * hi_line[1][:, :, None] + neg * lo_line[1][:, :, None]).sum(1)
        lam = beta * torch.einsum("nuf,ui->nfi", slope, w)  # (N, F, F_in)
        nu = const + beta * (slope * b[None, :, None]).sum(1) - offset
        centre = torch.einsum("nfi,ni->nf", lam, xc) + nu
        spread = torch.einsum("nfi,ni->nf", lam.abs(), xr)
        bounds.append(centre + sign * spread)
    return bounds[1], bounds[0]


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
