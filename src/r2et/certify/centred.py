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

__all__ = ["MAX_HIDDEN", "centred_gradient_bounds", "derivative_box"]

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
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Bounds ``(g_l, g_u)`` ``(N, F)`` of the logit gradient of class ``target`` ``(N,)``
    over every derivative vector in the boxes of ``states`` (one per hidden layer), by the
    centred form of the module docstring; ``None`` for more than :data:`MAX_HIDDEN` hidden
    layers (the caller keeps its interval pass)."""
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
    spread = (first.abs() * rad[0][:, :, None]).sum(1)
    for i in range(1, h):
        q = weights[i] @ (mid[i - 1][:, :, None] * q)
        spread = spread + ((rows[i][:, :, None] * q).abs() * rad[i][:, :, None]).sum(1)
    spread = spread + _higher_order(weights, mid, rad, out_row)
    return centre - spread, centre + spread


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
