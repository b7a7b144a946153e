"""The deterministic certificate (l_inf, exact arithmetic bounds; ReLU or Softplus MLPs and
small sequential CNNs, gradient saliency of the logit): interval bounds on the gradient over
the ball (MLPs here, CNNs in :mod:`r2et.certify.conv`; or, for ReLU MLPs, every activation
pattern, :mod:`r2et.certify.patterns`), and bisection of the largest radius at which the
top-k set is certified. The maths is in :mod:`r2et.certify`'s docstring."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from r2et._checks import check_k
from r2et.certify.centred import centred_gradient_bounds
from r2et.certify.conv import (
    CNN_LAYERS,
    conv_gradient_bounds,
    conv_layers,
    conv_stages,
    largest_activation,
)
from r2et.certify.crown import crown_forward, crown_states
from r2et.certify.intervals import (
    ActState,
    activation_backward,
    logit_margins,
    relu_state,
    softplus_box,
)
from r2et.certify.patterns import pattern_affine_maps
from r2et.certify.result import CertificateResult
from r2et.explain import Explainer

#: The bounds of the deterministic certificate (MLPs; a CNN always gets ``"interval"``):
#: ``"interval"`` (IBP pre-activations, intervals through the gradient's backward pass),
#: ``"crown"`` (the same backward pass from the tighter pre-activations and logit margins of
#: the linear relaxation, :mod:`r2et.certify.crown`), ``"patterns"`` (every reachable
#: activation pattern enumerated, :mod:`r2et.certify.patterns`, on top of ``"crown"``; inputs
#: with too many patterns, and Softplus networks, keep ``"crown"``).
BOUNDS = ("patterns", "crown", "interval")

__all__ = [
    "deterministic_certificate",
    "gradient_bounds",
    "mlp_layers",
    "network_layers",
    "relu_layers",
    "score_bounds",
]


def mlp_layers(
    model: nn.Module, x: torch.Tensor | None = None
) -> tuple[list[nn.Linear], list[nn.Module]]:
    """``(linears, activations)`` of a feed-forward network ``Linear (act Linear)*`` whose
    activations are ``nn.ReLU`` or ``nn.Softplus`` (``nn.Flatten``, ``nn.Identity`` and
    ``nn.Dropout`` are skipped; they act as identity on flattened inputs in eval mode). With
    ``x``, checks that composing these layers reproduces ``model(x)`` (so a model whose
    ``forward`` does something else is refused). Raises ``TypeError`` for any other
    architecture."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"the deterministic certificate needs an nn.Module, got {type(model)}")
    seq: list[Any] = []
    for m in model.modules():
        if any(True for _ in m.children()):
            continue
        if isinstance(m, (nn.Linear, nn.ReLU, nn.Softplus)):
            seq.append(m)
        elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
            continue
        else:
            raise TypeError(
                f"the deterministic certificate supports MLPs (Linear/ReLU/Softplus/Flatten) "
                f"and sequential CNNs (Conv2d/MaxPool2d/AvgPool2d/Standardize, "
                f"r2et.certify.conv), found {type(m).__name__}; use method='smoothed'"
            )
    ok = len(seq) % 2 == 1 and all(
        isinstance(m, nn.Linear) == (i % 2 == 0) for i, m in enumerate(seq)
    )
    if not ok:
        raise TypeError(
            "the deterministic certificate needs a network Linear (ReLU|Softplus Linear)*; "
            "use method='smoothed'"
        )
    layers, acts = seq[0::2], seq[1::2]
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
            if i < len(acts):
                h = acts[i](h)
        out = model(x)
        if out.shape != h.shape or not torch.allclose(out, h, rtol=1e-4, atol=1e-5):
            raise TypeError(
                "the model's forward is not the composition of its Linear/activation layers; "
                "use method='smoothed'"
            )
    return layers, acts


def network_layers(model: nn.Module, x: torch.Tensor | None = None) -> tuple[str, Any]:
    """What the deterministic certificate sees in ``model``: ``("mlp", (linears,
    activations))`` (:func:`mlp_layers`) for a network without convolution, pooling or
    Standardize layers, else ``("cnn", layers)``
    (:func:`~r2et.certify.conv.conv_layers`: a sequential CNN ending in a Linear layer). With
    ``x``, the layers' composition is checked against ``model(x)``. Raises ``TypeError`` for
    any other network (the message names the offending layer)."""
    if isinstance(model, nn.Module) and any(isinstance(m, CNN_LAYERS) for m in model.modules()):
        return "cnn", conv_layers(model, x)
    return "mlp", mlp_layers(model, x)


def relu_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of a feed-forward ReLU network ``Linear (ReLU Linear)*``
    (:func:`mlp_layers`, every activation a ReLU). Raises ``TypeError`` for any other
    architecture."""
    layers, acts = mlp_layers(model, x)
    if not all(isinstance(a, nn.ReLU) for a in acts):
        raise TypeError(
            "this needs a ReLU MLP (Linear/ReLU/Flatten), found Softplus; use method='smoothed'"
        )
    return layers


def softplus_terms(acts: list[nn.Module]) -> list[tuple[float, float] | None]:
    """Per hidden layer, ``(beta, threshold)`` of an ``nn.Softplus`` or None for a ReLU."""
    return [(float(a.beta), float(a.threshold)) if isinstance(a, nn.Softplus) else None
            for a in acts]  # fmt: skip


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
    softplus: list[tuple[float, float] | None] | None = None,
    crown: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interval bounds over the box ``[low, high]`` ``(N, F)`` of an MLP given by its
    ``(W, b)`` pairs (ReLU activations, or per hidden layer ``(beta, threshold)`` of a
    Softplus in ``softplus``, :func:`softplus_terms`): ``(g_l, g_u, margin_l)`` with
    ``g_l <= ∂z_c/∂x <= g_u`` ``(N, F)`` for the target class ``c`` ``(N,)`` at every point
    of the box (where the gradient exists; ReLU'(0) is taken as 0, torch's convention, and
    unstable units cover both), and ``margin_l`` ``(N, C)`` a lower bound of ``z_c − z_j``
    (``+inf`` at ``j = c``).

    Forward: IBP in centre-radius form, ``c' = W c + b``, ``r' = |W| r``, then ReLU.
    Backward: ``v = W_L[c]``; per hidden layer, masks fixed on (keep), fixed off (zero) or
    unstable (``[min(0, v_l), max(0, v_u)]``), then ``v ← v W`` in centre-radius form. A
    Softplus layer passes the box through the (monotone) softplus, and its derivative lies in
    ``[d_l, d_u] = [σ(β l), σ(β u)]`` (positive): ``v ← [min(v_l d_l, v_l d_u),
    max(v_u d_l, v_u d_u)]``, the interval product (a ReLU's masks are the case ``d ∈ {0},
    {1}, [0, 1]``).
    ``slack`` (relative): a unit counts as stable only if its bound clears 0 by ``slack`` times
    the magnitude ``|W| |c| + |W| r + |b|`` of its pre-activation, and the margins are lowered
    by the same relative amount, so that float32 rounding of the deployed model (which may put a
    pre-activation within ~1e-6 of 0 on the other side) cannot undo a certificate.
    Everything is differentiable w.r.t. the parameters (used by the ``r2et-cert`` training
    term).

    ``crown=True``: the pre-activation bounds (hence the ReLU masks and Softplus derivative
    intervals) and the logit margins come from the linear relaxation of
    :func:`~r2et.certify.crown.crown_states` instead of IBP; the gradient's backward pass is
    the same interval pass, and also its centred form
    (:func:`~r2et.certify.centred.centred_gradient_bounds`: the first-order terms in the
    derivatives exact, the rest by intervals). The results are intersected with the interval
    result (all are sound), so it is never looser.
    """
    states, margin = _interval_states(params, low, high, target, slack, softplus)
    vl, vu = _gradient_backward(params, states, target)
    if crown:
        forward = crown_forward(params, low, high, softplus)
        c_states, c_margin = crown_states(params, low, high, target, slack, softplus, forward)
        cl, cu = _gradient_backward(params, c_states, target)
        vl, vu, margin = (
            torch.maximum(vl, cl),
            torch.minimum(vu, cu),
            torch.maximum(margin, c_margin),
        )
        centred = centred_gradient_bounds(params, c_states, target, (low, high), softplus, forward)
        if centred is not None:
            vl, vu = torch.maximum(vl, centred[0]), torch.minimum(vu, centred[1])
    return vl, vu, margin


def _interval_states(
    params: list[tuple[torch.Tensor, torch.Tensor]],
    low: torch.Tensor,
    high: torch.Tensor,
    target: torch.Tensor,
    slack: float,
    softplus: list[tuple[float, float] | None] | None,
) -> tuple[list[ActState], torch.Tensor]:
    """IBP forward (:func:`gradient_bounds`): every hidden activation's backward state and
    the logit margins' lower bound over the last hidden box."""
    # per hidden layer: (on, off, None) masks of a ReLU, or (d_l, d_u, True) of a Softplus
    states: list[ActState] = []
    acts = softplus or [None] * (len(params) - 1)
    lo, hi = low, high
    for (w, b), act in zip(params[:-1], acts):
        c, r = (lo + hi) / 2, (hi - lo) / 2
        pc, pr = c @ w.T + b, r @ w.abs().T
        pl, pu = pc - pr, pc + pr
        if act is not None:  # Softplus(beta, threshold)
            lo, hi, dl, du = softplus_box(pl, pu, *act)
            states.append((dl, du, True))
            continue
        eps = slack * (c.abs() @ w.abs().T + pr + b.abs()) if slack > 0 else 0.0
        states.append(relu_state(pl, pu, eps, slack))
        lo, hi = pl.clamp_min(0), pu.clamp_min(0)
    w_last, b_last = params[-1]
    return states, logit_margins(w_last, b_last, lo, hi, target, slack)  # z_c − z_j over the box


def _gradient_backward(
    params: list[tuple[torch.Tensor, torch.Tensor]], states: list[ActState], target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient row vector ``W_L[c]`` carried back through the activations' states and the
    linear maps in interval arithmetic (:func:`gradient_bounds`)."""
    vl = vu = params[-1][0][target]
    for (w, _), state in zip(reversed(params[:-1]), reversed(states)):
        vl, vu = activation_backward(vl, vu, state)
        c, r = (vl + vu) / 2, (vu - vl) / 2
        c, r = c @ w, r @ w.abs()
        vl, vu = c - r, c + r
    return vl, vu


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
    reduction (channel sums, group sums) of the bounds, which are both >= 0. The bounds may
    come flat ``(N, F)`` or in the inputs' shape."""
    gl, gu = gl.reshape(low.shape), gu.reshape(low.shape)
    if explainer.method == "grad_x_input":
        corners = torch.stack([low * gl, low * gu, high * gl, high * gu])
        gl, gu = corners.min(0).values, corners.max(0).values
    lower = torch.maximum(gl, -gu).clamp_min(0)
    upper = torch.maximum(-gl, gu)
    shape = x.shape
    return explainer.reduce_attr(lower.view(shape)), explainer.reduce_attr(upper.view(shape))


def _pattern_check(
    params: list[tuple[torch.Tensor, torch.Tensor]],
    ex: Explainer,
    shape: tuple[int, ...],
    lo: torch.Tensor,
    hi: torch.Tensor,
    t: torch.Tensor,
    top_idx: torch.Tensor,
    tol: torch.Tensor,
    rtol: float,
    max_patterns: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(n_in, cls, valid)`` of the pattern bound on the boxes ``[lo, hi]`` ``(n, F)``: per
    input the number of top-k units certified to stay in the top-k under *every* enumerated
    pattern, whether the class is certified, and whether the input had few enough patterns
    (:func:`~r2et.certify.patterns.pattern_affine_maps`)."""
    a, c, valid = pattern_affine_maps(params, lo, hi, rtol, max_patterns)
    n, p, n_cls, f = a.shape
    kk = top_idx.shape[1]
    g = a.gather(2, t.view(n, 1, 1, 1).expand(n, p, 1, f)).squeeze(2)  # (n, P, F)
    # the gradient is exact per pattern: score bounds with g_l = g_u = g (x' still in the box)
    box_lo, box_hi = (b[:, None].expand(n, p, f).reshape(n * p, *shape) for b in (lo, hi))
    gp = g.reshape(n * p, *shape)
    sl, su = (s.view(n, p, -1) for s in score_bounds(ex, box_lo, box_lo, box_hi, gp, gp))
    lo_t = sl.gather(2, top_idx[:, None].expand(n, p, kk))
    rivals = (su[:, :, None, :] >= (lo_t - tol[:, None])[..., None]).sum(-1) - 1
    n_in = ((rivals <= kk - 1) & (lo_t > tol[:, None])).sum(-1).amin(1)
    # logit margins z_t − z_j, minimised over the box for each pattern
    own_a = a.gather(2, t.view(n, 1, 1, 1).expand(n, p, 1, f))
    own_c = c.gather(2, t.view(n, 1, 1).expand(n, p, 1))
    da, dc = own_a - a, own_c - c  # (n, P, C, F), (n, P, C)
    xc, xr = (lo + hi) / 2, (hi - lo) / 2
    spread = torch.einsum("npcf,nf->npc", da.abs(), xr)
    margin = torch.einsum("npcf,nf->npc", da, xc) + dc - spread
    size = torch.einsum("npcf,nf->npc", da.abs(), xc.abs()) + spread + dc.abs()
    margin = margin - rtol * size
    own = torch.arange(n_cls, device=t.device)[None, None, :] == t[:, None, None]
    cls = margin.masked_fill(own, float("inf")).flatten(1).amin(1) > 0
    return n_in, cls, valid


def _pattern_search(
    check: Any, lo_r: torch.Tensor, max_radius: float, n_bisect: int
) -> torch.Tensor:
    """The largest radius the pattern certificate holds at, from the radius ``lo_r`` of the
    interval (or CROWN) bound (certified, a lower bound) up: the radius is doubled while it
    holds (from ``max_radius · 2^-n_bisect`` where ``lo_r`` is 0), then the bracket
    ``[lo, hi]`` is bisected ``n_bisect`` times (``hi`` = 2 lo: a relative precision of
    ``2^-n_bisect``). Rows are checked only while their bracket is open."""
    step = max_radius * 2.0**-n_bisect
    lo = lo_r.clone()
    hi = torch.full_like(lo, float("inf"))
    open_ = lo < max_radius
    while bool(open_.any()):  # doubling: at most log2(2^n_bisect) + 1 rounds
        rows = open_.nonzero().squeeze(1)
        cand = torch.clamp(torch.maximum(2 * lo[rows], torch.full_like(lo[rows], step)),
                           max=max_radius)  # fmt: skip
        held = check(cand, rows)[0]
        lo[rows] = torch.where(held, cand, lo[rows])
        hi[rows] = torch.where(held, hi[rows], cand)
        open_[rows] = held & (cand < max_radius)
    for _ in range(n_bisect):
        rows = (hi < float("inf")).nonzero().squeeze(1)
        if not len(rows):
            break
        mid = (lo[rows] + hi[rows]) / 2
        held = check(mid, rows)[0]
        lo[rows] = torch.where(held, mid, lo[rows])
        hi[rows] = torch.where(held, hi[rows], mid)
    return torch.maximum(lo, lo_r)


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
    bound: str = "patterns",
    max_patterns: int = 1024,
) -> CertificateResult:
    """The deterministic certificate of :func:`~r2et.certify.certified_radius` (arguments
    checked there, model in eval mode): for each row, on the box ``B_r = ball(x, r) ∩ bounds``,
    gradient bounds ``[g_l, g_u]`` (MLP: :func:`gradient_bounds`, with the CROWN
    pre-activations unless ``bound="interval"``; CNN, see :func:`network_layers`:
    :func:`~r2et.certify.conv.conv_gradient_bounds`, interval bound only), score bounds
    ``[s_l, s_u]`` (:func:`score_bounds`), and the top-k set ``T`` of
    ``s(x)`` certified at ``r`` when, for every ``i ∈ T``, ``s_l_i > tol`` and
    ``#{j ≠ i : s_u_j >= s_l_i − tol} <= k − 1`` (``tol = rtol · max_j s_j(x)``), and (with
    ``target=None``) every logit margin ``z_c − z_j`` has a positive lower bound. The largest
    such ``r`` is bisected on ``[0, max_radius]``; for ReLU MLPs with ``bound="patterns"`` it is
    then pushed up with the pattern bound (a Softplus MLP's ``"patterns"`` is ``"crown"``).
    Returns a :class:`CertificateResult` with the
    certified P@k on ``grid`` (``params["network"]``: ``"mlp"`` or ``"cnn"``;
    ``params["bound"]``: the bound actually used)."""
    if fkw:
        raise ValueError(
            "the deterministic certificate takes no forward keywords (MLPs and CNNs only)"
        )
    if ex.method not in ("grad", "grad_x_input") or ex.output != "logit":
        raise ValueError(
            "the deterministic certificate needs Explainer('grad' or 'grad_x_input', "
            f"output='logit'), got method={ex.method!r}, output={ex.output!r}"
        )
    network, layers = network_layers(model, x)
    dev = x.device
    flat_features = max(1, int(x[0].numel()) if len(x) else 1)
    in_shape = tuple(x.shape[1:])
    if network == "cnn":  # intervals only: CNNs have no pattern enumeration here
        bound = "interval"
        stages = conv_stages(layers, dev)
        rows_per_chunk = max(1, 2**23 // largest_activation(layers, x))  # ~1 GB in float64

        def grad_bounds(
            lo: torch.Tensor, hi: torch.Tensor, tt: torch.Tensor, crown: bool
        ) -> tuple[Any, ...]:
            parts = [
                conv_gradient_bounds(
                    stages, a.view(-1, *in_shape), b.view(-1, *in_shape), c, slack=rtol
                )
                for a, b, c in zip(
                    lo.split(rows_per_chunk), hi.split(rows_per_chunk), tt.split(rows_per_chunk)
                )
            ]
            gl, gu, margin = (torch.cat(z) for z in zip(*parts))
            return gl.flatten(1), gu.flatten(1), margin

        params: list[tuple[torch.Tensor, torch.Tensor]] = []
    else:
        linears, acts = layers
        softplus = softplus_terms(acts)
        if any(softplus) and bound == "patterns":  # activation patterns exist only for ReLUs
            bound = "crown"
        params = _params64(linears, dev)
        softplus_arg = softplus if any(softplus) else None
        # CROWN's coefficients are (rows, 2 H, F): rows in chunks of ~2^24 entries (128 MB)
        crown_rows = max(1, 2**24 // (2 * max(w.shape[0] for w, _ in params) * flat_features))

        def grad_bounds(
            lo: torch.Tensor, hi: torch.Tensor, tt: torch.Tensor, crown: bool
        ) -> tuple[Any, ...]:
            if not crown or len(lo) <= crown_rows:
                return gradient_bounds(params, lo, hi, tt, rtol, softplus_arg, crown)
            parts = [
                gradient_bounds(params, a, b, c, rtol, softplus_arg, crown)
                for a, b, c in zip(lo.split(crown_rows), hi.split(crown_rows), tt.split(crown_rows))
            ]
            return tuple(torch.cat(z) for z in zip(*parts))

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

    widest = max((max(w.shape) for w, _ in params), default=1)
    chunk = max(1, int(2**28 // (8 * 3 * max_patterns * widest * flat.shape[1])))
    every = torch.arange(x.shape[0], device=dev)

    def check(
        r: torch.Tensor,
        rows: torch.Tensor = every,
        patterns: bool = bound == "patterns",
        crown: bool = bound != "interval",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(set certified, # top-k features certified in, class certified) of ``rows`` at
        radii ``r`` (one per row): the interval (``crown``: CROWN) certificate, or the
        stronger of it and the pattern certificate (both sound)."""
        f0, tt, top, tl = flat[rows], t[rows], top_idx[rows], tol[rows]
        lo, hi = f0 - r[:, None], f0 + r[:, None]
        if box is not None:  # ball ∩ box, widened to hold x itself should x lie outside
            b_lo, b_hi = (b[rows] if b.dim() > 0 else b for b in box)
            lo = torch.minimum(torch.maximum(lo, b_lo), f0)
            hi = torch.maximum(torch.minimum(hi, b_hi), f0)
        x0 = x64[rows]
        gl, gu, margin = grad_bounds(lo, hi, tt, crown)
        sl, su = score_bounds(ex, x0, lo.view_as(x0), hi.view_as(x0), gl, gu)
        lo_t = sl.gather(1, top)  # (n, k)
        rivals = (su.unsqueeze(1) >= (lo_t - tl).unsqueeze(2)).sum(2) - 1  # minus itself
        cert_in = (rivals <= kk - 1) & (lo_t > tl)
        cls = margin.amin(1) > 0 if keep_class else torch.ones_like(r, dtype=torch.bool)
        n_in = cert_in.sum(1) * cls
        if patterns and len(rows):
            # rows of a chunk share one pattern index (a chunk that does not fit is split):
            # rows with similar radii together, so that fewer splits are needed
            order = torch.argsort(r)
            parts = [
                _pattern_check(
                    params,
                    ex,
                    tuple(x.shape[1:]),
                    lo[o],
                    hi[o],
                    tt[o],
                    top[o],
                    tl[o],
                    rtol,
                    max_patterns,
                )  # fmt: skip
                for o in order.split(chunk)
            ]
            p_in, p_cls, valid = (torch.cat(z)[torch.argsort(order)] for z in zip(*parts))
            p_cls = p_cls if keep_class else torch.ones_like(p_cls)
            p_in = torch.where(valid & p_cls, p_in, torch.zeros_like(p_in))
            n_in = torch.maximum(n_in, p_in)
            cls = cls | (valid & p_cls)
        return n_in == kk, n_in, cls

    def bisect(crown: bool) -> torch.Tensor:
        """The interval (``crown``: CROWN) radius: bisection of [0, max_radius], every row."""
        lo_r = torch.zeros(x.shape[0], dtype=torch.float64, device=dev)
        hi_r = torch.full_like(lo_r, float(max_radius))
        ok, _, _ = check(hi_r, patterns=False, crown=crown)
        lo_r = torch.where(ok, hi_r, lo_r)
        for _ in range(n_bisect):
            mid = (lo_r + hi_r) / 2
            ok_mid, _, _ = check(mid, patterns=False, crown=crown)
            ok_mid = ok_mid & ~ok
            lo_r = torch.where(ok_mid, mid, lo_r)
            hi_r = torch.where(ok_mid | ok, hi_r, mid)
        return lo_r

    lo_r = bisect(bound == "crown")
    if bound == "patterns":
        # beyond the interval radius with the interval + pattern check (doubling, then
        # bisection to 2^-n_bisect relative), then the larger of it and CROWN's radius; the
        # certify tables were measured on this path (a row's pattern check now depends on
        # that row alone, so starting from CROWN's radius would differ only by the search's
        # precision)
        lo_r = _pattern_search(
            lambda r, rows: check(r, rows, crown=False), lo_r, float(max_radius), n_bisect
        )
        lo_r = torch.maximum(lo_r, bisect(True))
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
            "bound": bound,
            "max_patterns": int(max_patterns),
            "network": network,
        },
        prediction_certified=cls_at_radius,
    )
