"""The smoothed certificate (l2, probabilistic; any model and explainer): randomized smoothing
of the top-k membership, one-sided Clopper-Pearson bounds (:func:`clopper_pearson_lower`) and
the certified P@k of the smoothed top-k (:func:`smoothed_p_at_k_bound`); Anani et al.'s
per-pixel reporting (:func:`certified_share`, :func:`top_fraction_k`). The maths is in
:mod:`r2et.certify`'s docstring."""

from __future__ import annotations

import math
import sys
from typing import Any

import torch

from r2et._checks import check_int, check_k
from r2et._kwargs import repeat_rows, take_rows
from r2et.certify.result import CertificateResult
from r2et.explain import Explainer, repeat_batch
from r2et.metrics import topk_mask

__all__ = [
    "certified_share",
    "clopper_pearson_lower",
    "smoothed_certificate",
    "smoothed_p_at_k_bound",
    "top_fraction_k",
]


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


def smoothed_certificate(
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


def top_fraction_k(fraction: float, n_features: int) -> int:
    """The ``k`` that keeps a ``fraction`` of ``n_features`` features, by Anani et al.'s
    sparsification rule (top K% of the pixels, ``fraction = K / 100``): the number of features
    strictly above numpy's (linearly interpolated) ``100 (1 − fraction)`` percentile of ``F``
    distinct scores, ``k = ⌈fraction · (F − 1)⌉`` (at least 1; ``fraction = 1`` gives ``F − 1``,
    the largest ``k`` a certificate accepts). Example: F = 784, 10% -> 79, 30% -> 235, 50% -> 392.
    """
    f = check_int("n_features", n_features, 2)
    assert f is not None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    # the tolerance keeps products that are integers in exact arithmetic from rounding up
    return max(1, math.ceil(fraction * (f - 1) - 1e-9))


def certified_share(result: CertificateResult, radii: Any) -> dict[str, torch.Tensor]:
    """Per input, the share of features whose smoothed label is certified at each l2 radius:
    Anani et al.'s "% certified pixels", where a pixel not certified counts as abstained.

    With ``R_j = σ Φ⁻¹(p_j)`` the certified radius of feature j (``result.feature_radius``; 0
    where ``p_j <= 1/2``, the feature abstains at every radius), for each ``r`` in ``radii``::

        in(r)        = #{j : label_in_j,     R_j > 0, R_j >= r} / F
        out(r)       = #{j : not label_in_j, R_j > 0, R_j >= r} / F
        certified(r) = in(r) + out(r),    abstain(r) = 1 − certified(r)

    A feature counted at ``r`` keeps its label for every ``‖δ‖₂ < r`` (as the certificate
    holds for ``‖δ‖₂ < R_j``). ``never`` is the share with ``R_j = 0`` (abstained at every
    radius, part of ``abstain(r)``). At ``r = σ Φ⁻¹(τ)`` this is Anani et al.'s (Fischer et
    al.'s) test: ``R_j >= σ Φ⁻¹(τ)`` iff ``p_j >= τ`` iff the one-sided binomial test of
    ``p <= τ`` rejects at level ``alpha / F`` (the Clopper-Pearson bound is the smallest ``p``
    that test does not reject). Returns float64 tensors ``(N, R)`` (``never``: ``(N,)``), keys
    ``"in"``, ``"out"``, ``"certified"``, ``"abstain"``, ``"never"``. ``result`` must come
    from ``certified_radius(..., method="smoothed")``.
    """
    if not isinstance(result, CertificateResult):
        raise TypeError(f"result must be a CertificateResult, got {type(result).__name__}")
    if result.method != "smoothed" or result.feature_radius is None or result.label_in is None:
        raise ValueError("certified_share needs a smoothed certificate (feature_radius, label_in)")
    r = torch.as_tensor(radii, dtype=torch.float64).flatten().cpu()
    if r.numel() == 0 or not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError("radii must be a non-empty sequence of finite numbers >= 0")
    fr = result.feature_radius.detach().to("cpu", torch.float64)
    lab = result.label_in.detach().cpu().bool()
    n_feat = fr.shape[1]
    cert = (fr.unsqueeze(-1) >= r.view(1, 1, -1)) & (fr > 0).unsqueeze(-1)  # (N, F, R)
    share_in = (cert & lab.unsqueeze(-1)).sum(1).double() / n_feat
    share_out = (cert & ~lab.unsqueeze(-1)).sum(1).double() / n_feat
    certified = share_in + share_out
    return {
        "in": share_in,
        "out": share_out,
        "certified": certified,
        "abstain": 1 - certified,
        "never": (fr <= 0).sum(1).double() / n_feat,
    }
