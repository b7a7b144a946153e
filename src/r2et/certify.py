"""Certified top-k explanations: a radius within which an explanation's top-k set provably
stays the same.

An attack can only show that an explanation is fragile; a certificate shows that it is stable.
:func:`certified_radius` returns, for every input, a radius and a certified P@k lower bound
at a grid of radii, by one of two methods:

``"deterministic"`` (l_inf, exact arithmetic bounds; ReLU MLPs, gradient saliency of the logit)
    Interval bound propagation (IBP; Gowal et al. 2018) of the input box
    ``B = {x' : ‖x' − x‖_∞ <= r}`` (intersected with the data box ``bounds`` if given)
    through the network gives each hidden unit an interval ``[l, u]`` of pre-activations.
    Units with ``l > 0`` are active on all of ``B`` and units with ``u <= 0`` inactive, so
    their ReLU derivative (mask) is fixed; the others are *unstable*, with mask in ``{0, 1}``.
    The logit gradient of class ``c`` is ``g(x') = W_L[c] D_{L−1}(x') W_{L−1} … D_1(x') W_1``;
    propagating the row vector backwards with interval arithmetic (fixed masks exact,
    unstable masks ``[min(0, v_l), max(0, v_u)]``, a linear map in centre-radius form
    ``c·W, r·|W|``) gives ``g_j(x') ∈ [g_l, g_u]`` for every ``x' ∈ B`` (interval bounds on the
    gradient, as in Wicker et al., ICLR 2023). Scores ``s_j = |g_j|`` (or ``|x_j g_j|``,
    summed over groups/channels) then lie in ``[s_l, s_u]``. A top-k feature ``i ∈ T`` (T =
    top-k of ``s(x)``) is certified to stay in the top-k on ``B`` when fewer than k other
    features ``j`` can reach it, ``#{j ≠ i : s_u_j >= s_l_i} <= k − 1``; the top-k *set* is
    certified when every ``i ∈ T`` is. When the explainer explains the predicted class
    (``target=None``), the prediction must also be certified, by IBP on the logit margins
    ``z_c − z_j > 0``: otherwise the explained output itself could change. The interval
    bounds are inclusion-monotone in ``r``, so the largest certified radius is found by
    bisection (``n_bisect`` halvings of ``[0, max_radius]``); the result is a sound *lower*
    bound on the exact radius, which on tiny networks can be computed by enumerating the
    linear regions (``tests/test_certify.py`` does that and checks the bound never exceeds it).
    Computed in float64; a top-k feature must beat a competitor by ``rtol · max_j s_j(x)``, a
    unit is stable only if its bound clears 0 by ``rtol`` of its magnitude, and so do the
    logit margins, so that float32 rounding of the deployed model cannot undo a certificate.

``"smoothed"`` (l2, probabilistic; any model and explainer)
    Randomized smoothing of the top-k membership (Anani et al., "Pixel-level Certified
    Explanations via Randomized Smoothing", ICML 2025): ``h_j(z) = 1[j ∈ topk(s(z))]`` and the
    smoothed explanation ``m_j(x) = P_{ε∼N(0, σ²I)}[h_j(x + ε) = 1]`` (the membership
    frequency; ``Σ_j m_j = k``). The smoothed top-k is the top-k of ``m``. Per feature, ``n0``
    *selection* samples choose its label (in: ``m_j > 1/2`` by majority, or out), ``n``
    independent *estimation* samples count that label, and the one-sided Clopper-Pearson bound
    ``p_j`` at level ``alpha / F`` (Bonferroni over the F features, so all F statements hold
    together with probability >= ``1 − alpha``) lower-bounds the label's probability. By the
    Gaussian-smoothing Lipschitz argument (Cohen et al., ICML 2019; Salman et al., NeurIPS
    2019: ``Φ⁻¹(m_j(x + δ))`` is ``1/σ``-Lipschitz in δ) the label holds for every
    ``‖δ‖₂ < R_j = σ Φ⁻¹(p_j)`` when ``p_j > 1/2`` (else the feature abstains, ``R_j = 0``).
    At a radius r let I (certified in), O (certified out), U (the rest) have sizes a, o, u.
    Every I feature outranks every O feature at every point of the ball, so every top-k set
    there lies inside ``I ∪ U`` or contains all of I; the smallest overlap of two such sets
    (:func:`smoothed_p_at_k_bound`, checked by brute force in the tests), divided by k, is the
    certified P@k lower bound between the smoothed top-k at ``x`` and at any ``x + δ``. The
    whole smoothed top-k is certified iff ``a = k`` and ``u = 0``; its radius
    is ``min_j R_j`` then. The certificate is about the *smoothed* explanation (whose top-k
    may differ from ``s(x)``'s), with confidence ``1 − alpha`` per input. When
    ``target=None``, each noisy input explains its own predicted class, so ``h`` is a function
    of the noisy input alone, as the argument needs.

Both run on the device of the model and inputs, batched (noise samples in chunks of
``batch_size`` rows; bisection steps over the whole batch at once).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from r2et._checks import (
    check_batch,
    check_bounds_pair,
    check_choice,
    check_int,
    check_k,
    check_positive,
    model_inputs,
)
from r2et._kwargs import repeat_rows, take_rows
from r2et.explain import Explainer, as_explainer, repeat_batch
from r2et.metrics import topk_mask
from r2et.models import eval_mode

__all__ = [
    "CertificateResult",
    "certified_radius",
    "clopper_pearson_lower",
    "gradient_bounds",
    "relu_layers",
    "score_bounds",
    "smoothed_p_at_k_bound",
]

METHODS = ("deterministic", "smoothed")


# ----------------------------------------------------------------------------- result
@dataclass
class CertificateResult:
    """What :func:`certified_radius` certified, per input.

    ``radius`` ``(N,)``: the largest radius (norm ``norm``: ``"linf"`` deterministic, ``"l2"``
    smoothed) at which the whole top-k set is certified, 0 where nothing is. ``topk`` ``(N, k)``:
    the certified set (deterministic: top-k of ``s(x)``; smoothed: top-k of the estimated
    membership frequencies). ``radii`` ``(R,)`` and ``p_at_k`` ``(N, R)``: the certified P@k lower
    bound at each radius. ``prediction_certified`` (deterministic, ``(N,)``): the predicted
    class is fixed within ``radius`` (None when a target was given). Smoothed: ``membership``
    ``(N, F)`` (estimated ``m_j(x)``), ``label_in`` ``(N, F)`` (selected labels), ``p_lower``
    ``(N, F)`` (Clopper-Pearson bound of each label's probability; 0 where the label won at
    most half of the estimation samples, which cannot certify), ``feature_radius``
    ``(N, F)`` (``σ Φ⁻¹(p_j)``, 0 when abstained). ``params``: the settings used.
    """

    method: str
    norm: str
    k: int
    radius: torch.Tensor
    topk: torch.Tensor
    radii: torch.Tensor
    p_at_k: torch.Tensor
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    prediction_certified: torch.Tensor | None = None
    membership: torch.Tensor | None = None
    label_in: torch.Tensor | None = None
    p_lower: torch.Tensor | None = None
    feature_radius: torch.Tensor | None = None

    def p_at_k_mean(self) -> list[float]:
        """Mean certified P@k lower bound at each of ``radii``."""
        return self.p_at_k.double().mean(0).tolist()

    def certified_at(self, r: float) -> torch.Tensor:
        """``(N,)`` bool: the whole top-k set is certified at radius ``r``."""
        return self.radius >= r if r > 0 else self.radius > 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready means: ``{"method", "norm", "radius_mean", "radius_median",
        "certified_fraction", "radii", "p_at_k_mean", "seconds", **params}``."""
        r = self.radius.double().cpu()
        return {
            "method": self.method,
            "norm": self.norm,
            "radius_mean": float(r.mean()),
            "radius_median": float(r.median()),
            "certified_fraction": float((r > 0).double().mean()),
            "radii": self.radii.tolist(),
            "p_at_k_mean": self.p_at_k_mean(),
            "seconds": self.seconds,
            **self.params,
        }

    @staticmethod
    def cat(results: Sequence[CertificateResult]) -> CertificateResult:
        """Concatenate results of batches (same method, k and radii) along the batch."""
        if not results:
            raise ValueError("results must not be empty")
        first = results[0]

        def cat(name: str) -> torch.Tensor | None:
            vals = [getattr(r, name) for r in results]
            return None if vals[0] is None else torch.cat(vals)

        return CertificateResult(
            method=first.method,
            norm=first.norm,
            k=first.k,
            radius=cat("radius"),
            topk=cat("topk"),
            radii=first.radii,
            p_at_k=cat("p_at_k"),
            seconds=sum(r.seconds for r in results),
            params=dict(first.params),
            prediction_certified=cat("prediction_certified"),
            membership=cat("membership"),
            label_in=cat("label_in"),
            p_lower=cat("p_lower"),
            feature_radius=cat("feature_radius"),
        )


# ----------------------------------------------------------------------------- entry point
def certified_radius(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    explainer: Explainer,
    k: int,
    method: str = "deterministic",
    *,
    target: int | torch.Tensor | None = None,
    radii: Sequence[float] | torch.Tensor | None = None,
    bounds: tuple[Any, Any] | None = None,
    max_radius: float = 1.0,
    n_bisect: int = 20,
    rtol: float = 1e-5,
    sigma: float = 0.25,
    n0: int = 64,
    n: int = 1000,
    alpha: float = 0.001,
    batch_size: int = 4096,
    seed: int = 0,
    progress: bool = False,
    **forward_kwargs: Any,
) -> CertificateResult:
    """Certify the top-k set of ``explainer``'s scores on every row of ``x``.

    ``method="deterministic"`` (l_inf; ReLU MLPs of ``nn.Linear``/``nn.ReLU``, explainer
    ``grad`` or ``grad_x_input`` of the ``logit``): interval bounds on the gradient over the
    ball, bisection over ``[0, max_radius]`` (``n_bisect`` halvings; a radius equal to
    ``max_radius`` means "at least"), the ball intersected with
    the data box ``bounds = (low, high)`` when given; ``target=None`` also requires the
    predicted class to be certified. ``method="smoothed"`` (l2; any model and explainer): the
    membership frequency under ``N(0, sigma²)`` noise, ``n0`` selection and ``n`` estimation
    samples in chunks of about ``batch_size`` noisy rows, confidence ``1 − alpha`` per input
    (Bonferroni over features), noise seeded by ``seed``. ``radii``: where the certified P@k
    lower bound is reported (default: 16 points up to ``max_radius``, smoothed: up to
    ``2 sigma``). See the module docstring for the formulas. The model runs in eval mode.

    ``explainer`` may be an explainer name (``"grad"``). ``bounds`` must be finite with
    ``low <= high`` everywhere (an empty box certifies nothing). ``x`` (a floating batch) is
    run where the model is: moved to its device and cast to its floating dtype, so the
    certificate is about the input as the model sees it (a float64 ``x`` of a float32 model is
    certified at its float32 rounding); the result comes back on ``x``'s device. A shape that
    does not fit the model raises one ``ValueError``.
    """
    check_choice("method", method, METHODS)
    check_batch("x", x)
    explainer = as_explainer(explainer)
    if not (hasattr(explainer, "scores") and hasattr(explainer, "reduce_attr")):
        raise TypeError(f"explainer must be an r2et Explainer, got {type(explainer).__name__}")
    if bounds is not None:
        check_bounds_pair("bounds", bounds, tuple(x.shape[1:]))
    check_int("n_bisect", n_bisect, 1)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    check_positive("max_radius", max_radius)
    check_positive("rtol", rtol, allow_zero=True)
    if method == "smoothed":
        check_positive("sigma", sigma)
        check_int("n0", n0, 1)
        check_int("n", n, 1)
        if not (isinstance(alpha, float) and 0 < alpha < 1):
            raise ValueError(f"alpha must be a float in (0, 1), got {alpha!r}")
    top = max_radius if method == "deterministic" else 2 * sigma
    grid = _radii(radii, top, x)
    home = x.device
    t0 = time.perf_counter()
    with eval_mode(model), torch.no_grad():
        x, target, forward_kwargs = model_inputs(model, x, target, forward_kwargs)
        if method == "deterministic":
            res = _deterministic(
                model, x, explainer, k, target, grid, bounds, max_radius, n_bisect, rtol,
                forward_kwargs,
            )  # fmt: skip
        else:
            res = _smoothed(
                model, x, explainer, k, target, grid, sigma, n0, n, alpha, batch_size, seed,
                progress, forward_kwargs,
            )  # fmt: skip
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    res.seconds = time.perf_counter() - t0
    return res if home == x.device else _to_device(res, home)


def _to_device(res: CertificateResult, device: torch.device) -> CertificateResult:
    """``res`` with its per-input tensors moved to ``device`` (the caller's input's; ``radii``
    stays on the CPU, as always)."""
    for f in fields(res):
        v = getattr(res, f.name)
        if isinstance(v, torch.Tensor) and f.name != "radii":
            setattr(res, f.name, v.to(device))
    return res


def _radii(radii: Any, top: float, x: torch.Tensor) -> torch.Tensor:
    if radii is None:
        return torch.linspace(0, top, 17, dtype=torch.float64)[1:]
    r = torch.as_tensor(radii, dtype=torch.float64).flatten().cpu()
    if r.numel() == 0 or not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError("radii must be a non-empty sequence of finite numbers >= 0")
    return r


# ----------------------------------------------------------------------------- deterministic
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


def _deterministic(
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


# ----------------------------------------------------------------------------- smoothed
def _log_betacf(
    a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, iters: int = 2000
) -> torch.Tensor:
    """Log of the continued fraction of the incomplete beta function (modified Lentz), float64;
    stops once every entry has converged to machine precision."""
    tiny = 1e-300

    def nz(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t.abs() < tiny, torch.full_like(t, tiny), t)

    qab, qap, qam = a + b, a + 1, a - 1
    c = torch.ones_like(x)
    d = 1 / nz(1 - qab * x / qap)
    h = d
    for m in range(1, iters + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 / nz(1 + aa * d)
        c = nz(1 + aa / c)
        h = h * d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 / nz(1 + aa * d)
        c = nz(1 + aa / c)
        step = d * c
        h = h * step
        if m % 8 == 0 and float((step - 1).abs().max()) < 1e-14:
            break
    return h.log()


def _betainc(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Regularised incomplete beta ``I_x(a, b)`` (float64 tensors, 0 < x < 1), by its continued
    fraction on the side where it converges fast (``x < (a+1)/(a+b+2)``), else by symmetry
    ``I_x(a, b) = 1 − I_{1−x}(b, a)``."""
    lbeta = torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b)
    front = lbeta + a * torch.log(x) + b * torch.log1p(-x)
    direct = x < (a + 1) / (a + b + 2)
    xs = torch.where(direct, x, 1 - x)
    aa, bb = torch.where(direct, a, b), torch.where(direct, b, a)
    cf = _log_betacf(aa, bb, xs)
    val = torch.exp(front + cf) / aa
    return torch.where(direct, val, 1 - val)


def clopper_pearson_lower(count: torch.Tensor | int, n: int, alpha: float) -> torch.Tensor:
    """One-sided ``1 − alpha`` Clopper-Pearson lower bound of a binomial proportion from
    ``count`` successes in ``n`` trials: the ``alpha`` quantile of ``Beta(count, n − count + 1)``
    (0 when ``count = 0``), i.e. the ``p`` with ``P(Bin(n, p) >= count) = I_p(count, n−count+1)
    = alpha``. Safeguarded Newton iterations on the regularised incomplete beta function
    (continued fraction; the Beta density as derivative; bisection of a bracket whenever a
    Newton step leaves it), from the normal approximation; the root is then lowered by a
    relative 1e-9 and checked to satisfy ``I_p < alpha`` (else the bracket's lower end is
    returned), so the bound errs low. Float64, same shape as ``count``, computed once per
    distinct count."""
    check_int("n", n, 1)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    c = torch.as_tensor(count).to("cpu", torch.float64)
    if bool((c < 0).any()) or bool((c > n).any()):
        raise ValueError(f"count must lie in 0..n={n}")
    uniq, inv = torch.unique(c, return_inverse=True)
    a, b = uniq.clamp_min(1), n - uniq + 1
    lbeta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    lo, hi = torch.zeros_like(uniq), torch.ones_like(uniq)
    phat = uniq / n
    z = float(torch.special.ndtri(torch.tensor(1 - alpha, dtype=torch.float64)))
    p = (phat - z * (phat * (1 - phat) / n).sqrt() - 0.5 / n).clamp(1e-12, 1 - 1e-12)
    for _ in range(200):
        f = _betainc(a, b, p) - alpha
        below = f < 0
        lo, hi = torch.where(below, p, lo), torch.where(below, hi, p)
        log_pdf = (a - 1) * torch.log(p) + (b - 1) * torch.log1p(-p) - lbeta
        step = p - f / torch.exp(log_pdf)
        inside = torch.isfinite(step) & (step > lo) & (step < hi)
        new = torch.where(inside, step, (lo + hi) / 2)
        done = float((new - p).abs().max()) < 1e-15
        p = new
        if done:
            break
    cand = (p * (1 - 1e-9) - 1e-15).clamp_min(0)
    ok = _betainc(a, b, cand.clamp(1e-300, 1 - 1e-16)) < alpha
    out = torch.where(ok, cand, lo)
    out = torch.where(uniq > 0, out, torch.zeros_like(out))
    return out[inv].view(c.shape)


def _membership_counts(
    model: Any,
    x: torch.Tensor,
    ex: Explainer,
    k: int,
    target: Any,
    sigma: float,
    n_samples: int,
    batch_size: int,
    gen: torch.Generator,
    fkw: dict[str, Any],
    bar: Any,
) -> torch.Tensor:
    """``(N, F)`` counts of ``j ∈ topk(s(x + ε))`` over ``n_samples`` Gaussian draws, in
    chunks of ``max(1, batch_size // N)`` copies of the batch."""
    n = x.shape[0]
    per = max(1, batch_size // n)
    counts: torch.Tensor | None = None
    done = 0
    while done < n_samples:
        reps = min(per, n_samples - done)
        noise = torch.randn((reps, *x.shape), generator=gen, dtype=x.dtype, device=x.device)
        z = (x.unsqueeze(0) + sigma * noise).reshape(-1, *x.shape[1:])
        kw = repeat_rows(fkw, n, reps)
        t = None if target is None else repeat_batch(target, reps)
        with torch.enable_grad():
            s = ex.scores(model, z, t, **kw).detach()
        m = topk_mask(s, k).view(reps, n, -1).sum(0)
        counts = m if counts is None else counts + m
        done += reps
        if bar is not None:
            bar.update(reps)
    assert counts is not None
    return counts


def _smoothed(
    model: Any,
    x: torch.Tensor,
    ex: Explainer,
    k: int,
    target: Any,
    grid: torch.Tensor,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    seed: int,
    progress: bool,
    fkw: dict[str, Any],
) -> CertificateResult:
    dev = x.device
    x = x.detach()
    t = None if target is None else ex.resolve_target(model, x, target, **fkw)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n0 + n, desc="smoothing", file=sys.stderr, leave=False)
    with torch.enable_grad():
        n_feat = ex.scores(model, x[:1], None if t is None else t[:1], **_first_row(fkw, x)).shape[
            1
        ]
    kk = check_k(k, n_feat)
    sel = _membership_counts(model, x, ex, kk, t, sigma, n0, batch_size, gen, fkw, bar)
    est = _membership_counts(model, x, ex, kk, t, sigma, n, batch_size, gen, fkw, bar)
    if bar is not None:
        bar.close()
    label_in = 2 * sel > n0  # majority of the selection samples (ties: out)
    hits = torch.where(label_in, est, n - est)
    # a count <= n/2 cannot certify (its bound is < 1/2): reported as 0, not computed
    useful = 2 * hits > n
    p_lower = torch.zeros(hits.shape, dtype=torch.float64)
    if bool(useful.any()):
        p_lower[useful.cpu()] = clopper_pearson_lower(hits[useful].cpu(), n, alpha / n_feat)
    p_lower = p_lower.to(dev)
    half = torch.tensor(0.5, dtype=torch.float64, device=dev)
    feat_r = torch.where(
        p_lower > half, sigma * torch.special.ndtri(p_lower.clamp(max=1 - 1e-16)), 0.0
    )
    membership = est.to(torch.float64) / n
    top_idx = membership.topk(kk, dim=1).indices
    # certified P@k at each radius from a = |I| and u = |U| (smoothed_p_at_k_bound)
    r = grid.to(dev).view(1, 1, -1)
    cert = feat_r.unsqueeze(-1) > r  # (N, F, R), strict: R_j is a supremum
    a = (cert & label_in.unsqueeze(-1)).sum(1)
    u = (~cert).sum(1)
    overlap = smoothed_p_at_k_bound(a, u, kk, n_feat)
    p_at_k = overlap.to(torch.float64) / kk
    whole = (label_in.sum(1) == kk) & (feat_r > 0).all(1)
    radius = torch.where(whole, feat_r.amin(1), torch.zeros_like(feat_r[:, 0]))
    return CertificateResult(
        method="smoothed",
        norm="l2",
        k=kk,
        radius=radius.to(x.dtype),
        topk=top_idx,
        radii=grid,
        p_at_k=p_at_k,
        seconds=0.0,
        params={
            "sigma": float(sigma),
            "n0": int(n0),
            "n": int(n),
            "alpha": float(alpha),
            "seed": int(seed),
        },
        membership=membership,
        label_in=label_in,
        p_lower=p_lower,
        feature_radius=feat_r,
    )


def _first_row(fkw: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    return take_rows(fkw, slice(0, 1), x.shape[0])


def smoothed_p_at_k_bound(a: Any, u: Any, k: int, f: int) -> Any:
    """The certified overlap of the smoothed top-k sets at ``x`` and at any point of the ball,
    given ``a`` certified-in and ``u`` uncertified features of ``f`` (the other ``o = f − a − u``
    certified out); ints or integer tensors.

    Every certified-in feature outranks every certified-out one, so a possible top-k set S is
    either inside ``I ∪ U`` (type A, needs ``a + u >= k``) or contains all of I (type B, needs
    ``a <= k``). The smallest overlap of two possible sets is the minimum over the pairs of types
    that exist of: A-A ``max(0, 2k − a − u)``; B-B ``a + max(0, 2(k − a) − u − o)``; A-B
    ``max(k − u, 2k − f, 0)``. It equals k iff ``a = k`` and ``u = 0``.
    """
    a, u = torch.as_tensor(a), torch.as_tensor(u)
    o = f - a - u
    big = torch.full_like(a, k + 1)
    has_a, has_b = a + u >= k, a <= k
    aa = torch.where(has_a, (2 * k - a - u).clamp_min(0), big)
    bb = torch.where(has_b, a + (2 * (k - a) - u - o).clamp_min(0), big)
    ab_val = torch.maximum((k - u).clamp_min(0), torch.full_like(a, 2 * k - f))
    ab = torch.where(has_a & has_b, ab_val, big)
    out = torch.minimum(torch.minimum(aa, bb), ab)
    return int(out) if out.dim() == 0 else out
