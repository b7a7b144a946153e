"""Training recipes: R2ET and every baseline of Chen et al. (NeurIPS 2024) as composable terms.

A recipe is a registered :class:`MethodRow` that names its *terms* (small :class:`Term`
objects) and its default hyperparameters; :func:`get_method` builds a :class:`TrainingMethod`
(``prepare(model)``, ``loss(model, x, y)``, ``optimizer_kwargs``) from a row, and
:func:`list_methods` lists the rows. The loss of a batch is

    ``L = c · CE + Σ_terms w_t · R_t``

where ``c`` is the product of the rows' CE weights (1 unless a :class:`CEWeight` is named),
``R_t`` a term's value and ``w_t`` its weight (a hyperparameter, signed); with ``adaptive=True``
every ``w_t`` becomes ``w_t · (CE + 1) / |R_t|`` (detached, :class:`Weighting`). The terms share
one per-batch :class:`Step`, which computes the logits, the cross-entropy and the saliency (with
a graph, once) on demand. All saliency terms use the method's
:class:`~r2et.explain.Explainer`, so the saliency that is trained is the saliency that is
attacked and measured.

=============== ============================================================== ===============
method          loss                                                           terms
=============== ============================================================== ===============
``vanilla``     ``CE``                                                         (none)
``wd``          ``CE``, weight decay in the optimiser (``weight_decay``)       WeightDecay
``sp``          ``CE`` on the model with every ``nn.ReLU`` replaced by         SoftplusModel
                ``Softplus(beta)``
``est-h``       ``CE + mu · ‖(g(x + h v) − g(x)) / h‖₂``, ``v = sign(g(x))``   FiniteDiffHess
                (finite-difference Hessian norm along the gradient sign)
``exact-h``     ``CE + mu · ‖∇²ₓ f(x)‖_F`` (exact per-sample input Hessian)    ExactHessian
``ssr``         ``(1 − alpha) CE + alpha · beta · λ_max(Lᵀ J Jᵀ L)`` (smoothed CEWeight, SSR
                geometry, Wang et al., NeurIPS 2020)
``at``          ``CE(x') + lam · (−gap_T(ŝ(x')))``, x' from an inner ERAttack, AdversarialPoint,
                T the top-k at x                                               RankingGap
``r2et``        ``CE + lam · (−gap_T(ŝ(x))) + mu · est-h term``                RankingGap,
                                                                               FiniteDiffHess
``r2et-mm``     as ``r2et`` with the gap between the ``m`` weakest top-k and   (as r2et, ``m``)
                the ``m`` strongest other features
``r2et-noh``    ``r2et`` without the Hessian term (the paper's R2ET\\H)         RankingGap
``r2et-mm-noh`` ``r2et-mm`` without the Hessian term (R2ET-mm\\H)               RankingGap
``r2et-cert``   ``CE + lam · (−gap_T(s_l, s_u))``: the gap on *certified*      CertifiedGap
                score bounds, ``mean_{i∈T} s_l_i − mean_{j∉T} s_u_j`` over the
                l_inf ball of radius ``cert_eps`` (:mod:`r2et.certify`; ReLU
                MLPs)
=============== ============================================================== ===============

(``FiniteDiffHess`` is :class:`FiniteDifferenceHessian`, ``SSR`` :class:`SmoothedGeometry`,
``SoftplusModel`` :class:`SoftplusActivations`.)

Adding a method is one registration and touches no code here::

    register_method("gap-only-l2", MethodRow("CE + lam * (-RMS-normalised top-k gap)",
                    terms=(RankingGap(),), defaults={"normalize": "l2"}, weight_name="lam"))
    get_method("gap-only-l2", k=8)  # hyperparameters: normalize, lam (the term's default), adaptive

A new kind of term subclasses :class:`Term` (``value(step)`` and the hyperparameters it reads);
:func:`registered_method` registers a row for the duration of a ``with`` block (tests).

Notation: ``g(x)`` is the explainer's attribution of the explained output (gradient saliency by
default), ``s(x) = |g(x)|`` the per-feature scores, ``T`` the current top-k of ``s(x)``
(indices detached), and ``gap_T(s) = mean_{i∈T} s_i − mean_{j∉T} s_j``, which equals R2ET's
pairwise form ``1/(k(F−k)) Σ_{i∈T} Σ_{j∉T} (s_i − s_j)``.

Which output the explainer differentiates, by default, and why:

* ranking terms (``r2et`` family, ``at``) use ``output="logit"``: that is the saliency the
  attacks and the evaluation rank. With ``output="loss"`` and raw scores the gap can be
  "bought" by confident mistakes (the loss gradient grows with the loss): on Adult, lam = 1
  took test accuracy from 0.857 to 0.20. The gap is *scale-free* by default (``normalize="mean"``:
  scores divided by their per-sample mean, ``ŝ = s / mean_j s_j``), so it cannot grow by
  scaling the logits either: only a larger *relative* margin between the top-k and the rest,
  which is what a ranking needs, helps.
* ``est-h`` and ``exact-h`` use ``output="loss"`` as in the paper: the Hessian of the
  cross-entropy keeps the softmax curvature, whereas a ReLU network's logit has zero input
  Hessian almost everywhere (``exact-h`` on logits would regularise nothing). The
  finite-difference term of the ``r2et`` family uses the ranking explainer (logit), with a step
  ``h`` on the scale of an l_inf attack budget, so that it sees the changes of the gradient
  across nearby ReLU regions which an infinitesimal Hessian cannot.
* ``ssr`` is defined on the Jacobian of the logits (the Gauss-Newton Hessian of the loss) and
  does not use the explainer.

``adaptive=True`` (every regularised method) replaces each weight ``w`` of a term ``R`` by
``w · (CE + 1) / |R|`` (detached), which keeps the terms on the scale of the loss as the
authors' code does. Per-sample gradients come from one backward pass over the summed batch output:
exact when samples do not interact (no batch statistics in train mode), as everywhere in r2et.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from r2et._checks import check_batch, check_choice, check_k, check_labels
from r2et._kwargs import split_kwargs
from r2et._registry import Registry
from r2et.explain import Explainer, check_second_order, select_output
from r2et.metrics import topk_mask
from r2et.models import has_relu, relu_to_softplus, second_order

NORMALIZATIONS = ("none", "mean", "l2")


# ---------------------------------------------------------------------------- the top-k gap
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


def _masked_gap(
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
    return _masked_gap(s, s, mask, int(mask[0].sum()), m)


def _topk_gap_affine(
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
    t, a, b = _topk_gap_affine(scores, k, m, normalize)
    if b == 0:
        return t if a == 1 else a * t
    return (a * t + b).masked_fill(scores.detach().sum(1) == 0, 0.0)


# ---------------------------------------------------------------------------- saliency
Target = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def _attribution(
    ex: Any,
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    target: Target,
    fkw: dict[str, Any],
    need_logits: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """``(logits, target, a(x))``: the explainer's attribution at ``x`` with a graph to the
    parameters (``create_graph=True``), the one saliency helper of every training term.

    r2et's explainers answer it with :meth:`~r2et.Explainer.logits_and_attribution` (gradient
    saliency and the logits from one forward pass, on the explicit fast path where it
    applies); another explainer that declares second-order support runs one forward for the
    logits and its ``attribute``. ``target``: a tensor, or a callable of the detached logits.
    """
    x = x.detach()
    engine = getattr(ex, "logits_and_attribution", None)
    if engine is not None:
        return engine(model, x, target, create_graph=True, need_logits=need_logits, **fkw)
    logits = model(x, **fkw) if need_logits or callable(target) else None
    t = target(logits.detach()) if callable(target) else target
    return logits, t, ex.attribute(model, x, t, create_graph=True, **fkw)


def input_hessian(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    output: str = "loss",
    **forward_kwargs: Any,
) -> torch.Tensor:
    """Exact per-sample input Hessian ``∇²ₓ f_c(x_n)`` of shape ``(N, D, D)``, ``D = x[0].numel()``.

    ``f_c`` is the explained output (``"logit"``, ``"prob"`` or ``"loss"`` = cross-entropy of
    ``target``). Computed with ``torch.func.vmap(hessian(...))`` over samples (forward-over-
    reverse), differentiable w.r.t. the model's parameters, with attention on the math kernel
    (:func:`r2et.models.second_order`). Per-sample tensor keywords (first dimension N) are
    mapped with their sample.
    """
    from torch.func import hessian, vmap

    n = x.shape[0]
    per, shared = split_kwargs(forward_kwargs, n)

    def f(xi: torch.Tensor, ti: torch.Tensor, *vals: torch.Tensor) -> torch.Tensor:
        kw = {**shared, **{k: v.unsqueeze(0) for k, v in zip(per, vals)}}
        logits = model(xi.view(1, *x.shape[1:]), **kw)
        return select_output(logits, ti.view(1), output).squeeze(0)

    flat = x.detach().flatten(1)
    with second_order():
        hess = vmap(hessian(f, argnums=0))(flat, target, *[forward_kwargs[k] for k in per])
    return hess


def ssr_term(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """SSR (Wang et al., "Smoothed Geometry for Robust Attribution", NeurIPS 2020), per sample.

    ``λ_max(Lᵀ J Jᵀ L)`` where ``J = ∂logits/∂x`` is the ``C × D`` input Jacobian of a sample
    and ``L = diag(√p) − p √pᵀ`` satisfies ``L Lᵀ = diag(p) − p pᵀ`` (``p`` the softmax), so the
    value is the largest eigenvalue of the Gauss-Newton input Hessian ``Jᵀ (diag(p) − ppᵀ) J``
    of the cross-entropy, found in the small ``C × C`` space.

    Cost: the C rows of every sample's Jacobian come from one vectorised first-order backward
    (``is_grads_batched``, i.e. ``vmap`` over the one-hot output directions) *without* a graph;
    the top eigenvector ``u`` of the C × C matrix is then held fixed and the value is recomputed
    as ``‖Jᵀ L u‖²`` from one vector-Jacobian product with a graph to the parameters. This has
    the value and the gradient of ``λ_max`` (the eigenvalue's derivative is ``uᵀ dM u``), at
    the cost of a single double-backpropagated gradient instead of C. ``x`` must be the tensor
    the logits were computed from, with ``requires_grad``.
    """
    n, c = logits.shape
    eye = torch.eye(c, dtype=logits.dtype, device=logits.device)
    directions = eye[:, None, :].expand(c, n, c)
    (jac,) = torch.autograd.grad(
        logits, x, grad_outputs=directions, is_grads_batched=True, retain_graph=True
    )
    jac = jac.flatten(2).transpose(0, 1)  # (N, C, D), no graph
    logp = logits.log_softmax(1)
    p, sqrt_p = logp.exp(), (0.5 * logp).exp()
    lmat = torch.diag_embed(sqrt_p) - p[:, :, None] * sqrt_p[:, None, :]  # (N, C, C)
    with torch.no_grad():
        ld = lmat.detach()
        mat = ld.transpose(1, 2) @ (jac @ jac.transpose(1, 2)) @ ld
        u = torch.linalg.eigh(0.5 * (mat + mat.transpose(1, 2))).eigenvectors[:, :, -1]
    w = (lmat @ u[:, :, None]).squeeze(2)  # L u, differentiable through p
    (v,) = torch.autograd.grad(logits, x, grad_outputs=w, create_graph=True)  # Jᵀ L u
    return v.flatten(1).pow(2).sum(1)


# ---------------------------------------------------------------------------- BatchNorm
_BN_WARNED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def batch_statistics_layers(model: Any) -> list[str]:
    """Names of the BatchNorm layers of ``model`` that normalise with the statistics of the
    current batch: every ``nn.modules.batchnorm._BatchNorm`` (BatchNorm1d/2d/3d, SyncBatchNorm,
    lazy variants) in train mode, and those without running statistics in any mode. Such a
    layer couples the samples of a batch, so a per-sample saliency computed from one backward
    pass over the batch also depends on the other samples. Empty for anything else."""
    if not isinstance(model, nn.Module):
        return []
    return [
        name or type(model).__name__
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and (m.training or (m.running_mean is None and m.running_var is None))
    ]


def warn_batch_statistics(model: Any, method: str) -> bool:
    """Warn (a ``UserWarning``, once per model object) when ``model`` has BatchNorm layers
    that use batch statistics (:func:`batch_statistics_layers`) while ``method`` regularises
    per-sample saliency. Returns True when it warned. The numerics are not changed; the
    choices, named in the message, are: eval-mode statistics for the BatchNorm layers, GroupNorm
    instead of BatchNorm, or accepting the coupling."""
    if not isinstance(model, nn.Module) or model in _BN_WARNED:
        return False
    names = batch_statistics_layers(model)
    if not names:
        return False
    _BN_WARNED.add(model)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    warnings.warn(
        f"r2et: BatchNorm layers ({shown}) normalise with batch statistics, so the saliency "
        f"that method {method!r} regularises is not per-sample: each sample's saliency depends "
        "on the other samples of its batch. Choices: (1) eval-mode statistics: "
        "r2et.fit(..., batchnorm='eval'), or in your own loop after model.train(): "
        "model.apply(lambda m: m.eval() if isinstance(m, "
        "torch.nn.modules.batchnorm._BatchNorm) else None); (2) GroupNorm instead of "
        "BatchNorm (e.g. "
        "build_model('resnet9', ..., norm='group')); (3) accept the coupling and silence this "
        "warning with warnings.filterwarnings('ignore', message='r2et: BatchNorm'). "
        "This warning is shown once per model.",
        UserWarning,
        stacklevel=3,
    )
    return True


# ---------------------------------------------------------------------------- the step
class Step:
    """One batch of one method's loss: the evaluation point and what the terms share.

    Every quantity is computed on first use and cached, so the saliency of the step is
    computed once (with ``create_graph=True``) and reused by the gap, the finite-difference and
    the certified terms. Attributes: ``method`` (the :class:`TrainingMethod`), ``explainer``,
    ``hp`` (its hyperparameters), ``model``, ``x`` (the evaluation point: the batch, or the
    point a :meth:`Term.setup` moved it to with :meth:`move_to`), ``y`` (labels), ``fkw``
    (forward keywords), ``fixed_target`` / ``fixed_mask`` (set by :meth:`move_to`: the
    explained class and the top-k set ``T`` taken from another point, else None).

    Cached: :attr:`saliency` ``(logits, a(x), target)``; :attr:`logits` (from the saliency's
    forward pass when a term uses the saliency, from a forward at :attr:`x_input` when a term
    needs a graph to the input, else a plain forward); :attr:`ce` ``= CE(logits, y)``;
    :attr:`target` (the explained class: the labels for ``output="loss"``, else the prediction);
    :attr:`scores` ``s = reduce(|a(x)|)``; :attr:`k` (the method's k checked against F).
    """

    def __init__(
        self,
        method: TrainingMethod,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        fkw: dict[str, Any],
        terms: tuple[Term, ...] = (),
    ) -> None:
        self.method = method
        self.explainer = method.explainer
        self.hp = method.hyperparameters
        self.model, self.x, self.y, self.fkw = model, x, y, fkw
        self.fixed_target: torch.Tensor | None = None
        self.fixed_mask: torch.Tensor | None = None
        self._saliency_logits = any(t.uses_saliency for t in terms)
        self._input_graph = any(t.input_graph for t in terms)

    def move_to(
        self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        """Evaluate the loss at ``x`` instead, explaining ``target`` and (when given) ranking
        against the top-k set ``mask``; only before anything was computed."""
        if any(key in self.__dict__ for key in ("saliency", "logits", "x_input")):
            raise RuntimeError("Step.move_to must run before the step computes anything")
        self.x, self.fixed_target, self.fixed_mask = x, target, mask

    def explained_class(self, logits: torch.Tensor) -> torch.Tensor:
        """The class a term explains: the label for ``output="loss"``, else the prediction."""
        return self.y if self.explainer.output == "loss" else logits.detach().argmax(1)

    @cached_property
    def saliency(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, a(x), target)`` at :attr:`x`, differentiable w.r.t. the parameters; for
        gradient saliency from one forward and one ``create_graph`` backward (or the explicit
        fast path, :func:`r2et.fastpath.saliency`)."""
        target: Target = self.explained_class if self.fixed_target is None else self.fixed_target
        logits, t, attr = _attribution(self.explainer, self.model, self.x, target, self.fkw)
        assert logits is not None
        return logits, attr, t

    @cached_property
    def x_input(self) -> torch.Tensor:
        """A detached copy of :attr:`x` with ``requires_grad`` (input-Jacobian terms)."""
        return self.x.detach().requires_grad_(True)

    @cached_property
    def logits(self) -> torch.Tensor:
        if self._saliency_logits:
            return self.saliency[0]
        if self._input_graph:
            return self.model(self.x_input, **self.fkw)
        return self.model(self.x, **self.fkw)

    @cached_property
    def ce(self) -> torch.Tensor:
        return F.cross_entropy(self.logits, self.y)

    @cached_property
    def target(self) -> torch.Tensor:
        if self.fixed_target is not None:
            return self.fixed_target
        if self._saliency_logits:
            return self.saliency[2]
        return self.explained_class(self.logits)

    @property
    def attribution(self) -> torch.Tensor:
        return self.saliency[1]

    @cached_property
    def scores(self) -> torch.Tensor:
        return self.explainer.reduce_attr(self.attribution)

    @cached_property
    def k(self) -> int:
        return check_k(self.method.k, self.scores.shape[1])

    @property
    def prediction(self) -> torch.Tensor:
        """The predicted class at :attr:`x` (the explained class when that is the prediction,
        which saves an ``argmax``)."""
        if self.fixed_target is None and self.explainer.output != "loss":
            if self._saliency_logits and "saliency" in self.__dict__:
                return self.saliency[2]
            if "target" in self.__dict__:
                return self.target
        return self.logits.detach().argmax(1)

    def attribution_at(self, x: torch.Tensor) -> torch.Tensor:
        """The attribution of :attr:`target` at another point ``x`` (with a graph; the logits
        there are not computed)."""
        return _attribution(self.explainer, self.model, x, self.target, self.fkw, False)[2]


# ---------------------------------------------------------------------------- terms
class Term:
    """One piece of a training recipe (subclass it to add a kind of term).

    A *loss term* (``name`` non-empty, the key of its value in the logs) adds ``w · R`` to the
    loss, with ``R = value(step)`` and ``w = weight(hp)`` (``sign · hp[weight_key]`` by
    default); ``affine(step)`` may return ``(t, a, b)`` with ``R = a·t + b`` instead, which keeps
    constants out of the double-backward graph. Other pieces act through one hook:
    ``setup(step)`` (move the evaluation point, validate), ``ce_weight(hp)`` (a factor of the
    cross-entropy), ``prepare(model, hp)`` (the model to train), ``optimizer_kwargs(hp)``.

    ``defaults()`` are the hyperparameters it reads, with defaults (a row that names the term
    gets them unless it sets them); ``optional()`` those it reads only when the row has them;
    ``validators()`` maps its own hyperparameters to ``check(method, key, value) -> value``
    (others are checked as numbers >= 0). Flags: ``needs_k`` (ranks features: ``k`` required),
    ``uses_saliency`` (reads ``step.saliency``: the logits come from its forward),
    ``input_graph`` (needs ``step.logits`` with a graph to ``step.x_input``),
    ``second_order`` (differentiates a saliency or Hessian: runs under
    :func:`r2et.models.second_order` and warns about BatchNorm batch statistics).
    """

    name: ClassVar[str] = ""
    weight_key: ClassVar[str | None] = None
    sign: ClassVar[float] = 1.0
    needs_k: ClassVar[bool] = False
    uses_saliency: ClassVar[bool] = False
    input_graph: ClassVar[bool] = False
    second_order: ClassVar[bool] = False

    @property
    def adds_loss(self) -> bool:
        return bool(self.name)

    def defaults(self) -> dict[str, Any]:
        return {}

    def optional(self) -> tuple[str, ...]:
        return ()

    def validators(self) -> dict[str, Callable[[str, str, Any], Any]]:
        return {}

    def setup(self, step: Step) -> None:
        """Called for every piece before the loss is computed."""

    def weight(self, hp: Mapping[str, Any]) -> float:
        return 0.0 if self.weight_key is None else self.sign * hp[self.weight_key]

    def value(self, step: Step) -> torch.Tensor:
        """The term's value ``R`` (a scalar tensor) on the step."""
        raise NotImplementedError(f"{type(self).__name__} adds no loss term")

    def affine(self, step: Step) -> tuple[torch.Tensor, float, float]:
        """``(t, a, b)`` with ``R = a·t + b``; by default ``(value(step), 1, 0)``."""
        return self.value(step), 1.0, 0.0

    def ce_weight(self, hp: Mapping[str, Any]) -> float:
        return 1.0

    def prepare(self, model: nn.Module, hp: Mapping[str, Any]) -> nn.Module:
        return model

    def optimizer_kwargs(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        return {}


class _AffineTerm(Term):
    """A loss term defined by :meth:`affine`; its value is ``a·t + b``."""

    def value(self, step: Step) -> torch.Tensor:
        t, a, b = self.affine(step)
        return t * a + b


@dataclass(frozen=True)
class RankingGap(_AffineTerm):
    """``R = mean_n gap_T(ŝ(x_n))`` (log ``gap``, weight ``−lam``): R2ET's top-k margin of the
    step's scores, scale-free by ``normalize``; T = the current top-k (one ``topk``, O(F) per
    row, :func:`topk_gap_of`), or ``step.fixed_mask`` when a point provider fixed it (``at``:
    the clean top-k, :func:`ranking_gap`). With ``m`` (``boundary=True`` adds the default
    ``m=1``): R2ET-mm's gap of the ``m`` weakest top-k against the ``m`` strongest others."""

    boundary: bool = False
    name: ClassVar[str] = "gap"
    weight_key: ClassVar[str | None] = "lam"
    sign: ClassVar[float] = -1.0
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"lam": 0.01, "normalize": "mean", **({"m": 1} if self.boundary else {})}

    def optional(self) -> tuple[str, ...]:
        return ("m",)

    def affine(self, step: Step) -> tuple[torch.Tensor, float, float]:
        m, normalize = step.hp.get("m"), step.hp["normalize"]
        if step.fixed_mask is not None:
            return ranking_gap(step.scores, step.fixed_mask, m, normalize).mean(), 1.0, 0.0
        t, a, b = _topk_gap_affine(step.scores, step.k, m, normalize)
        return t.mean(), a, b


@dataclass(frozen=True)
class PairwiseExp(Term):
    """``R = mean_n mean_{i∈T, j∉T} exp(−(ŝ_i − ŝ_j))`` (log ``pair_exp``, weight ``lam``):
    the exponential (soft) form of R2ET's pairwise ranking objective on scale-free scores
    ``ŝ`` (``normalize``), T the current top-k (detached). It weighs the pairs closest to
    swapping most, between the plain gap (every pair alike) and R2ET-mm (the closest pair
    only). The pair mean factorises, ``mean_i exp(−ŝ_i) · mean_j exp(ŝ_j)``: O(F) per row."""

    name: ClassVar[str] = "pair_exp"
    weight_key: ClassVar[str | None] = "lam"
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"lam": 0.01, "normalize": "mean"}

    def value(self, step: Step) -> torch.Tensor:
        s = normalize_scores(step.scores, step.hp["normalize"])
        top = topk_mask(step.scores.detach(), step.k).to(s.dtype)
        k, f = step.k, s.shape[1]
        inside = (torch.exp(-s) * top).sum(1) / k
        outside = (torch.exp(s) * (1 - top)).sum(1) / (f - k)
        return (inside * outside).mean()


@dataclass(frozen=True)
class PathThickness(_AffineTerm):
    """``R = mean_n gap_T(ŝ(x_n + u_n))`` (log ``thick``, weight ``−nu``): a one-sample
    estimate of the explanation thickness (Chen et al., Def. 4.1) as a training term, the
    official code's ``tx``: the clean top-k ``T`` (detached) kept ranked above the rest at a
    point ``u_n`` drawn uniformly from the l_inf ball of radius ``tx_radius`` around ``x_n``
    (the global RNG, seeded by :func:`r2et.fit`), scale-free by ``normalize``. Costs one more
    saliency (no logits)."""

    name: ClassVar[str] = "thick"
    weight_key: ClassVar[str | None] = "nu"
    sign: ClassVar[float] = -1.0
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"nu": 0.01, "tx_radius": 0.3, "normalize": "mean"}

    def affine(self, step: Step) -> tuple[torch.Tensor, float, float]:
        r = step.hp["tx_radius"]
        x = step.x.detach()
        x2 = x + (torch.rand_like(x) * 2 - 1) * r
        scores2 = step.explainer.reduce_attr(step.attribution_at(x2))
        mask = topk_mask(step.scores.detach(), step.k)
        return ranking_gap(scores2, mask, None, step.hp["normalize"]).mean(), 1.0, 0.0


@dataclass(frozen=True)
class FiniteDifferenceHessian(_AffineTerm):
    """``R = mean_n ‖(g(x + h v) − g(x)) / h‖₂`` (log ``hess``, weight ``mu``) with
    ``v = sign(g(x))`` (detached), an l_inf-unit direction, so ``h`` is an l_inf step: the
    finite-difference Hessian norm along the gradient sign (Est-H). ``g(x)`` is the step's
    saliency, ``g(x + h v)`` costs one more gradient (no logits). With a ``normalize`` other
    than ``"none"`` (read when the row has it) each difference is divided by ``‖g(x)‖₂``
    (scale-free, like the gap). ``t`` is the mean difference norm, ``a = 1/h``."""

    name: ClassVar[str] = "hess"
    weight_key: ClassVar[str | None] = "mu"
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"mu": 0.1, "h": 0.3}

    def optional(self) -> tuple[str, ...]:
        return ("normalize",)

    def affine(self, step: Step) -> tuple[torch.Tensor, float, float]:
        h, attr = step.hp["h"], step.attribution
        x2 = torch.add(step.x.detach(), torch.sign(attr.detach()), alpha=h)
        diff = (step.attribution_at(x2) - attr).flatten(1).norm(dim=1)
        if step.hp.get("normalize", "none") != "none":
            diff = diff / attr.flatten(1).norm(dim=1).clamp_min(1e-12)
        return diff.mean(), 1.0 / h, 0.0


@dataclass(frozen=True)
class ExactHessian(Term):
    """``R = mean_n ‖∇²ₓ f_c(x_n)‖_F`` (log ``hess``, weight ``mu``): the exact per-sample input
    Hessian of the explained output (:func:`input_hessian`); inputs with more than
    ``max_features`` values are refused (a D × D matrix per sample)."""

    name: ClassVar[str] = "hess"
    weight_key: ClassVar[str | None] = "mu"
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"mu": 0.01, "max_features": 512}

    def setup(self, step: Step) -> None:
        d, limit = step.x[0].numel(), step.hp["max_features"]
        if d > limit:
            raise ValueError(
                f"exact-h materialises a {d}x{d} Hessian per sample; inputs with more than "
                f"max_features={limit} values are refused (use est-h, or raise "
                "max_features if memory allows)"
            )

    def value(self, step: Step) -> torch.Tensor:
        hess = input_hessian(step.model, step.x, step.target, step.explainer.output, **step.fkw)
        return hess.flatten(1).norm(dim=1).mean()


@dataclass(frozen=True)
class SmoothedGeometry(Term):
    """``R = mean_n λ_max(Lᵀ J Jᵀ L)`` (log ``ssr``, weight ``alpha · beta``): SSR's top
    eigenvalue of the Gauss-Newton input Hessian (:func:`ssr_term`), from the logits of the
    step's forward pass at ``step.x_input``. ``ssr`` pairs it with ``CEWeight("alpha")``."""

    name: ClassVar[str] = "ssr"
    input_graph: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"alpha": 0.5, "beta": 0.01}

    def weight(self, hp: Mapping[str, Any]) -> float:
        return hp["alpha"] * hp["beta"]

    def value(self, step: Step) -> torch.Tensor:
        return ssr_term(step.logits, step.x_input).mean()


@dataclass(frozen=True)
class CertifiedGap(Term):
    """``R = mean_n gap_T(s_l, s_u) / scale(s(x_n))`` (log ``cert_gap``, weight ``−lam``): the
    gap ``mean_{i∈T} s_l_i − mean_{j∉T} s_u_j`` of interval bounds of the scores over the l_inf
    ball ``B(x, cert_eps)`` (:func:`r2et.certify.gradient_bounds`, differentiable in the
    parameters), T the top-k of ``s(x)``, divided by ``mean_j s_j(x)`` with
    ``normalize="mean"`` (``"l2"``: the RMS; ``"none"``: 1). When it is positive the top-k is
    certified on the ball (:func:`r2et.certify.certified_radius` asks for less), so raising it
    enlarges certified radii. ReLU MLPs with gradient or gradient×input saliency of the logit.
    """

    name: ClassVar[str] = "cert_gap"
    weight_key: ClassVar[str | None] = "lam"
    sign: ClassVar[float] = -1.0
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"lam": 0.1, "cert_eps": 0.05, "normalize": "mean"}

    def optional(self) -> tuple[str, ...]:
        return ("m",)

    def setup(self, step: Step) -> None:
        self._layers(step)

    @staticmethod
    def _layers(step: Step) -> list[nn.Linear]:
        from r2et.certify import relu_layers  # certify sits beside methods: imported when used

        ex, name = step.explainer, step.method.name
        if ex.method not in ("grad", "grad_x_input") or ex.output != "logit":
            raise ValueError(
                f"method {name!r} needs Explainer('grad' or 'grad_x_input', output='logit')"
            )
        try:
            if step.fkw:
                raise TypeError("forward keywords")
            return relu_layers(step.model)
        except TypeError:
            raise TypeError(
                f"method {name!r} needs a ReLU MLP (Linear/ReLU layers, no forward "
                f"keywords), got {type(step.model).__name__}"
            ) from None

    def value(self, step: Step) -> torch.Tensor:
        from r2et.certify import gradient_bounds, score_bounds

        params = [
            (
                lin.weight,
                lin.bias if lin.bias is not None else lin.weight.new_zeros(len(lin.weight)),
            )
            for lin in self._layers(step)
        ]
        x, eps = step.x, step.hp["cert_eps"]
        flat = x.detach().flatten(1)
        low, high = flat - eps, flat + eps
        gl, gu, _ = gradient_bounds(params, low, high, step.target)
        sl, su = score_bounds(step.explainer, x, low.view_as(x), high.view_as(x), gl, gu)
        scores, k = step.scores, step.k
        gap = _masked_gap(sl, su, topk_mask(scores.detach(), k), k, step.hp.get("m"))
        return (gap / score_scale(scores, step.hp["normalize"]).squeeze(1)).mean()


@dataclass(frozen=True)
class AdversarialPoint(Term):
    """The point provider of adversarial training: ``setup`` runs an inner
    :class:`r2et.attacks.ERAttack` (``at_steps`` steps of size ``at_step_size`` in the l_inf
    ball of radius ``at_eps``, random start, prediction kept) from the batch and moves the step
    to ``x' = x_adv``, explaining the class predicted at x and ranking against the clean top-k
    ``T = top-k(s(x))``. The loss terms of the row (``at``: :class:`RankingGap`) and the
    cross-entropy are then evaluated at ``x'``."""

    needs_k: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"at_steps": 10, "at_eps": 0.3, "at_step_size": None}

    def setup(self, step: Step) -> None:
        from r2et.attacks import ERAttack  # a higher-level sibling: imported when used

        model, x, fkw, ex, hp = step.model, step.x, step.fkw, step.explainer, step.hp
        with torch.no_grad():
            target = step.explained_class(model(x, **fkw))
        s_clean = ex.scores(model, x.detach(), target, **fkw).detach()
        k = check_k(step.method.k, s_clean.shape[1])
        atk = ERAttack(
            ex,
            k,
            hp["at_eps"],
            steps=hp["at_steps"],
            step_size=hp["at_step_size"],
            keep_prediction=True,
            random_start=True,
        )
        x_adv = atk(model, x.detach(), target, **fkw).x_adv.detach()
        step.move_to(x_adv, target, topk_mask(s_clean, k))


@dataclass(frozen=True)
class CEWeight(Term):
    """Multiplies the cross-entropy by ``hp[key]`` (``complement=True``: ``1 − hp[key]``, as
    ``ssr``'s ``(1 − alpha) CE``)."""

    key: str = "alpha"
    complement: bool = True

    def optional(self) -> tuple[str, ...]:
        return (self.key,)

    def ce_weight(self, hp: Mapping[str, Any]) -> float:
        return 1 - hp[self.key] if self.complement else hp[self.key]


@dataclass(frozen=True)
class WeightDecay(Term):
    """Weight decay ``weight_decay`` passed to the optimiser (:attr:`optimizer_kwargs`)."""

    def defaults(self) -> dict[str, Any]:
        return {"weight_decay": 1e-3}

    def optimizer_kwargs(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        return {"weight_decay": hp["weight_decay"]}


@dataclass(frozen=True)
class SoftplusActivations(Term):
    """The model transform of ``sp``: a copy with every ``nn.ReLU`` module (nested, in-place or
    not) replaced by ``nn.Softplus(beta)``, the transform recorded in ``model.r2et_transforms``
    (so checkpoints can rebuild it). ReLUs applied functionally in ``forward`` cannot be seen
    and are refused."""

    def defaults(self) -> dict[str, Any]:
        return {"beta": 10.0}

    def prepare(self, model: nn.Module, hp: Mapping[str, Any]) -> nn.Module:
        if not has_relu(model):
            raise ValueError(
                "method 'sp' needs a model with nn.ReLU modules to replace; functional ReLUs "
                "(F.relu / torch.relu in forward) are not supported"
            )
        beta = hp["beta"]
        out = relu_to_softplus(model, beta)
        out.r2et_transforms = [
            *copy.deepcopy(getattr(model, "r2et_transforms", [])),
            {"name": "relu_to_softplus", "beta": beta},
        ]
        return out


class Part(NamedTuple):
    """A loss term's contribution on one step: ``weight · (a · stat + b)``, logged as ``name``."""

    name: str
    stat: torch.Tensor
    a: float
    b: float
    weight: float


@dataclass(frozen=True)
class Weighting:
    """Adds a :class:`Part` to the loss, the same way for every term: ``w · R`` with
    ``R = a·t + b`` (constants folded into floats: ``(w a)·t + w b``); with ``adaptive`` the
    weight becomes ``w · (CE + 1) / |R|`` (detached), which keeps each term on the scale of the
    cross-entropy as the authors' code does. Zero weights add nothing."""

    adaptive: bool = False

    def add(self, total: torch.Tensor, part: Part, ce: torch.Tensor) -> torch.Tensor:
        w = part.weight
        if w == 0:
            return total
        if self.adaptive:
            value = part.stat * part.a + part.b
            scale = (ce.detach() + 1) / value.detach().abs().clamp_min(1e-12)
            return total + w * scale * value
        total = total + (w * part.a) * part.stat
        return total + w * part.b if part.b != 0 else total


def _logs(step: Step, ce: torch.Tensor, parts: list[Part]) -> dict[str, float]:
    """``ce``, every term's value ``a·t + b`` and the batch accuracy as floats, in one device
    transfer."""
    acc = (step.prediction == step.y).to(ce.dtype).mean()
    floats = torch.stack([ce, *(p.stat for p in parts), acc]).detach().tolist()
    logs = {"ce": floats[0]}
    for p, f in zip(parts, floats[1:-1]):
        logs[p.name] = p.a * f + p.b
    logs["accuracy"] = floats[-1]
    return logs


# ---------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class MethodRow:
    """One registered training recipe: its terms and defaults.

    ``summary`` (one line), ``terms`` (the :class:`Term` pieces), ``defaults`` (hyperparameter
    defaults; the terms' own defaults fill in the rest, and ``adaptive=False`` is added when the
    row has a loss term), ``weight_name`` (the main weight a grid sweep varies, None for none),
    ``output`` (the default explainer's output: ``"logit"``, ``"prob"`` or ``"loss"``).
    """

    summary: str
    terms: tuple[Term, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    weight_name: str | None = None
    output: str = "logit"

    @property
    def needs_k(self) -> bool:
        """Whether a term ranks features (then ``get_method`` requires ``k``)."""
        return any(t.needs_k for t in self.terms)

    @property
    def second_order(self) -> bool:
        """Whether a term differentiates a saliency (second-order context, BatchNorm check)."""
        return any(t.second_order for t in self.terms)

    def hyperparameters(self) -> dict[str, Any]:
        """Every default: the row's, then the terms' it does not set, then ``adaptive``."""
        hp = dict(self.defaults)
        for term in self.terms:
            for key, value in term.defaults().items():
                hp.setdefault(key, value)
        if any(t.adds_loss for t in self.terms):
            hp.setdefault("adaptive", False)
        return hp


METHODS: Registry[MethodRow] = Registry("training method")


def register_method(name: str, row: MethodRow, *, replace: bool = False) -> None:
    """Register the training recipe ``row`` as ``name`` (then :func:`get_method` builds it and
    :func:`list_methods` lists it last). Refused (``ValueError``): a taken name unless
    ``replace``, terms that are not :class:`Term` objects, two loss terms logged under one name,
    a default no term reads, a ``weight_name`` that is not a hyperparameter, bad defaults."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a method name must be a non-empty string, got {name!r}")
    if name in METHODS and not replace:
        raise ValueError(f"method {name!r} is already registered (pass replace=True)")
    if not isinstance(row, MethodRow) or not all(isinstance(t, Term) for t in row.terms):
        raise ValueError(f"method {name!r}: row must be a MethodRow of Term objects")
    check_choice("output", row.output, ("logit", "prob", "loss"))
    logged = [t.name for t in row.terms if t.adds_loss]
    if len(set(logged)) != len(logged):
        raise ValueError(f"method {name!r}: two loss terms are logged as one name in {logged}")
    hp = row.hyperparameters()
    read = {"adaptive"}.union(*([*t.defaults(), *t.optional()] for t in row.terms))
    unread = sorted(set(row.defaults) - read)
    if unread:
        raise ValueError(f"method {name!r}: no term reads the default(s) {unread}")
    if row.weight_name is not None and row.weight_name not in hp:
        raise ValueError(f"method {name!r}: weight_name {row.weight_name!r} is no hyperparameter")
    for key, value in hp.items():
        _check_hyperparameter(name, key, value, row)
    METHODS.register(name, row, overwrite=replace)


def unregister_method(name: str) -> MethodRow:
    """Remove the recipe ``name`` from the registry and return its row."""
    check_choice("name", name, list_methods())
    row = METHODS.get(name)
    METHODS.unregister(name)
    return row


@contextlib.contextmanager
def registered_method(name: str, row: MethodRow) -> Iterator[MethodRow]:
    """Register ``row`` as ``name`` inside the block and unregister it after (tests)."""
    register_method(name, row)
    try:
        yield row
    finally:
        if name in METHODS:
            METHODS.unregister(name)


def list_methods() -> list[str]:
    """Names of the training recipes, in the design's order (then later registrations)."""
    return METHODS.names()


# ---------------------------------------------------------------------------- hyperparameters
_POSITIVE = ("h", "beta", "at_eps", "at_step_size", "cert_eps", "tx_radius")


def _check_hyperparameter(name: str, key: str, value: Any, row: MethodRow | None = None) -> Any:
    """Validate one hyperparameter of method ``name``; returns the normalised value. A term of
    ``row`` that declares a validator for ``key`` checks it; otherwise the rules below do
    (unknown keys: a finite number >= 0)."""
    for term in row.terms if row is not None else ():
        check = term.validators().get(key)
        if check is not None:
            return check(name, key, value)
    if key in ("adaptive",):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be True or False, got {value!r}")
        return value
    if key == "normalize":
        check_choice("normalize", value, NORMALIZATIONS)
        return value
    if key in ("m", "at_steps", "max_features"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        return int(value)
    if key == "at_step_size" and value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (key in _POSITIVE and value == 0):
        bound = "> 0" if key in _POSITIVE else ">= 0"
        raise ValueError(f"{key} of method {name!r} must be a finite number {bound}, got {value!r}")
    if key == "alpha" and value > 1:
        raise ValueError(f"alpha of method {name!r} must lie in [0, 1], got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------- the table
_R2ET_DEFAULTS = {"lam": 0.01, "mu": 0.1, "h": 0.3, "normalize": "mean", "adaptive": False}
_NOH_DEFAULTS = {k: v for k, v in _R2ET_DEFAULTS.items() if k not in ("mu", "h")}
_AT_DEFAULTS = {"lam": 0.1, "at_steps": 10, "at_eps": 0.3, "at_step_size": None,
                "normalize": "mean", "adaptive": False}  # fmt: skip

for _name, _row in {
    "vanilla": MethodRow("cross-entropy"),
    "wd": MethodRow("cross-entropy + optimiser weight decay", (WeightDecay(),), {}, "weight_decay"),
    "sp": MethodRow(
        "cross-entropy on a Softplus(beta) copy of a ReLU model",
        (SoftplusActivations(),),
        {},
        "beta",
    ),
    "est-h": MethodRow(
        "CE + mu * finite-difference input-Hessian norm along sign(g)",
        (FiniteDifferenceHessian(),),
        {"mu": 0.01, "h": 0.3, "adaptive": False},
        "mu",
        output="loss",
    ),
    "exact-h": MethodRow(
        "CE + mu * Frobenius norm of the exact per-sample input Hessian",
        (ExactHessian(),),
        {"mu": 0.01, "max_features": 512, "adaptive": False},
        "mu",
        output="loss",
    ),
    "ssr": MethodRow(
        "(1 - alpha) CE + alpha * beta * top eigenvalue of the Gauss-Newton input Hessian",
        (CEWeight("alpha", complement=True), SmoothedGeometry()),
        {"alpha": 0.5, "beta": 0.01, "adaptive": False},
        "beta",
    ),
    "at": MethodRow(
        "CE at an ERAttack point x' + lam * (-scale-free top-k gap at x')",
        (AdversarialPoint(), RankingGap()),
        _AT_DEFAULTS,
        "lam",
    ),
    "r2et": MethodRow(
        "CE + lam * (-top-k gap) + mu * est-h term",
        (RankingGap(), FiniteDifferenceHessian()),
        _R2ET_DEFAULTS,
        "lam",
    ),
    "r2et-mm": MethodRow(
        "CE + lam * (-gap of the m weakest top-k vs m strongest others) + mu * est-h term",
        (RankingGap(boundary=True), FiniteDifferenceHessian()),
        {**_R2ET_DEFAULTS, "m": 1},
        "lam",
    ),
    "r2et-noh": MethodRow(
        "CE + lam * (-top-k gap) (R2ET without the Hessian term)",
        (RankingGap(),),
        _NOH_DEFAULTS,
        "lam",
    ),
    "r2et-mm-noh": MethodRow(
        "CE + lam * (-gap of the m weakest top-k vs m strongest others)",
        (RankingGap(boundary=True),),
        {**_NOH_DEFAULTS, "m": 1},
        "lam",
    ),
    "r2et-sp": MethodRow(
        "the official code's default: Softplus(beta) activations + lam * (-top-k gap) "
        "+ mu * est-h term + nu * (-one-sample thickness), adaptive weights",
        (SoftplusActivations(), RankingGap(), FiniteDifferenceHessian(), PathThickness()),
        {**_R2ET_DEFAULTS, "nu": 0.01, "tx_radius": 0.3, "adaptive": True},
        "lam",
    ),
    "r2et-loss": MethodRow(
        "CE + lam * (-top-k gap) + mu * est-h term, on the loss-gradient saliency",
        (RankingGap(), FiniteDifferenceHessian()),
        _R2ET_DEFAULTS,
        "lam",
        output="loss",
    ),
    "r2et-exp": MethodRow(
        "CE + lam * mean over top-k/other pairs of exp(-(s_i - s_j)) + mu * est-h term",
        (PairwiseExp(), FiniteDifferenceHessian()),
        {**_R2ET_DEFAULTS},
        "lam",
    ),
    "r2et-adaptive": MethodRow(
        "R2ET with adaptive weights: w * (CE + 1)/|R| per term (detached)",
        (RankingGap(), FiniteDifferenceHessian()),
        {**_R2ET_DEFAULTS, "adaptive": True},
        "lam",
    ),
    "r2et-cert": MethodRow(
        "CE + lam * (-scale-free top-k gap of certified score bounds over the cert_eps ball)",
        (CertifiedGap(),),
        {"lam": 0.1, "cert_eps": 0.05, "normalize": "mean", "adaptive": False},
        "lam",
    ),
}.items():
    register_method(_name, _row)
del _name, _row


# ---------------------------------------------------------------------------- the method object
class TrainingMethod:
    """A named training recipe: ``prepare(model)``, ``loss(model, x, y)``, ``optimizer_kwargs``.

    Build one with :func:`get_method`. Attributes: ``name``, ``k`` (top-k size of ranking terms,
    None for methods without one), ``explainer`` (the saliency the regularisers use),
    ``hyperparameters`` (every hyperparameter, defaults included), ``weight_name`` (the main
    regularisation weight a grid sweep varies, None for ``vanilla``), ``summary`` (one line,
    also as ``description``), ``row`` (the registered :class:`MethodRow`) and ``terms``.
    """

    def __init__(
        self,
        name: str,
        k: int | None,
        explainer: Explainer,
        hyperparameters: dict[str, Any],
    ) -> None:
        self.name = name
        self.k = k
        self.explainer = explainer
        self.hyperparameters = hyperparameters
        self.row = METHODS.get(name)
        self.weight_name = self.row.weight_name
        self.summary = self.row.summary
        self.description = self.row.summary  # alias used by ``r2et methods``

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"TrainingMethod({self.name!r}, k={self.k}, {hp}, explainer={self.explainer!r})"

    @property
    def terms(self) -> tuple[Term, ...]:
        return self.row.terms

    # ------------------------------------------------------------------ public API
    def config(self) -> dict[str, Any]:
        """JSON-ready description; :func:`method_from_config` rebuilds the method from it."""
        return {
            "name": self.name,
            "k": self.k,
            "explainer": self.explainer.config(),
            "hyperparameters": dict(self.hyperparameters),
        }

    @property
    def optimizer_kwargs(self) -> dict[str, Any]:
        """Extra optimiser arguments (``{"weight_decay": ...}`` for ``wd``, else empty)."""
        out: dict[str, Any] = {}
        for term in self.terms:
            out.update(term.optimizer_kwargs(self.hyperparameters))
        return out

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model to train: ``model`` passed through every term's ``prepare`` (``sp``: a
        Softplus copy, :class:`SoftplusActivations`); ``model`` itself for the others."""
        for term in self.terms:
            model = term.prepare(model, self.hyperparameters)
        return model

    def loss(
        self, model: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor, **forward_kwargs
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch and its parts as floats (``ce``, the terms, ``accuracy``).

        ``y`` holds the labels. Saliency terms explain the model's predicted class (outputs
        ``"logit"``/``"prob"``) or the labels (``"loss"``); the saliency of the step is computed
        once (with ``create_graph=True``) and reused for the top-k indices, the gap and the
        finite-difference Hessian term.

        Methods with saliency terms run inside :func:`r2et.models.second_order` (the math
        attention kernel: fused attention has no double backward), and warn once per model
        when its BatchNorm layers normalise with batch statistics (see
        :func:`warn_batch_statistics`); ``vanilla``, ``wd`` and ``sp`` are left as they are.
        """
        if not self.row.second_order:
            return self._loss(model, x, y, forward_kwargs)
        warn_batch_statistics(model, self.name)
        with second_order():
            return self._loss(model, x, y, forward_kwargs)

    # ------------------------------------------------------------------ internals
    def _loss(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        forward_kwargs: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """:meth:`loss` without the context and the BatchNorm check:
        ``c · CE + Σ_terms w_t · R_t`` on one :class:`Step` (set up by every term first; the
        cross-entropy is formed before the terms)."""
        _check_inputs(model, x, y)
        hp, terms = self.hyperparameters, self.terms
        step = Step(self, model, x, y, forward_kwargs, terms)
        for term in terms:
            term.setup(step)
        ce = step.ce
        parts = [Part(t.name, *t.affine(step), t.weight(hp)) for t in terms if t.adds_loss]
        c = math.prod(t.ce_weight(hp) for t in terms)
        total = ce if c == 1 else c * ce
        weighting = Weighting(adaptive=bool(hp.get("adaptive", False)))
        for part in parts:
            total = weighting.add(total, part, ce)
        return total, _logs(step, ce, parts)

    def _saliency(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        fkw: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, attribution, target)`` at ``x`` (:attr:`Step.saliency`)."""
        return Step(self, model, x, y, fkw, self.terms).saliency


def _check_inputs(model: Any, x: torch.Tensor, y: torch.Tensor) -> None:
    """``x`` a finite floating batch, ``y`` labels of the same batch size (and within the
    model's ``r2et_spec`` class count when it has one)."""
    check_batch("x", x)
    if isinstance(y, torch.Tensor) and y.dim() >= 1 and x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got {len(x)} and {len(y)}")
    spec = getattr(model, "r2et_spec", None)
    n_classes = spec.get("n_classes") if isinstance(spec, dict) else None
    check_labels("y", y, int(x.shape[0]), n_classes)


# ---------------------------------------------------------------------------- constructors
#: What a training method uses of its explainer (besides ``supports_second_order = True``).
_EXPLAINER_PROTOCOL = ("attribute", "scores", "reduce_attr", "resolve_target", "output",
                       "method", "config")  # fmt: skip


def get_method(
    name: str,
    k: int | None = None,
    explainer: Explainer | dict[str, Any] | str | None = None,
    groups: Any = None,
    **hyperparameters: Any,
) -> TrainingMethod:
    """The training recipe ``name`` (see :func:`list_methods`) with its hyperparameters.

    ``k`` is the top-k size of the ranking terms (required by ``at`` and the ``r2et`` family,
    checked against the number of features F as ``1 <= k <= F-1`` when the loss first sees
    data). ``explainer``: an :class:`Explainer`, its ``config()`` dict, a registered explainer
    name (``"grad_x_input"``: that explainer of the method's default output), or None for
    gradient saliency of the method's default output (see the module docstring), or any explainer
    object with r2et's protocol (``attribute(..., create_graph=True)``, ``scores``,
    ``reduce_attr``, ``resolve_target``, ``output``, ``method``, ``config``) that declares
    ``supports_second_order = True``; a first-order one (e.g. a Captum attribution through
    :class:`r2et.interop.CaptumExplainer`) is refused: the regularisers differentiate the
    saliency. ``groups`` (e.g. ``ds.groups``) makes the ranking terms rank feature groups,
    each scored by the sum of its columns' scores (:func:`r2et.explain.group_index`); k then
    counts groups. Unknown
    hyperparameters, negative weights and bad values raise ``ValueError``.

    Hyperparameters (the defaults were chosen on Adult, see
    ``docs/stability.md``): ``lam`` (gap weight), ``mu`` (Hessian-term weight), ``h`` (the
    l_inf finite-difference step, on the scale of the attack budget: 0.3 suits standardised
    tabular features; use about the attack's eps for images in [0, 1]), ``m`` (R2ET-mm's
    number of boundary features), ``normalize`` (``"mean"``, ``"l2"`` or ``"none"``: the
    scale-free gap), ``adaptive``, ``weight_decay`` (wd), ``beta`` (sp's Softplus β, ssr's
    weight), ``alpha`` (ssr's CE/regulariser mix), ``max_features`` (exact-h's input-size
    limit), ``at_steps``/``at_eps``/``at_step_size`` (at's inner ERAttack).
    """
    check_choice("name", name, list_methods())
    row = METHODS.get(name)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be an int >= 1 (and <= F-1), got {k!r}")
    if k is None and row.needs_k:
        raise ValueError(f"method {name!r} ranks features: pass k (an int in 1..F-1)")
    hp = _resolve_hyperparameters(name, row, k, hyperparameters)
    explainer = _resolve_explainer(name, explainer, row.output)
    if groups is not None:
        explainer = explainer.with_groups(groups)
    return TrainingMethod(name, k, explainer, hp)


def _resolve_hyperparameters(
    name: str, row: MethodRow, k: int | None, given: dict[str, Any]
) -> dict[str, Any]:
    """The row's defaults updated by ``given``, every value checked."""
    defaults = row.hyperparameters()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for method {name!r}; allowed: {sorted(defaults)}"
        )
    hp = {key: _check_hyperparameter(name, key, v, row) for key, v in defaults.items()}
    hp.update({key: _check_hyperparameter(name, key, v, row) for key, v in given.items()})
    if "m" in hp and k is not None and hp["m"] > k:
        raise ValueError(f"m={hp['m']} must not exceed k={k}")
    return hp


def _resolve_explainer(name: str, explainer: Any, output: str) -> Any:
    """An :class:`Explainer` from None (gradient saliency of ``output``), an explainer name (that
    explainer of ``output``) or a config dict, or a second-order explainer object with r2et's
    protocol."""
    if explainer is None:
        return Explainer("grad", output=output)
    if isinstance(explainer, str):
        return Explainer(explainer, output=output)
    if isinstance(explainer, dict):
        return Explainer(**explainer)
    missing = [a for a in _EXPLAINER_PROTOCOL if not hasattr(explainer, a)]
    if missing:
        raise ValueError(
            "explainer must be an Explainer, its config dict, None, or an object with "
            f"{', '.join(_EXPLAINER_PROTOCOL)}; {type(explainer).__name__} lacks {missing}"
        )
    check_second_order(
        explainer,
        f"training method {name!r}",
        "train with r2et.Explainer (e.g. Explainer('ig') for integrated gradients) and "
        "evaluate with any explainer",
    )
    return explainer


def method_from_config(config: dict[str, Any]) -> TrainingMethod:
    """Rebuild a method from :meth:`TrainingMethod.config` output."""
    try:
        return get_method(
            config["name"],
            k=config.get("k"),
            explainer=config.get("explainer"),
            **config.get("hyperparameters", {}),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a method config: {err}") from None
