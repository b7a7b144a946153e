"""Ranking-stability metrics on ``(N, F)`` score matrices, and explanation thickness.

Everything is torch-native and batched over rows: no loops over samples or features, no
NumPy round trips, results on the inputs' device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from r2et._ball import NORMS, sample_in_ball
from r2et._checks import check_batch, check_choice, check_k, check_positive, check_scores_pair
from r2et.explain import Explainer, quadrature, repeat_batch, repeat_forward_kwargs


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean ``(N, F)`` mask of each row's ``k`` largest scores (ties broken by ``topk``)."""
    idx = scores.topk(k, dim=1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, True)


def topk_gap(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average pairwise gap between the features in ``mask`` (T) and the rest, per row.

    ``1/(k(F−k)) Σ_{i∈T} Σ_{j∉T} (s_i − s_j) = mean_{i∈T} s_i − mean_{j∉T} s_j``, computed in
    the O(F) right-hand form. ``mask`` is an ``(N, F)`` boolean matrix with k entries per row.
    """
    m = mask.to(scores.dtype)
    k = m.sum(1)
    rest = scores.shape[1] - k
    return (scores * m).sum(1) / k - (scores * (1 - m)).sum(1) / rest


def precision_at_k(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """P@k: ``|topk(a_n) ∩ topk(b_n)| / k`` for every row n, shape ``(N,)``, in [0, 1]."""
    check_scores_pair(a, b)
    k = check_k(k, a.shape[1])
    return (topk_mask(a, k) & topk_mask(b, k)).sum(1).to(a.dtype) / k


def _gather_topk(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    check_scores_pair(a, b)
    k = check_k(k, a.shape[1])
    idx = a.topk(k, dim=1).indices
    return a.gather(1, idx), b.gather(1, idx)


def topk_kendall(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Kendall's τ_b between ``a`` and ``b`` on the top-k features of ``a``, per row.

    With ``T`` the top-k of ``a_n``, pairs ``i < j`` in ``T``, ``P − Q = Σ sign(a_i − a_j)
    sign(b_i − b_j)`` and ``n_a``, ``n_b`` the pairs tied in ``a``, ``b``:
    ``τ_b = (P − Q) / sqrt((n₀ − n_a)(n₀ − n_b))``, ``n₀ = k(k−1)/2`` (scipy's default τ_b).
    NaN where a side is constant (as scipy).
    """
    ak, bk = _gather_topk(a, b, k)
    da = torch.sign(ak.unsqueeze(2) - ak.unsqueeze(1))
    db = torch.sign(bk.unsqueeze(2) - bk.unsqueeze(1))
    upper = torch.ones(ak.shape[1], ak.shape[1], dtype=torch.bool, device=a.device).triu(1)
    s = (da * db * upper).sum((1, 2))
    n0 = upper.sum().to(a.dtype)
    na = ((da == 0) & upper).sum((1, 2)).to(a.dtype)
    nb = ((db == 0) & upper).sum((1, 2)).to(a.dtype)
    return s / torch.sqrt((n0 - na) * (n0 - nb))


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..k per row with ties given their average rank (scipy's ``rankdata``)."""
    less = (v.unsqueeze(1) < v.unsqueeze(2)).sum(2)
    equal = (v.unsqueeze(1) == v.unsqueeze(2)).sum(2)
    return less.to(v.dtype) + (equal.to(v.dtype) + 1) / 2


def topk_spearman(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Spearman's ρ between ``a`` and ``b`` on the top-k features of ``a``, per row.

    ``ρ`` is the Pearson correlation of the average ranks of ``a_T`` and ``b_T``; NaN where a
    side is constant (as scipy).
    """
    ak, bk = _gather_topk(a, b, k)
    ra, rb = _average_ranks(ak), _average_ranks(bk)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 − ⟨a_n, b_n⟩ / (‖a_n‖ ‖b_n‖)`` per row, in [0, 2]."""
    check_scores_pair(a, b)
    return 1 - F.cosine_similarity(a, b, dim=1, eps=1e-12)


def thickness(
    model: Any,
    x: torch.Tensor,
    ex: Explainer,
    k: int,
    *,
    radius: float,
    target: int | torch.Tensor | None = None,
    norm: str = "linf",
    n_samples: int = 16,
    n_steps: int = 8,
    x_prime: torch.Tensor | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    **forward_kwargs: Any,
) -> torch.Tensor:
    """Explanation thickness Θ(x) (Chen et al., NeurIPS 2024, Def. 4.1), shape ``(N,)``.

    ``Θ(x) = E_{x'} [ ∫₀¹ 1/(k(F−k)) Σ_{i∈T} Σ_{j∉T} (s_i(x_t) − s_j(x_t)) dt ]``,
    ``x_t = (1 − t)x + t x'``, T the top-k features of ``s(x)``. The inner average is
    ``mean_{i∈T} s_i − mean_{j∉T} s_j`` (:func:`topk_gap`); the path integral uses the
    ``n_steps``-point Gauss-Legendre rule (exact for scores polynomial in t up to degree
    ``2·n_steps − 1``); ``x'`` is drawn uniformly from the ``radius`` ball (``norm``),
    ``n_samples`` per input, or taken from ``x_prime`` of shape ``x.shape`` or
    ``(S, *x.shape)`` (e.g. an attack's output). The explained class is fixed to ``target``
    (None: the prediction at ``x``) along the path. ``batch_size`` caps the rows per explainer
    call. A larger Θ means a wider margin between top-k and other features around x.
    """
    check_batch("x", x)
    check_positive("radius", radius)
    check_choice("norm", norm, NORMS)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
    n = x.shape[0]
    x = x.detach()
    tgt = ex.resolve_target(model, x, target, **forward_kwargs)
    s0 = ex.scores(model, x, tgt, **forward_kwargs).detach()
    k = check_k(k, s0.shape[1])
    mask = topk_mask(s0, k)

    if x_prime is None:
        gen = None if seed is None else torch.Generator(device=x.device).manual_seed(int(seed))
        xp = sample_in_ball(x, radius, norm, n_samples, gen)
    else:
        xp = x_prime.detach().to(device=x.device, dtype=x.dtype)
        if xp.shape == x.shape:
            xp = xp.unsqueeze(0)
        if xp.shape[1:] != x.shape:
            raise ValueError(
                f"x_prime must have shape {tuple(x.shape)} or (S, *{tuple(x.shape)}), "
                f"got {tuple(x_prime.shape)}"
            )
    reps = xp.shape[0]
    ts, ws = quadrature(n_steps, "gausslegendre")
    per = reps if batch_size is None else max(1, int(batch_size) // n)
    total = torch.zeros(n, dtype=x.dtype, device=x.device)
    for t, w in zip(ts.tolist(), ws.tolist()):
        for lo in range(0, reps, per):
            hi = min(reps, lo + per)
            xt = ((1 - t) * x.unsqueeze(0) + t * xp[lo:hi]).reshape(-1, *x.shape[1:])
            kw = repeat_forward_kwargs(forward_kwargs, n, hi - lo)
            s = ex.scores(model, xt, repeat_batch(tgt, hi - lo), **kw).detach()
            gap = topk_gap(s, repeat_batch(mask, hi - lo)).view(hi - lo, n)
            total = total + w * gap.sum(0)
    return total / reps
