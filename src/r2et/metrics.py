"""Metrics of explanations: ranking stability on ``(N, F)`` score matrices, explanation
thickness, and faithfulness and locality.

* stability: :func:`precision_at_k`, :func:`topk_kendall`, :func:`topk_spearman`,
  :func:`cosine_distance`, :func:`thickness` (Chen et al., NeurIPS 2024);
* faithfulness: :func:`deletion` (deletion gain over random units), :func:`occlusion_scores`,
  :func:`occlusion_agreement`;
* locality: :func:`locality` (distinct top-k sets, the share of the most common one,
  agreement with the global top-k);
* accuracy against a known explanation: :func:`ground_truth_precision` (synthetic graphs).

A stable explanation is worth little if it is not faithful: an explanation that names the
same k features for every input is perfectly stable and says nothing about *this* input.

Everything is torch-native and batched over rows: no loops over samples or features, no
NumPy round trips, results on the inputs' device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from r2et._ball import NORMS, sample_in_ball
from r2et._checks import (
    align_scores_pair,
    check_batch,
    check_choice,
    check_finite,
    check_int,
    check_k,
    check_positive,
    model_inputs,
)
from r2et._kwargs import repeat_rows
from r2et.explain import Explainer, as_explainer, quadrature, repeat_batch, sum_columns


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
    """P@k: ``|topk(a_n) ∩ topk(b_n)| / k`` for every row n, shape ``(N,)``, in [0, 1].

    ``a`` and ``b`` are ``(N, F)`` score matrices of one shape; ``b`` is moved to ``a``'s
    device (the result is on ``a``'s device). ``k`` is an int in ``1..F-1``."""
    a, b = align_scores_pair(a, b)
    k = check_k(k, a.shape[1])
    return (topk_mask(a, k) & topk_mask(b, k)).sum(1).to(a.dtype) / k


def ground_truth_precision(scores: torch.Tensor, truth: torch.Tensor, k: int) -> torch.Tensor:
    """Explanation accuracy against a known explanation, per row, shape ``(N,)``:
    ``|topk(s_n) ∩ G_n| / min(k, |G_n|)``, with ``G_n`` the ground-truth units of row n (an
    ``(N, F)`` boolean mask, e.g. the nodes or edges of the motif that makes a graph's label).
    1 when the top-k is inside the ground truth (or contains all of it, when ``|G_n| < k``);
    NaN for a row with an empty ground truth. Ties in the top-k are broken by ``topk``."""
    check_finite("scores", scores)
    if scores.dim() != 2 or not isinstance(truth, torch.Tensor) or truth.shape != scores.shape:
        shape = tuple(truth.shape) if isinstance(truth, torch.Tensor) else type(truth).__name__
        raise ValueError(
            f"scores must be an (N, F) matrix and truth an (N, F) mask of the same shape, got "
            f"{tuple(scores.shape)} and {shape}"
        )
    k = check_k(k, scores.shape[1])
    g = truth.to(device=scores.device, dtype=torch.bool)
    hits = (topk_mask(scores, k) & g).sum(1).to(scores.dtype)
    size = g.sum(1).clamp(max=k).to(scores.dtype)
    return torch.where(size > 0, hits / size.clamp_min(1), torch.full_like(hits, float("nan")))


def _gather_topk(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = align_scores_pair(a, b)
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
    """``1 − ⟨a_n, b_n⟩ / (‖a_n‖ ‖b_n‖)`` per row, in [0, 2] (``b`` moved to ``a``'s device;
    integer scores are compared as floats)."""
    a, b = align_scores_pair(a, b)
    if not a.is_floating_point():
        a, b = a.to(torch.get_default_dtype()), b.to(torch.get_default_dtype())
    return 1 - F.cosine_similarity(a, b, dim=1, eps=1e-12)


def _model_inputs(
    model: Any, x: torch.Tensor, ex: Any, fkw: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``x`` (detached) and the forward keywords on the model's device and in its floating
    dtype (:func:`r2et._checks.model_inputs`), checked by a forward of their first rows (a shape
    that does not fit the model: ``ValueError``); ``ValueError`` when ``ex`` is no explainer."""
    if not (hasattr(ex, "scores") and hasattr(ex, "resolve_target")):
        raise ValueError(
            f"ex must be an r2et Explainer or an explainer name, got {type(ex).__name__}"
        )
    x, _, fkw = model_inputs(model, x, None, fkw)
    return x, fkw


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
    ``ex`` is an :class:`~r2et.Explainer` or an explainer name (``"grad"``). ``x`` is run on
    the model's device and in its floating dtype; Θ comes back on ``x``'s device.
    """
    ex = as_explainer(ex)
    check_batch("x", x)
    check_positive("radius", radius)
    check_choice("norm", norm, NORMS)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
    n, home = x.shape[0], x.device
    x, forward_kwargs = _model_inputs(model, x, ex, forward_kwargs)
    tgt = ex.resolve_target(model, x, target, **forward_kwargs)
    s0 = ex.scores(model, x, tgt, **forward_kwargs).detach()
    k = check_k(k, s0.shape[1])
    mask = topk_mask(s0, k)

    if x_prime is None:
        gen = None if seed is None else torch.Generator(device=x.device).manual_seed(int(seed))
        xp = sample_in_ball(x, radius, norm, n_samples, gen)
    else:
        check_finite("x_prime", x_prime)
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
            kw = repeat_rows(forward_kwargs, n, hi - lo)
            s = ex.scores(model, xt, repeat_batch(tgt, hi - lo), **kw).detach()
            gap = topk_gap(s, repeat_batch(mask, hi - lo)).view(hi - lo, n)
            total = total + w * gap.sum(0)
    return (total / reps).to(home)


# ------------------------------------------------------------------ faithfulness and locality
def replace_units(
    x: torch.Tensor, unit_index: torch.Tensor, units: torch.Tensor, baseline: Any
) -> torch.Tensor:
    """``x`` with every entry of the chosen units set to the baseline.

    ``unit_index`` (shape of one input, from :meth:`Explainer.unit_index`) names the unit of
    each entry; ``units`` is an ``(N, U)`` boolean matrix of the units to replace per row;
    ``baseline`` is a scalar or a tensor broadcastable to ``x`` (e.g. the mean training input).
    """
    n = x.shape[0]
    idx = unit_index.to(x.device).flatten()
    entries = units[:, idx].view(n, *x.shape[1:])
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    return torch.where(entries, base.expand_as(x), x)


def _class_prob(
    model: Any, x: torch.Tensor, target: torch.Tensor, fkw: dict[str, Any]
) -> torch.Tensor:
    with torch.no_grad():
        return model(x, **fkw).softmax(1).gather(1, target[:, None]).squeeze(1)


def _random_units(
    n: int, valid: torch.Tensor, k: int, draws: int, gen: torch.Generator | None
) -> torch.Tensor:
    """``(draws·N, U)`` masks of k units drawn uniformly without replacement among the valid
    units of each row (all of them when fewer than k are valid)."""
    u = valid.shape[1]
    keys = torch.rand((draws, n, u), generator=gen, device=valid.device)
    keys = keys.masked_fill(~valid.unsqueeze(0), -1.0)
    idx = keys.topk(k, dim=2).indices
    mask = torch.zeros((draws, n, u), dtype=torch.bool, device=valid.device)
    mask.scatter_(2, idx, True)
    return (mask & valid.unsqueeze(0)).view(draws * n, u)


def deletion(
    model: Any,
    x: torch.Tensor,
    ex: Explainer,
    k: int,
    *,
    baseline: Any = 0.0,
    target: int | torch.Tensor | None = None,
    n_random: int = 8,
    seed: int | None = None,
    valid: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    **forward_kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Deletion faithfulness of the explainer's top-k, per input (each ``(N,)``).

    ``drop_topk = p_c(x) − p_c(x ∖ T)``: the fall of the explained class's softmax probability
    when the input's top-k units T (features, pixels over all channels, nodes, or groups, as
    the explainer ranks them) are replaced by ``baseline`` (e.g. the mean training input);
    ``drop_random`` is the same fall for k units drawn at random (``n_random`` draws, averaged;
    among the ``valid`` units, an ``(N, U)`` mask, e.g. a graph's real nodes); ``gain =
    drop_topk − drop_random`` (deletion gain: how much more the explanation's units matter to
    the prediction than random ones; 0 for an explanation that says nothing about this input).
    The class c is ``target`` (None: the prediction at x). ``scores`` (the clean ``(N, U)``
    scores) saves recomputing them. Deletion metrics in this form go back to Samek et al.
    (IEEE TNNLS 2017, "Evaluating the visualization of what a deep neural network has
    learned"). ``ex`` may be an explainer name; ``x`` runs on the model's device and in its
    floating dtype, and the results come back on ``x``'s device.
    """
    ex = as_explainer(ex)
    check_batch("x", x)
    check_int("n_random", n_random, 1)
    n, home = x.shape[0], x.device
    x, forward_kwargs = _model_inputs(model, x, ex, forward_kwargs)
    tgt = ex.resolve_target(model, x, target, **forward_kwargs)
    units = ex.unit_index(x.shape[1:])
    if scores is None:
        s = ex.scores(model, x, tgt, **forward_kwargs).detach()
    else:
        s = _given_scores(scores, n, units, x.device)
    k = check_k(k, s.shape[1])
    if valid is None:
        valid = torch.ones_like(s, dtype=torch.bool)
    elif not isinstance(valid, torch.Tensor) or valid.shape != s.shape:
        raise ValueError(f"valid must be a bool mask of shape {tuple(s.shape)}")
    valid = valid.to(device=s.device, dtype=torch.bool)
    p0 = _class_prob(model, x, tgt, forward_kwargs)
    top = topk_mask(s.masked_fill(~valid, -1.0), k) & valid
    p_top = _class_prob(model, replace_units(x, units, top, baseline), tgt, forward_kwargs)
    gen = None if seed is None else torch.Generator(device=x.device).manual_seed(int(seed))
    rand = _random_units(n, valid, k, n_random, gen)
    xr = replace_units(repeat_batch(x, n_random), units, rand, baseline)
    kw = repeat_rows(forward_kwargs, n, n_random)
    p_rand = _class_prob(model, xr, repeat_batch(tgt, n_random), kw).view(n_random, n)
    drop_top = (p0 - p_top).to(home)
    drop_rand = (p0.unsqueeze(0) - p_rand).mean(0).to(home)
    return {"drop_topk": drop_top, "drop_random": drop_rand, "gain": drop_top - drop_rand}


def _given_scores(scores: Any, n: int, units: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Caller-given clean scores: a finite ``(N, U)`` matrix with one column per unit of the
    explainer (``U = max(unit_index) + 1``), moved to ``device``."""
    check_finite("scores", scores)
    n_units = int(units.max()) + 1
    if scores.dim() != 2 or tuple(scores.shape) != (n, n_units):
        raise ValueError(
            f"scores must be the clean (N, U) = ({n}, {n_units}) scores of the explainer's "
            f"units, got shape {tuple(scores.shape)}"
        )
    return scores.detach().to(device)


def patch_units(image_shape: tuple[int, int], patch: int) -> torch.Tensor:
    """Pixel units (``h·W + w``) regrouped into ``patch × patch`` squares: returns the
    ``(H·W,)`` patch id of every pixel (``⌈H/p⌉·⌈W/p⌉`` patches, row-major)."""
    h, w = image_shape
    rows = torch.arange(h * w) // w
    cols = torch.arange(h * w) % w
    per_row = -(-w // patch)
    return (rows // patch) * per_row + cols // patch


def occlusion_scores(
    model: Any,
    x: torch.Tensor,
    ex: Explainer,
    *,
    baseline: Any = 0.0,
    target: int | torch.Tensor | None = None,
    unit_index: torch.Tensor | None = None,
    batch_size: int = 4096,
    **forward_kwargs: Any,
) -> torch.Tensor:
    """Single-unit occlusion importance, ``(N, U)``: ``|f_c(x) − f_c(x with unit u set to the
    baseline)|`` for every unit u, with ``f_c`` the explainer's output (logit, probability or
    loss of class c; Zeiler & Fergus, ECCV 2014). Units are the explainer's (or
    ``unit_index``: one unit id per input entry); ``batch_size`` caps the rows per forward.
    ``ex`` may be an explainer name; ``x`` runs on the model's device and in its floating
    dtype, and the scores come back on ``x``'s device."""
    ex = as_explainer(ex)
    check_batch("x", x)
    check_int("batch_size", batch_size, 1)
    n, home = x.shape[0], x.device
    x, forward_kwargs = _model_inputs(model, x, ex, forward_kwargs)
    tgt = ex.resolve_target(model, x, target, **forward_kwargs)
    if unit_index is None:
        units = ex.unit_index(x.shape[1:])
    else:
        units = _check_unit_index(unit_index, tuple(x.shape[1:]))
    n_units = int(units.max()) + 1
    with torch.no_grad():
        f0 = ex.output_of(model, x, tgt, **forward_kwargs)
        out = torch.empty(n, n_units, dtype=x.dtype, device=x.device)
        per = max(1, batch_size // n)
        eye = torch.eye(n_units, dtype=torch.bool, device=x.device)
        for lo in range(0, n_units, per):
            hi = min(n_units, lo + per)
            m = hi - lo
            masks = eye[lo:hi].unsqueeze(1).expand(m, n, n_units).reshape(m * n, n_units)
            xo = replace_units(repeat_batch(x, m), units, masks, baseline)
            kw = repeat_rows(forward_kwargs, n, m)
            f = ex.output_of(model, xo, repeat_batch(tgt, m), **kw).view(m, n)
            out[:, lo:hi] = (f0.unsqueeze(0) - f).abs().T
    return out.to(home)


def _check_unit_index(unit_index: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """``unit_index`` if it is an integer tensor of one input's shape with ids >= 0."""
    ok = isinstance(unit_index, torch.Tensor) and tuple(unit_index.shape) == shape
    ok = ok and not (unit_index.is_floating_point() or unit_index.dtype == torch.bool)
    if not ok or unit_index.numel() == 0 or int(unit_index.min()) < 0:
        got = tuple(unit_index.shape) if isinstance(unit_index, torch.Tensor) else unit_index
        raise ValueError(
            f"unit_index must be an integer tensor of one input's shape {shape} holding unit "
            f"ids >= 0, got {got!r}"
        )
    return unit_index.long()


def occlusion_agreement(
    model: Any,
    x: torch.Tensor,
    ex: Explainer,
    k: int,
    *,
    baseline: Any = 0.0,
    target: int | torch.Tensor | None = None,
    patch: int | None = None,
    scores: torch.Tensor | None = None,
    batch_size: int = 4096,
    **forward_kwargs: Any,
) -> torch.Tensor:
    """P@k between the explainer's top-k and the top-k of single-unit occlusion
    (:func:`occlusion_scores`), per input, ``(N,)``.

    An explanation that agrees with occlusion names units whose removal actually moves the
    explained output. For images ``patch`` (an int p) occludes ``p × p`` squares instead of
    pixels (so that it stays affordable): the explainer's pixel scores are summed per square
    and both top-k are taken over squares with ``k_p = min(⌈k/p²⌉, U−1)``. ``ex`` may be an
    explainer name; ``x`` runs on the model's device and in its floating dtype, and the
    result comes back on ``x``'s device.
    """
    ex = as_explainer(ex)
    check_batch("x", x)
    check_int("k", k, 1)
    check_int("patch", patch, 1, allow_none=True)
    n, home = x.shape[0], x.device
    x, forward_kwargs = _model_inputs(model, x, ex, forward_kwargs)
    tgt = ex.resolve_target(model, x, target, **forward_kwargs)
    units = ex.unit_index(x.shape[1:])
    if scores is None:
        s = ex.scores(model, x, tgt, **forward_kwargs).detach()
    else:
        s = _given_scores(scores, n, units, x.device)
    if patch is not None and patch > 1:
        if x.dim() != 4 or ex.groups is not None or ex.reduce not in ("auto", "channel"):
            raise ValueError("patch occlusion needs image inputs (N, C, H, W) ranked by pixel")
        pid = patch_units(tuple(x.shape[2:]), int(patch))
        n_p = int(pid.max()) + 1
        s = sum_columns(s, pid)
        units = pid[units]
        k = min(-(-k // (patch * patch)), n_p - 1)
    occ = occlusion_scores(
        model, x, ex, baseline=baseline, target=tgt, unit_index=units, batch_size=batch_size,
        **forward_kwargs,
    )  # fmt: skip
    return precision_at_k(s, occ.to(s.device), check_k(k, s.shape[1])).to(home)


def locality(scores: torch.Tensor, k: int) -> dict[str, Any]:
    """How input-specific the top-k explanations of a set of inputs are.

    ``distinct_topk_sets``: the number of different top-k sets among the rows of ``scores``
    (1: every input gets the same explanation); ``global_topk_p_at_k`` ``(N,)``: P@k of each
    row's top-k against the *global* top-k, the top-k of the mean of the rows' normalised
    scores ``mean_n s_n / Σ_j s_nj`` (1 everywhere: the explanation is one fixed set, whatever
    the input); ``top_share``: the share of rows whose top-k set equals the most common one,
    ``max_S |{n : topk(s_n) = S}| / N`` (1: one set for all; ``1/N`` at best; lower is more
    local); ``distinct_per_100``: ``100 · distinct_topk_sets / N`` (higher is more local).
    Both are plain floats (NaN for N = 0); see :mod:`r2et.verdict` for the collapse rule.
    """
    check_finite("scores", scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be an (N, F) matrix, got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating (N, F) matrix, got dtype {scores.dtype}")
    k = check_k(k, scores.shape[1])
    idx = scores.topk(k, dim=1).indices.sort(1).values
    _, counts = torch.unique(idx, dim=0, return_counts=True)
    distinct, n = int(counts.shape[0]), int(scores.shape[0])
    share = scores / scores.sum(1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    glob = share.mean(0, keepdim=True).expand_as(scores)
    return {
        "distinct_topk_sets": distinct,
        "global_topk_p_at_k": precision_at_k(scores, glob.contiguous(), k),
        "top_share": int(counts.max()) / n if n else float("nan"),
        "distinct_per_100": 100.0 * distinct / n if n else float("nan"),
    }
