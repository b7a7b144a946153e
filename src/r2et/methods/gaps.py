"""The top-k gap of R2ET and the score normalisation: scale-free scores
(:func:`score_scale`, :func:`normalize_scores`), the gap of a given top-k set
(:func:`ranking_gap`, :func:`masked_gap`) and of each row's own top-k (:func:`topk_gap_of`,
:func:`topk_gap_affine`, the form the training loss uses)."""

from __future__ import annotations

import torch

from r2et._checks import check_choice

NORMALIZATIONS = ("none", "mean", "l2")


def score_scale(scores: torch.Tensor, normalize: str = "mean") -> torch.Tensor:
    """The ``(N, 1)`` scale that :func:`normalize_scores` divides by: each row's mean
    ``1/F Σ_j s_j`` (``"mean"``), root-mean-square ``‖s‖₂/√F`` (``"l2"``) or 1 (``"none"``),
    kept away from 0; differentiable."""
    check_choice("normalize", normalize, NORMALIZATIONS)
    if normalize == "none":
        return scores.new_ones(scores.shape[0], 1)
    if normalize == "mean":
        denom = scores.mean(1, keepdim=True)
    else:
        denom = scores.pow(2).mean(1, keepdim=True).sqrt()
    return denom.clamp_min(torch.finfo(scores.dtype).tiny ** 0.5)


def normalize_scores(scores: torch.Tensor, normalize: str = "mean") -> torch.Tensor:
    """Scale-free scores ``ŝ = s / scale(s)`` (:func:`score_scale`): ``"mean"`` divides each
    row by its mean, ``"l2"`` by its root-mean-square, ``"none"`` returns ``s`` unchanged.

    The normalisation is differentiated through, so a ranking term on ``ŝ`` cannot be improved
    by scaling every score (e.g. by sharpening the logits); a row of zeros stays zero.
    """
    return scores if normalize == "none" else scores / score_scale(scores, normalize)


def _check_m(m: int, k: int, f: int) -> None:
    if not 1 <= m <= min(k, f - k):
        raise ValueError(f"m={m} must lie in 1..min(k, F-k)={min(k, f - k)}")


def masked_gap(
    inside: torch.Tensor, outside: torch.Tensor, mask: torch.Tensor, k: int, m: int | None
) -> torch.Tensor:
    """The gap of a *given* set ``T`` (boolean ``mask``, k per row), shape ``(N,)``, with the
    members scored by ``inside`` and the others by ``outside`` (both ``(N, F)``; the same
    tensor for :func:`ranking_gap`, lower and upper score bounds for ``r2et-cert``):
    ``m=None``: ``mean_{i∈T} inside_i − mean_{j∉T} outside_j``; with ``m``: the mean of the
    ``m`` smallest ``inside`` in ``T`` minus the mean of the ``m`` largest ``outside`` off it."""
    f = inside.shape[1]
    if m is None:
        w = mask.to(inside.dtype)
        return (inside * w).sum(1) / k - (outside * (1 - w)).sum(1) / (f - k)
    _check_m(m, k, f)
    inf = torch.tensor(float("inf"), dtype=inside.dtype, device=inside.device)
    weakest_top = inside.masked_fill(~mask, inf).topk(m, dim=1, largest=False).values
    strongest_rest = outside.masked_fill(mask, -inf).topk(m, dim=1).values
    return weakest_top.mean(1) - strongest_rest.mean(1)


def ranking_gap(
    scores: torch.Tensor,
    mask: torch.Tensor,
    m: int | None = None,
    normalize: str = "none",
) -> torch.Tensor:
    """R2ET's top-k margin of each row for a given top-k set ``T``, shape ``(N,)``.

    With ``m=None``: ``gap_T(s) = mean_{i∈T} s_i − mean_{j∉T} s_j``, which equals the pairwise
    form ``1/(k(F−k)) Σ_{i∈T} Σ_{j∉T} (s_i − s_j)`` of Chen et al. (Eq. 5), computed in O(F).
    With ``m``: R2ET-mm's margin, the mean of the ``m`` smallest scores in ``T`` minus the mean
    of the ``m`` largest outside ``T`` (``m=1``: ``min_{i∈T} s_i − max_{j∉T} s_j``).
    ``mask`` is the boolean ``(N, F)`` set ``T`` with the same k in every row; the scores are
    first made scale-free by :func:`normalize_scores` (``normalize``). Training uses the
    equivalent :func:`topk_gap_of` (T = the current top-k), which needs one ``topk``.
    """
    s = normalize_scores(scores, normalize)
    return masked_gap(s, s, mask, int(mask[0].sum()), m)


def topk_gap_affine(
    scores: torch.Tensor, k: int, m: int | None, normalize: str
) -> tuple[torch.Tensor, float, float]:
    """Rows ``t`` ``(N,)`` and floats ``a``, ``b`` with ``gap_n = a·t_n + b`` the gap of each row
    for ``T`` = its own top-k (indices detached), in one ``topk`` and O(F) work per row.

    For the full gap on mean-normalised scores, with ``r = Σ_T s / Σ_j s`` (the share of the
    saliency held by the top-k): ``gap = F²/(k(F−k))·r − F/(F−k)``, so ``t = r``; for the ``m``
    form ``gap = F/m · (Σ_{ranks k−m+1..k} s − Σ_{ranks k+1..k+m} s) / Σ_j s``. Otherwise ``t``
    is the gap itself (``a = 1``, ``b = 0``): ``Σ_T/k − (Σ_all − Σ_T)/(F − k)`` from the top-k
    values and the row sum (with ``m``: the values ranked ``k−m+1..k`` minus ``k+1..k+m``),
    divided by the row's RMS for ``"l2"``. The training loss averages ``t`` over the batch and
    folds ``a``, ``b`` into Python floats (a small double-backward graph).
    """
    check_choice("normalize", normalize, NORMALIZATIONS)
    f = scores.shape[1]
    if m is not None:
        _check_m(m, k, f)
    tiny = torch.finfo(scores.dtype).tiny ** 0.5
    if normalize == "mean":
        total = scores.sum(1).clamp_min(tiny)
        if m is None:
            idx = scores.detach().topk(k, dim=1, sorted=False).indices
            return scores.gather(1, idx).sum(1) / total, f * f / (k * (f - k)), -f / (f - k)
        # ranks k-m+1..k minus ranks k+1..k+m: (N, 2m) values times a ±1 vector
        idx = scores.detach().topk(k + m, dim=1).indices[:, k - m :]
        signs = torch.ones(2 * m, dtype=scores.dtype, device=scores.device)
        signs[m:] = -1
        return (scores.gather(1, idx) @ signs) / total, f / m, 0.0
    if m is None:
        idx = scores.detach().topk(k, dim=1, sorted=False).indices
        top = scores.gather(1, idx).sum(1)
        gap = top / k - (scores.sum(1) - top) / (f - k)
    else:
        vals = scores.gather(1, scores.detach().topk(k + m, dim=1).indices)
        gap = vals[:, k - m : k].mean(1) - vals[:, k:].mean(1)
    if normalize == "l2":
        gap = gap / scores.pow(2).mean(1).sqrt().clamp_min(tiny)
    return gap, 1.0, 0.0


def topk_gap_of(
    scores: torch.Tensor, k: int, m: int | None = None, normalize: str = "none"
) -> torch.Tensor:
    """:func:`ranking_gap` with ``T`` the current top-k of each row of ``scores`` (indices
    detached, values differentiable), in one ``topk`` call and O(F) work per row.

    ``m=None``: ``Σ_T/k − (Σ_all − Σ_T)/(F − k)`` from the top-k values ``Σ_T`` and the row sum;
    with ``m``: the values ranked ``k−m+1..k`` minus those ranked ``k+1..k+m``. A scale-free
    ``normalize`` divides the result by the row's mean (or RMS), which equals normalising the
    scores first, since the gap is linear in the scores; a row of zeros has gap 0.
    """
    t, a, b = topk_gap_affine(scores, k, m, normalize)
    if b == 0:
        return t if a == 1 else a * t
    return (a * t + b).masked_fill(scores.detach().sum(1) == 0, 0.0)
