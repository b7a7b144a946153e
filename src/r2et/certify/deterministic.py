"""The deterministic certificate (l_inf, exact arithmetic bounds; ReLU MLPs, gradient saliency
of the logit): interval bounds on the gradient over the ball, and bisection of the largest
radius at which the top-k set is certified. The maths is in :mod:`r2et.certify`'s docstring."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from r2et._checks import check_k
from r2et.certify.result import CertificateResult
from r2et.explain import Explainer

__all__ = ["deterministic_certificate", "gradient_bounds", "relu_layers", "score_bounds"]


def relu_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of a feed-forward ReLU network ``Linear (ReLU Linear)*``
    (``nn.Flatten``, ``nn.Identity`` and ``nn.Dropout`` are skipped; they act as identity on
    flattened inputs in eval mode). With ``x``, checks that composing these layers reproduces
    ``model(x)`` (so a model whose ``forward`` does something else is refused). Raises
    ``TypeError`` for any other architecture."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"the deterministic certificate needs an nn.Module, got {type(model)}")
    seq: list[Any] = []
    for m in model.modules():
        if any(True for _ in m.children()):
            continue
        if isinstance(m, nn.Linear):
            seq.append(m)
        elif isinstance(m, nn.ReLU):
            seq.append("relu")
        elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
            continue
        else:
            raise TypeError(
                f"the deterministic certificate supports ReLU MLPs (Linear/ReLU/Flatten), "
                f"found {type(m).__name__}; use method='smoothed'"
            )
    ok = len(seq) % 2 == 1 and all(
        isinstance(m, nn.Linear) if i % 2 == 0 else m == "relu" for i, m in enumerate(seq)
    )
    if not ok:
        raise TypeError(
            "the deterministic certificate needs a network Linear (ReLU Linear)*; "
            "use method='smoothed'"
        )
    layers = [m for m in seq if isinstance(m, nn.Linear)]
    if x is not None:
        n_in = int(x[0].numel()) if x.dim() >= 1 and x.shape[0] > 0 else -1
        if x.dim() < 2 or n_in != layers[0].in_features:
            raise ValueError(
                f"x of shape {tuple(x.shape)} does not fit the network, whose first Linear "
                f"layer takes {layers[0].in_features} features: pass a batch (N, ...) of "
                "inputs with that many entries each"
            )
        h = x.flatten(1)
        for i, lin in enumerate(layers):
            h = lin(h)
            if i < len(layers) - 1:
                h = torch.relu(h)
        out = model(x)
        if out.shape != h.shape or not torch.allclose(out, h, rtol=1e-4, atol=1e-5):
            raise TypeError(
                "the model's forward is not the composition of its Linear/ReLU layers; "
                "use method='smoothed'"
            )
    return layers


def _params64(layers: list[nn.Linear], device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for lin in layers:
        w = lin.weight.detach().to(device=device, dtype=torch.float64)
        b = lin.bias
        b = torch.zeros(w.shape[0], dtype=w.dtype, device=device) if b is None else b
        out.append((w, b.detach().to(device=device, dtype=torch.float64)))
    return out


def gradient_bounds(
    params: list[tuple[torch.Tensor, torch.Tensor]],
    low: torch.Tensor,
    high: torch.Tensor,
    target: torch.Tensor,
    slack: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interval bounds over the box ``[low, high]`` ``(N, F)`` of a ReLU MLP given by its
    ``(W, b)`` pairs: ``(g_l, g_u, margin_l)`` with ``g_l <= ∂z_c/∂x <= g_u`` ``(N, F)`` for the
    target class ``c`` ``(N,)`` at every point of the box (where the gradient exists; ReLU'(0)
    is taken as 0, torch's convention, and unstable units cover both), and ``margin_l``
    ``(N, C)`` a lower bound of ``z_c − z_j`` (``+inf`` at ``j = c``).

    Forward: IBP in centre-radius form, ``c' = W c + b``, ``r' = |W| r``, then ReLU.
    Backward: ``v = W_L[c]``; per hidden layer, masks fixed on (keep), fixed off (zero) or
    unstable (``[min(0, v_l), max(0, v_u)]``), then ``v ← v W`` in centre-radius form.
    ``slack`` (relative): a unit counts as stable only if its bound clears 0 by ``slack`` times
    the magnitude ``|W| |c| + |W| r + |b|`` of its pre-activation, and the margins are lowered
    by the same relative amount, so that float32 rounding of the deployed model (which may put a
    pre-activation within ~1e-6 of 0 on the other side) cannot undo a certificate.
    Everything is differentiable w.r.t. the parameters (used by the ``r2et-cert`` training
    term).
    """
    states: list[tuple[torch.Tensor, torch.Tensor]] = []
    lo, hi = low, high
    for w, b in params[:-1]:
        c, r = (lo + hi) / 2, (hi - lo) / 2
        pc, pr = c @ w.T + b, r @ w.abs().T
        pl, pu = pc - pr, pc + pr
        eps = slack * (c.abs() @ w.abs().T + pr + b.abs()) if slack > 0 else 0.0
        states.append((pl > eps, pu < -eps) if slack > 0 else (pl > 0, pu <= 0))
        lo, hi = pl.clamp_min(0), pu.clamp_min(0)
    w_last, b_last = params[-1]
    # logit margins z_c − z_j over the last hidden box
    wd = w_last[target].unsqueeze(1) - w_last.unsqueeze(0)  # (N, C, H)
    bd = b_last[target].unsqueeze(1) - b_last.unsqueeze(0)  # (N, C)
    c, r = (lo + hi) / 2, (hi - lo) / 2
    spread = (wd.abs() @ r.unsqueeze(-1)).squeeze(-1)
    margin = (wd @ c.unsqueeze(-1)).squeeze(-1) - spread + bd
    if slack > 0:
        size = (wd.abs() @ c.abs().unsqueeze(-1)).squeeze(-1) + spread + bd.abs()
        margin = margin - slack * size
    own = torch.arange(w_last.shape[0], device=target.device)[None, :] == target[:, None]
    margin = margin.masked_fill(own, float("inf"))
    # gradient row vector, backwards
    vl = vu = w_last[target]
    for (w, _), (on, off) in zip(reversed(params[:-1]), reversed(states)):
        unstable = ~(on | off)
        vl = torch.where(off, torch.zeros_like(vl), torch.where(unstable, vl.clamp_max(0), vl))
        vu = torch.where(off, torch.zeros_like(vu), torch.where(unstable, vu.clamp_min(0), vu))
        c, r = (vl + vu) / 2, (vu - vl) / 2
        c, r = c @ w, r @ w.abs()
        vl, vu = c - r, c + r
    return vl, vu, margin


def score_bounds(
    explainer: Explainer,
    x: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    gl: torch.Tensor,
    gu: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds ``(s_l, s_u)`` of the explainer's scores from gradient bounds over the box:
    ``grad``: ``|g_j| ∈ [max(0, g_l, −g_u), max(−g_l, g_u)]``; ``grad_x_input``: ``|x_j g_j|``
    with ``x_j ∈ [low_j, high_j]`` (interval product: the extreme corners); then the explainer's
    reduction (channel sums, group sums) of the bounds, which are both >= 0."""
    if explainer.method == "grad_x_input":
        corners = torch.stack([low * gl, low * gu, high * gl, high * gu])
        gl, gu = corners.min(0).values, corners.max(0).values
    lower = torch.maximum(gl, -gu).clamp_min(0)
    upper = torch.maximum(-gl, gu)
    shape = x.shape
    return explainer.reduce_attr(lower.view(shape)), explainer.reduce_attr(upper.view(shape))


def deterministic_certificate(
    model: Any,
    x: torch.Tensor,
    ex: Explainer,
    k: int,
    target: Any,
    grid: torch.Tensor,
    bounds: Any,
    max_radius: float,
    n_bisect: int,
    rtol: float,
    fkw: dict[str, Any],
) -> CertificateResult:
    if fkw:
        raise ValueError("the deterministic certificate takes no forward keywords (MLPs only)")
    if ex.method not in ("grad", "grad_x_input") or ex.output != "logit":
        raise ValueError(
            "the deterministic certificate needs Explainer('grad' or 'grad_x_input', "
            f"output='logit'), got method={ex.method!r}, output={ex.output!r}"
        )
    layers = relu_layers(model, x)
    dev = x.device
    params = _params64(layers, dev)
    keep_class = target is None
    t = ex.resolve_target(model, x, target)
    with torch.enable_grad():
        s0 = ex.scores(model, x, t).detach()
    kk = check_k(k, s0.shape[1])
    top_idx = s0.topk(kk, dim=1).indices
    tol = rtol * s0.amax(1, keepdim=True).to(torch.float64)
    x64 = x.detach().to(torch.float64)
    flat = x64.flatten(1)
    box = None
    if bounds is not None:
        box = tuple(torch.as_tensor(b, dtype=torch.float64, device=dev) for b in bounds)
        box = tuple(b.expand_as(x64).flatten(1) if b.dim() > 0 else b for b in box)

    def check(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(set certified, # top-k features certified in, class certified) at radii r (N,)."""
        lo, hi = flat - r[:, None], flat + r[:, None]
        if box is not None:  # ball ∩ box, widened to hold x itself should x lie outside
            lo = torch.minimum(torch.maximum(lo, box[0]), flat)
            hi = torch.maximum(torch.minimum(hi, box[1]), flat)
        gl, gu, margin = gradient_bounds(params, lo, hi, t, slack=rtol)
        sl, su = score_bounds(ex, x64, lo.view_as(x64), hi.view_as(x64), gl, gu)
        lo_t = sl.gather(1, top_idx)  # (N, k)
        rivals = (su.unsqueeze(1) >= (lo_t - tol).unsqueeze(2)).sum(2) - 1  # minus itself
        cert_in = (rivals <= kk - 1) & (lo_t > tol)
        cls = margin.amin(1) > 0 if keep_class else torch.ones_like(r, dtype=torch.bool)
        n_in = cert_in.sum(1) * cls
        return n_in == kk, n_in, cls

    n_rows = x.shape[0]
    lo_r = torch.zeros(n_rows, dtype=torch.float64, device=dev)
    hi_r = torch.full_like(lo_r, float(max_radius))
    ok, _, _ = check(hi_r)
    lo_r = torch.where(ok, hi_r, lo_r)
    for _ in range(n_bisect):
        mid = (lo_r + hi_r) / 2
        ok_mid, _, _ = check(mid)
        ok_mid = ok_mid & ~ok
        lo_r = torch.where(ok_mid, mid, lo_r)
        hi_r = torch.where(ok_mid | ok, hi_r, mid)
    # certified P@k on the grid (one batched pass per radius)
    curve = []
    for r in grid.tolist():
        _, n_in, _ = check(torch.full_like(lo_r, r))
        curve.append(n_in.to(torch.float64) / kk)
    p_at_k = torch.stack(curve, 1)
    cls_at_radius = check(lo_r)[2] if keep_class else None
    return CertificateResult(
        method="deterministic",
        norm="linf",
        k=kk,
        radius=lo_r.to(x.dtype),
        topk=top_idx,
        radii=grid,
        p_at_k=p_at_k,
        seconds=0.0,
        params={
            "max_radius": float(max_radius),
            "n_bisect": int(n_bisect),
            "box": bounds is not None,
            "rtol": float(rtol),
            "prediction_fixed": keep_class,
        },
        prediction_certified=cls_at_radius,
    )
