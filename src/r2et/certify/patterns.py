"""Activation-pattern bounds for the deterministic certificate: every ReLU pattern the ball
can reach, enumerated, instead of intervals on the gradient.

A ReLU MLP is affine on each *activation pattern* (which hidden units are on):
``z(x') = A_p x' + c_p`` with ``A_p = W_L D_{L−1} W_{L−1} … D_1 W_1``, and its logit gradient
is the row ``A_p[c]``, a constant of the pattern. Over the box ``B`` only the *unstable* units
(pre-activation interval straddling 0) can switch. Enumerating every on/off choice of the
unstable units gives a set of patterns that contains the pattern of every ``x' ∈ B``
(a superset: some choices may be unreachable), so a statement that holds for every enumerated
pattern, with ``x'`` anywhere in ``B``, holds on ``B``. Layer by layer: the pre-activations of
layer ``l`` are affine in ``x'`` for each pattern of the layers below, so their bounds over
``B`` are exact per pattern (centre ``A c_x + c``, radius ``|A| r_x``); a unit is stable when
it is on for every pattern so far (or off for every one), else its two values are added to the
enumeration. Per pattern, gradient saliency is exact (``|A_p[c]|``), gradient × input an
interval only through ``x'`` (``|g_j| · [min |x'_j|, max |x'_j|]``), and the logit margins
``z_c − z_j`` are minimised over ``B`` exactly. Interval arithmetic through the backward pass
(:func:`~r2et.certify.deterministic.gradient_bounds`) treats every unstable mask as an
independent interval and the gradient's entries as unrelated; here the top-k condition is
checked jointly, pattern by pattern, which is why it certifies larger radii.

The number of patterns is ``2^u`` for ``u`` unstable units: inputs with more than
``log2(max_patterns)`` are left to the interval bound (``valid`` is False for them), a
property of the input alone. Everything is batched over inputs and patterns, in chunks of
inputs that keep the per-pattern matrices under ``chunk_bytes``; a chunk whose shared pattern
index would exceed ``max_patterns`` is split.
"""

from __future__ import annotations

import math

import torch

__all__ = ["pattern_affine_maps"]


def _bounds(a: torch.Tensor, c: torch.Tensor, xc: torch.Tensor, xr: torch.Tensor, slack: float):
    """Exact bounds over the box (centre ``xc``, radius ``xr``, ``(n, F)``) of the affine maps
    ``a x + c`` (``a`` ``(n, P, H, F)``, ``c`` ``(n, P, H)``): ``(low, high, eps)`` with
    ``eps`` the float32-safety margin ``slack · (|a| |xc| + |a| xr + |c|)``."""
    centre = torch.einsum("nphf,nf->nph", a, xc) + c
    radius = torch.einsum("nphf,nf->nph", a.abs(), xr)
    eps = slack * (torch.einsum("nphf,nf->nph", a.abs(), xc.abs()) + radius + c.abs())
    return centre - radius, centre + radius, eps


def pattern_affine_maps(
    params: list[tuple[torch.Tensor, torch.Tensor]],
    low: torch.Tensor,
    high: torch.Tensor,
    slack: float,
    max_patterns: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits' affine maps on every enumerated activation pattern of the box
    ``[low, high]`` ``(n, F)``: ``(A, c, valid)`` with ``A`` ``(n, P, C, F)``, ``c`` ``(n, P, C)``
    and ``valid`` ``(n,)`` (False: the row alone has more than ``max_patterns`` patterns;
    ``A``/``c`` then meaningless). ``P <= max_patterns`` is the largest pattern count of a
    group of rows enumerated together (a row with fewer repeats patterns; a repeat changes no
    minimum). Whether a row is valid depends on that row alone: rows share one pattern index,
    so a group whose padded index would need more than ``log2(max_patterns)`` bits is split in
    two and each half enumerated on its own. A unit counts as stable only when its bounds
    clear 0 by ``slack`` times its magnitude, as the interval bound does."""
    bits = int(math.log2(max(1, max_patterns)))
    maps = _maps(params, low, high, slack, bits)
    if maps is not None:
        return maps
    half = low.shape[0] // 2  # > 0: a single row never overflows (its bits are capped)
    parts = [pattern_affine_maps(params, lo, hi, slack, max_patterns)
             for lo, hi in ((low[:half], high[:half]), (low[half:], high[half:]))]  # fmt: skip
    p = max(a.shape[1] for a, _, _ in parts)
    a = torch.cat([_repeat(a, p) for a, _, _ in parts])
    c = torch.cat([_repeat(c, p) for _, c, _ in parts])
    return a, c, torch.cat([v for _, _, v in parts])


def _repeat(t: torch.Tensor, p: int) -> torch.Tensor:
    """``t`` ``(n, P', ...)`` with its patterns repeated cyclically to ``P = p``."""
    idx = torch.arange(p, device=t.device) % t.shape[1]
    return t.index_select(1, idx)


def _maps(
    params: list[tuple[torch.Tensor, torch.Tensor]],
    low: torch.Tensor,
    high: torch.Tensor,
    slack: float,
    bits: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """:func:`pattern_affine_maps` of one group of rows, or None when the group's shared
    pattern index (per layer, the group's largest count of unstable units among valid rows)
    would need more than ``bits`` bits. A row is valid while its own unstable units, summed
    over the layers, fit in ``bits``."""
    n, f = low.shape
    xc, xr = (low + high) / 2, (high - low) / 2
    used = torch.zeros(n, dtype=torch.long, device=low.device)  # each row's own bits
    shared = 0  # bits of the group's pattern index
    valid = torch.ones(n, dtype=torch.bool, device=low.device)
    w1, b1 = params[0]
    a = w1.expand(n, 1, *w1.shape)
    c = b1.expand(n, 1, b1.shape[0])
    for w, b in params[1:]:
        lo, hi, eps = _bounds(a, c, xc, xr, slack)
        on = (lo > eps).all(1)  # (n, H): on for every pattern so far
        off = (hi < -eps).all(1)
        unstable = ~(on | off)
        valid &= used + unstable.sum(1) <= bits
        unstable &= valid[:, None]
        count = unstable.sum(1)
        used += count
        width = int(count.max()) if n else 0
        shared += width
        if shared > bits:
            return None
        if not bool(valid.any()):  # nobody left: no pattern is worth computing
            width = 0
        # the unstable units of each row, padded to `width` (padding: unit 0, weight 0)
        order = torch.sort(unstable.to(torch.int8), stable=True, dim=1, descending=True)
        idx = order.indices[:, :width]
        real = torch.arange(width, device=low.device)[None] < unstable.sum(1, keepdim=True)
        q = torch.arange(2**width, device=low.device)
        onoff = ((q[:, None] >> torch.arange(width, device=low.device)) & 1).to(a.dtype)
        # W diag(mask_q) a = W diag(on) a + Σ_j bit_qj · W[:, u_j] ⊗ a[u_j, :]
        base = torch.einsum("oh,nh,nphf->npof", w, on.to(a.dtype), a)
        base_c = torch.einsum("oh,nh,nph->npo", w, on.to(a.dtype), c) + b
        cols = w.T[idx] * real[..., None].to(a.dtype)  # (n, width, O)
        a_sel = a.gather(2, idx[:, None, :, None].expand(n, a.shape[1], width, f))
        c_sel = c.gather(2, idx[:, None, :].expand(n, c.shape[1], width))
        a = base[:, :, None] + torch.einsum("qj,njo,npjf->npqof", onoff, cols, a_sel)
        c = base_c[:, :, None] + torch.einsum("qj,njo,npj->npqo", onoff, cols, c_sel)
        a, c = a.flatten(1, 2), c.flatten(1, 2)
    return a, c, valid
