"""Training recipes: R2ET and every baseline of Chen et al. (NeurIPS 2024) as one table.

Each recipe is a :class:`TrainingMethod` with ``prepare(model)``, ``loss(model, x, y)`` and
``optimizer_kwargs``; :func:`get_method` builds one by name, :func:`list_methods` lists them.
All regulariser terms use the method's :class:`~r2et.explain.Explainer`, so the saliency that
is trained is the saliency that is attacked and measured.

=============== ==============================================================================
``vanilla``     ``CE``
``wd``          ``CE``, weight decay in the optimiser (``weight_decay``)
``sp``          ``CE`` on the model with every ``nn.ReLU`` replaced by ``Softplus(beta)``
``est-h``       ``CE + mu · ‖(g(x + h v) − g(x)) / h‖₂``, ``v = sign(g(x))`` (finite-difference
                Hessian norm along the gradient sign)
``exact-h``     ``CE + mu · ‖∇²ₓ f(x)‖_F`` (exact per-sample input Hessian, ``torch.func``)
``ssr``         ``(1 − alpha) CE + alpha · beta · λ_max(Lᵀ J Jᵀ L)`` (smoothed geometry, Wang
                et al., NeurIPS 2020)
``at``          ``CE(x') + lam · (−gap_T(ŝ(x')))``, x' from an inner ERAttack
``r2et``        ``CE + lam · (−gap_T(ŝ(x))) + mu · est-h term`` (Chen et al., NeurIPS 2024)
``r2et-mm``     as ``r2et`` with the gap between the ``m`` weakest top-k and the ``m`` strongest
                other features
``r2et-noh``    ``r2et`` without the Hessian term (the paper's R2ET\\H)
``r2et-mm-noh`` ``r2et-mm`` without the Hessian term (R2ET-mm\\H)
``r2et-cert``   ``CE + lam · (−gap_T(s_l, s_u))``: R2ET's gap on *certified* score bounds,
                ``mean_{i∈T} s_l_i − mean_{j∉T} s_u_j`` over the l_inf ball of radius
                ``cert_eps`` (interval bounds on the gradient, :mod:`r2et.certify`; ReLU MLPs)
=============== ==============================================================================

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

import copy
import math
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from r2et._checks import check_batch, check_choice, check_k, check_labels
from r2et.explain import Explainer
from r2et.metrics import topk_mask
from r2et.models import has_relu, relu_to_softplus, second_order

NORMALIZATIONS = ("none", "mean", "l2")


# ---------------------------------------------------------------------------- building blocks
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
    f = s.shape[1]
    k = int(mask[0].sum())
    if m is None:
        w = mask.to(s.dtype)
        return (s * w).sum(1) / k - (s * (1 - w)).sum(1) / (f - k)
    _check_m(m, k, f)
    inf = torch.tensor(float("inf"), dtype=s.dtype, device=s.device)
    weakest_top = s.masked_fill(~mask, inf).topk(m, dim=1, largest=False).values
    strongest_rest = s.masked_fill(mask, -inf).topk(m, dim=1).values
    return weakest_top.mean(1) - strongest_rest.mean(1)


def _gap_statistic(
    scores: torch.Tensor, k: int, m: int | None, normalize: str
) -> tuple[torch.Tensor, float, float]:
    """A batch statistic ``t`` and floats ``a``, ``b`` with
    ``mean_n topk_gap_of(scores, k, m, normalize) = a·t + b`` (the training fast path).

    For the default full gap on mean-normalised scores, with ``r = Σ_T s / Σ_j s`` (the share of
    the saliency held by the top-k): ``gap = F²/(k(F−k))·r − F/(F−k)``, so ``t = mean_n r``;
    for the ``m`` form ``gap = F/m · (Σ_{ranks k−m+1..k} s − Σ_{ranks k+1..k+m} s) / Σ_j s``;
    otherwise ``t`` is the mean gap itself (``a = 1``, ``b = 0``).
    """
    f = scores.shape[1]
    if normalize != "mean":
        return topk_gap_of(scores, k, m, normalize).mean(), 1.0, 0.0
    total = scores.sum(1).clamp_min(torch.finfo(scores.dtype).tiny ** 0.5)
    if m is None:
        idx = scores.detach().topk(k, dim=1, sorted=False).indices
        top = scores.gather(1, idx).sum(1)
        return (top / total).mean(), f * f / (k * (f - k)), -f / (f - k)
    _check_m(m, k, f)
    # ranks k-m+1..k minus ranks k+1..k+m: (N, 2m) values times a ±1 vector
    idx = scores.detach().topk(k + m, dim=1).indices[:, k - m :]
    signs = torch.ones(2 * m, dtype=scores.dtype, device=scores.device)
    signs[m:] = -1
    return ((scores.gather(1, idx) @ signs) / total).mean(), f / m, 0.0


def _check_m(m: int, k: int, f: int) -> None:
    if not 1 <= m <= min(k, f - k):
        raise ValueError(f"m={m} must lie in 1..min(k, F-k)={min(k, f - k)}")


def topk_gap_of(
    scores: torch.Tensor, k: int, m: int | None = None, normalize: str = "none"
) -> torch.Tensor:
    """:func:`ranking_gap` with ``T`` the current top-k of each row of ``scores`` (indices
    detached, values differentiable), in one ``topk`` call and O(F) work per row.

    ``m=None``: ``Σ_T/k − (Σ_all − Σ_T)/(F − k)`` from the top-k values ``Σ_T`` and the row sum;
    with ``m``: the values ranked ``k−m+1..k`` minus those ranked ``k+1..k+m``. A scale-free
    ``normalize`` divides the result by the row's mean (or RMS), which equals normalising the
    scores first, since the gap is linear in the scores.
    """
    check_choice("normalize", normalize, NORMALIZATIONS)
    f = scores.shape[1]
    if m is None:
        idx = scores.detach().topk(k, dim=1, sorted=False).indices
        top = scores.gather(1, idx).sum(1)
        total = scores.sum(1)
        gap = top / k - (total - top) / (f - k)
    else:
        _check_m(m, k, f)
        vals = scores.gather(1, scores.detach().topk(k + m, dim=1).indices)
        gap = vals[:, k - m : k].mean(1) - vals[:, k:].mean(1)
        total = scores.sum(1) if normalize == "mean" else None
    if normalize == "none":
        return gap
    if normalize == "mean":
        denom = total / f
    else:
        denom = scores.pow(2).mean(1).sqrt()
    return gap / denom.clamp_min(torch.finfo(scores.dtype).tiny ** 0.5)


def _select_output(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """The explained scalar per row: target logit, its softmax probability, or its CE."""
    if output == "logit":
        return logits.gather(1, target[:, None]).squeeze(1)
    if output == "prob":
        return logits.softmax(1).gather(1, target[:, None]).squeeze(1)
    return F.cross_entropy(logits, target, reduction="none")


def _output_grad(
    logits: torch.Tensor, x: torch.Tensor, target: torch.Tensor, output: str
) -> torch.Tensor:
    """``∂f_c/∂x`` for every row, with a graph to the parameters (``create_graph=True``).

    For the logit the backward is seeded with the one-hot targets directly (``Jᵀ e_c``), which
    saves the gather/sum nodes of ``∂(Σ_n logit_{n,c_n})/∂x`` in the double-backward graph.
    """
    if output == "logit":
        seed = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
        (g,) = torch.autograd.grad(logits, x, grad_outputs=seed, create_graph=True)
        return g
    (g,) = torch.autograd.grad(_select_output(logits, target, output).sum(), x, create_graph=True)
    return g


def _per_sample_kwargs(fkw: dict[str, Any], n: int) -> tuple[list[str], dict[str, Any]]:
    """Split forward kwargs into per-sample tensors (first dimension ``n``) and shared values."""
    per = [
        k for k, v in fkw.items() if isinstance(v, torch.Tensor) and v.dim() >= 1 and len(v) == n
    ]
    shared = {k: v for k, v in fkw.items() if k not in per}
    return per, shared


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
    per, shared = _per_sample_kwargs(forward_kwargs, n)

    def f(xi: torch.Tensor, ti: torch.Tensor, *vals: torch.Tensor) -> torch.Tensor:
        kw = {**shared, **{k: v.unsqueeze(0) for k, v in zip(per, vals)}}
        logits = model(xi.view(1, *x.shape[1:]), **kw)
        return _select_output(logits, ti.view(1), output).squeeze(0)

    flat = x.detach().flatten(1)
    with second_order():
        hess = vmap(hessian(f, argnums=0))(flat, target, *[forward_kwargs[k] for k in per])
    return hess


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
        "on the other samples of its batch. Choices: (1) eval-mode statistics: after "
        "model.train(), model.apply(lambda m: m.eval() if isinstance(m, "
        "torch.nn.modules.batchnorm._BatchNorm) else None) (in your own loop: r2et.fit calls "
        "model.train() every epoch); (2) GroupNorm instead of BatchNorm (e.g. "
        "build_model('resnet9', ..., norm='group')); (3) accept the coupling and silence this "
        "warning with warnings.filterwarnings('ignore', message='r2et: BatchNorm'). "
        "This warning is shown once per model.",
        UserWarning,
        stacklevel=3,
    )
    return True


# ---------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class _Recipe:
    """One row of the table: default hyperparameters, the main weight, the explainer output."""

    summary: str
    defaults: dict[str, Any]
    weight_name: str | None
    output: str = "logit"
    needs_k: bool = False
    terms: tuple[str, ...] = ()


_R2ET_DEFAULTS = {"lam": 0.01, "mu": 0.1, "h": 0.3, "normalize": "mean", "adaptive": False}

_RECIPES: dict[str, _Recipe] = {
    "vanilla": _Recipe("cross-entropy", {}, None),
    "wd": _Recipe("cross-entropy + optimiser weight decay", {"weight_decay": 1e-3}, "weight_decay"),
    "sp": _Recipe("cross-entropy on a Softplus(beta) copy of a ReLU model", {"beta": 10.0}, "beta"),
    "est-h": _Recipe(
        "CE + mu * finite-difference input-Hessian norm along sign(g)",
        {"mu": 0.01, "h": 0.3, "adaptive": False},
        "mu",
        output="loss",
        terms=("hess",),
    ),
    "exact-h": _Recipe(
        "CE + mu * Frobenius norm of the exact per-sample input Hessian",
        {"mu": 0.01, "max_features": 512, "adaptive": False},
        "mu",
        output="loss",
        terms=("exact_hess",),
    ),
    "ssr": _Recipe(
        "(1 - alpha) CE + alpha * beta * top eigenvalue of the Gauss-Newton input Hessian",
        {"alpha": 0.5, "beta": 0.01, "adaptive": False},
        "beta",
        terms=("ssr",),
    ),
    "at": _Recipe(
        "CE at an ERAttack point x' + lam * (-scale-free top-k gap at x')",
        {
            "lam": 0.1,
            "at_steps": 10,
            "at_eps": 0.3,
            "at_step_size": None,
            "normalize": "mean",
            "adaptive": False,
        },
        "lam",
        needs_k=True,
        terms=("at",),
    ),
    "r2et": _Recipe(
        "CE + lam * (-top-k gap) + mu * est-h term",
        dict(_R2ET_DEFAULTS),
        "lam",
        needs_k=True,
        terms=("gap", "hess"),
    ),
    "r2et-mm": _Recipe(
        "CE + lam * (-gap of the m weakest top-k vs m strongest others) + mu * est-h term",
        {**_R2ET_DEFAULTS, "m": 1},
        "lam",
        needs_k=True,
        terms=("gap", "hess"),
    ),
    "r2et-noh": _Recipe(
        "CE + lam * (-top-k gap) (R2ET without the Hessian term)",
        {k: v for k, v in _R2ET_DEFAULTS.items() if k not in ("mu", "h")},
        "lam",
        needs_k=True,
        terms=("gap",),
    ),
    "r2et-mm-noh": _Recipe(
        "CE + lam * (-gap of the m weakest top-k vs m strongest others)",
        {**{k: v for k, v in _R2ET_DEFAULTS.items() if k not in ("mu", "h")}, "m": 1},
        "lam",
        needs_k=True,
        terms=("gap",),
    ),
    "r2et-cert": _Recipe(
        "CE + lam * (-scale-free top-k gap of certified score bounds over the cert_eps ball)",
        {"lam": 0.1, "cert_eps": 0.05, "normalize": "mean", "adaptive": False},
        "lam",
        needs_k=True,
        terms=("cert",),
    ),
}

_POSITIVE = ("h", "beta", "at_eps", "at_step_size", "cert_eps")


def list_methods() -> list[str]:
    """Names of the training recipes, in the design's order."""
    return list(_RECIPES)


def _check_hyperparameter(name: str, key: str, value: Any) -> Any:
    """Validate one hyperparameter of method ``name``; returns the normalised value."""
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


# ---------------------------------------------------------------------------- the method object
class TrainingMethod:
    """A named training recipe: ``prepare(model)``, ``loss(model, x, y)``, ``optimizer_kwargs``.

    Build one with :func:`get_method`. Attributes: ``name``, ``k`` (top-k size of ranking terms,
    None for methods without one), ``explainer`` (the saliency the regularisers use),
    ``hyperparameters`` (every hyperparameter, defaults included), ``weight_name`` (the main
    regularisation weight a grid sweep varies, None for ``vanilla``), ``summary`` (one line,
    also as ``description``).
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
        recipe = _RECIPES[name]
        self.weight_name = recipe.weight_name
        self.summary = recipe.summary
        self.description = recipe.summary  # alias used by ``r2et methods``
        self._terms = recipe.terms

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"TrainingMethod({self.name!r}, k={self.k}, {hp}, explainer={self.explainer!r})"

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
        if self.name == "wd":
            return {"weight_decay": self.hyperparameters["weight_decay"]}
        return {}

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model to train. ``sp`` returns a copy with every ``nn.ReLU`` module (nested,
        in-place or not) replaced by ``nn.Softplus(beta)`` and records the transform in
        ``model.r2et_transforms`` (so checkpoints can rebuild it); ReLUs applied functionally
        inside ``forward`` are not supported (they cannot be seen). Other methods return
        ``model`` itself."""
        if self.name != "sp":
            return model
        if not has_relu(model):
            raise ValueError(
                "method 'sp' needs a model with nn.ReLU modules to replace; functional ReLUs "
                "(F.relu / torch.relu in forward) are not supported"
            )
        beta = self.hyperparameters["beta"]
        out = relu_to_softplus(model, beta)
        out.r2et_transforms = [
            *copy.deepcopy(getattr(model, "r2et_transforms", [])),
            {"name": "relu_to_softplus", "beta": beta},
        ]
        return out

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
        if not self._terms:
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
        """:meth:`loss` without the context and the BatchNorm check."""
        check_batch("x", x)
        if isinstance(y, torch.Tensor) and y.dim() >= 1 and x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same batch size, got {len(x)} and {len(y)}")
        spec = getattr(model, "r2et_spec", None)
        n_classes = spec.get("n_classes") if isinstance(spec, dict) else None
        check_labels("y", y, int(x.shape[0]), n_classes)
        hp = self.hyperparameters
        terms = self._terms
        if not terms:
            logits = model(x, **forward_kwargs)
            ce = F.cross_entropy(logits, y)
            return ce, _logs(logits, y, ce=ce)
        if terms == ("exact_hess",):
            return self._exact_h_loss(model, x, y, forward_kwargs)
        if terms == ("ssr",):
            return self._ssr_loss(model, x, y, forward_kwargs)
        if terms == ("at",):
            return self._at_loss(model, x, y, forward_kwargs)
        if terms == ("cert",):
            return self._cert_loss(model, x, y, forward_kwargs)

        logits, attr, target = self._saliency(model, x, y, forward_kwargs)
        ce = F.cross_entropy(logits, y)
        # each term: (log name, batch statistic t, a, b, weight w), the term's value being
        # R = a·t + b and its contribution w·R; folding the constants into Python floats keeps
        # the double-backward graph small (this path runs on every step)
        parts: list[tuple[str, torch.Tensor, float, float, float]] = []
        if "gap" in terms:
            scores = self.explainer.reduce_attr(attr)
            k = check_k(self.k, scores.shape[1])
            stat, a, b = _gap_statistic(scores, k, hp.get("m"), hp["normalize"])
            parts.append(("gap", stat, a, b, -hp["lam"]))
        if "hess" in terms:
            stat = self._finite_difference_term(model, x, attr, target, forward_kwargs)
            parts.append(("hess", stat, 1.0 / hp["h"], 0.0, hp["mu"]))
        total = ce
        adaptive = hp["adaptive"]
        for _, stat, a, b, w in parts:
            if w == 0:
                continue
            if adaptive:  # w·(CE + 1)/|R|, detached
                value = stat * a + b
                scale = (ce.detach() + 1) / value.detach().abs().clamp_min(1e-12)
                total = total + w * scale * value
            else:
                total = total + (w * a) * stat
                if b != 0:
                    total = total + w * b
        pred = target if self.explainer.output != "loss" else logits.detach().argmax(1)
        acc = (pred == y).to(ce.dtype).mean()
        floats = torch.stack([ce, *(t[1] for t in parts), acc]).detach().tolist()
        logs = {"ce": floats[0], "accuracy": floats[-1]}
        for (name, _, a, b, _), f in zip(parts, floats[1:-1]):
            logs[name] = a * f + b
        return total, logs

    def _weighted(self, ce: torch.Tensor, parts: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
        """``Σ w·R``; with ``adaptive`` each ``w`` becomes ``w · (CE + 1)/|R|`` (detached)."""
        total = None
        adaptive = self.hyperparameters.get("adaptive", False)
        for w, term in parts:
            if w == 0:
                continue
            if adaptive:
                w = w * (ce.detach() + 1) / term.detach().abs().clamp_min(1e-12)
            total = w * term if total is None else total + w * term
        return torch.zeros((), dtype=ce.dtype, device=ce.device) if total is None else total

    def _target(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y if self.explainer.output == "loss" else logits.detach().argmax(1)

    def _saliency(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        fkw: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, attribution, target)`` at ``x``, differentiable w.r.t. the parameters.

        For gradient saliency the forward pass that gives the logits (and the cross-entropy)
        also gives the attribution: one forward, one ``create_graph`` backward.
        """
        ex = self.explainer
        if ex.method in ("grad", "grad_x_input"):
            xg = x.detach().requires_grad_(True)
            logits = model(xg, **fkw)
            target = self._target(logits, y)
            g = _output_grad(logits, xg, target, ex.output)
            attr = g if ex.method == "grad" else xg * g
            return logits, attr, target
        logits = model(x, **fkw)
        target = self._target(logits, y)
        attr = ex.attribute(model, x.detach(), target, create_graph=True, **fkw)
        return logits, attr, target

    def _cert_loss(
        self, model: Any, x: torch.Tensor, y: torch.Tensor, fkw: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``r2et-cert``: R2ET's gap on interval bounds of the scores over the l_inf ball
        ``B(x, cert_eps)`` (:func:`r2et.certify.gradient_bounds`, differentiable in the
        parameters): ``gap = mean_{i∈T} s_l_i − mean_{j∉T} s_u_j`` with T the top-k of ``s(x)``,
        divided by ``mean_j s_j(x)`` with ``normalize="mean"`` (``"l2"``: the RMS; ``"none"``).
        When the gap is positive the top-k is certified on the ball (the certificate asks for
        less, see :func:`r2et.certify.certified_radius`), so raising it enlarges certified
        radii. ReLU MLPs with gradient or gradient×input saliency of the logit only."""
        from r2et.certify import gradient_bounds, relu_layers, score_bounds

        ex, hp = self.explainer, self.hyperparameters
        if ex.method not in ("grad", "grad_x_input") or ex.output != "logit":
            raise ValueError(
                "method 'r2et-cert' needs Explainer('grad' or 'grad_x_input', output='logit')"
            )
        try:
            if fkw:
                raise TypeError("forward keywords")
            layers = relu_layers(model)
        except TypeError:
            raise TypeError(
                f"method 'r2et-cert' needs a ReLU MLP (Linear/ReLU layers, no forward "
                f"keywords), got {type(model).__name__}"
            ) from None
        logits, attr, target = self._saliency(model, x, y, fkw)
        ce = F.cross_entropy(logits, y)
        params = [
            (
                lin.weight,
                lin.bias if lin.bias is not None else lin.weight.new_zeros(len(lin.weight)),
            )
            for lin in layers
        ]
        flat = x.detach().flatten(1)
        eps = hp["cert_eps"]
        low, high = flat - eps, flat + eps
        gl, gu, _ = gradient_bounds(params, low, high, target)
        sl, su = score_bounds(ex, x, low.view_as(x), high.view_as(x), gl, gu)
        scores = ex.reduce_attr(attr)
        k = check_k(self.k, scores.shape[1])
        w = topk_mask(scores.detach(), k).to(sl.dtype)
        gap = (sl * w).sum(1) / k - (su * (1 - w)).sum(1) / (scores.shape[1] - k)
        gap = (gap / score_scale(scores, hp["normalize"]).squeeze(1)).mean()
        total = ce + self._weighted(ce, [(-hp["lam"], gap)])
        return total, _logs(logits, y, ce=ce, cert_gap=gap)

    def _finite_difference_term(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        attr: torch.Tensor,
        target: torch.Tensor,
        fkw: dict[str, Any],
    ) -> torch.Tensor:
        """``h`` times the Est-H term ``mean_n ‖(g(x + h v) − g(x)) / h‖₂`` (the caller divides
        by ``h``), ``v = sign(g(x))`` (detached), an l_inf-unit direction, so ``h`` is an l_inf
        step; ``g(x)`` is reused, ``g(x + h v)`` costs one more gradient. With
        ``normalize != "none"`` each difference is divided by ``‖g(x)‖₂`` (scale-free, like
        the gap)."""
        h = self.hyperparameters["h"]
        v = torch.sign(attr.detach())
        x2 = torch.add(x.detach(), v, alpha=h).requires_grad_(True)
        ex = self.explainer
        if ex.method in ("grad", "grad_x_input"):
            g2 = _output_grad(model(x2, **fkw), x2, target, ex.output)
            if ex.method == "grad_x_input":
                g2 = x2 * g2
        else:
            g2 = ex.attribute(model, x2, target, create_graph=True, **fkw)
        diff = (g2 - attr).flatten(1).norm(dim=1)
        if self.hyperparameters.get("normalize", "none") != "none":
            return (diff / attr.flatten(1).norm(dim=1).clamp_min(1e-12)).mean()
        return diff.mean()

    def _exact_h_loss(
        self, model: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor, fkw: dict
    ) -> tuple[torch.Tensor, dict[str, float]]:
        hp = self.hyperparameters
        d = x[0].numel()
        if d > hp["max_features"]:
            raise ValueError(
                f"exact-h materialises a {d}x{d} Hessian per sample; inputs with more than "
                f"max_features={hp['max_features']} values are refused (use est-h, or raise "
                "max_features if memory allows)"
            )
        logits = model(x, **fkw)
        ce = F.cross_entropy(logits, y)
        target = self._target(logits, y)
        hess = input_hessian(model, x, target, self.explainer.output, **fkw)
        term = hess.flatten(1).norm(dim=1).mean()
        logs = _logs(logits, y, ce=ce, hess=term)
        return ce + self._weighted(ce, [(hp["mu"], term)]), logs

    def _ssr_loss(
        self, model: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor, fkw: dict
    ) -> tuple[torch.Tensor, dict[str, float]]:
        hp = self.hyperparameters
        xg = x.detach().requires_grad_(True)
        logits = model(xg, **fkw)
        ce = F.cross_entropy(logits, y)
        term = ssr_term(logits, xg).mean()
        logs = _logs(logits, y, ce=ce, ssr=term)
        alpha = hp["alpha"]
        reg = self._weighted(ce, [(alpha * hp["beta"], term)])
        return (1 - alpha) * ce + reg, logs

    def _at_loss(
        self, model: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor, fkw: dict
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from r2et.attacks import ERAttack  # a higher-level sibling: imported when used

        hp = self.hyperparameters
        ex = self.explainer
        with torch.no_grad():
            target = self._target(model(x, **fkw), y)
        s_clean = ex.scores(model, x.detach(), target, **fkw).detach()
        k = check_k(self.k, s_clean.shape[1])
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
        logits, attr, _ = self._saliency_at(model, x_adv, target, fkw)
        ce = F.cross_entropy(logits, y)
        scores = ex.reduce_attr(attr)
        gap = ranking_gap(scores, topk_mask(s_clean, k), None, hp["normalize"]).mean()
        logs = _logs(logits, y, ce=ce, gap=gap)
        return ce + self._weighted(ce, [(hp["lam"], -gap)]), logs

    def _saliency_at(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: torch.Tensor,
        fkw: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like :meth:`_saliency` with a fixed ``target`` (the class explained at clean x)."""
        ex = self.explainer
        if ex.method in ("grad", "grad_x_input"):
            xg = x.detach().requires_grad_(True)
            logits = model(xg, **fkw)
            g = _output_grad(logits, xg, target, ex.output)
            return logits, (g if ex.method == "grad" else xg * g), target
        logits = model(x, **fkw)
        return logits, ex.attribute(model, x, target, create_graph=True, **fkw), target


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


def _logs(logits: torch.Tensor, y: torch.Tensor, **values: torch.Tensor) -> dict[str, float]:
    """The step's scalar tensors and the batch accuracy as floats, in one device transfer."""
    acc = (logits.detach().argmax(1) == y).to(logits.dtype).mean()
    floats = torch.stack([*values.values(), acc]).detach().tolist()
    return dict(zip([*values, "accuracy"], floats))


# ---------------------------------------------------------------------------- constructors
def get_method(
    name: str,
    k: int | None = None,
    explainer: Explainer | dict[str, Any] | None = None,
    groups: Any = None,
    **hyperparameters: Any,
) -> TrainingMethod:
    """The training recipe ``name`` (see :func:`list_methods`) with its hyperparameters.

    ``k`` is the top-k size of the ranking terms (required by ``at`` and the ``r2et`` family,
    checked against the number of features F as ``1 <= k <= F-1`` when the loss first sees
    data). ``explainer``: an :class:`Explainer`, its ``config()`` dict, or None for gradient
    saliency of the method's default output (see the module docstring). ``groups`` (e.g.
    ``ds.groups``) makes the ranking terms rank feature groups, each scored by the sum of its
    columns' scores (:func:`r2et.explain.group_index`); k then counts groups. Unknown
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
    recipe = _RECIPES[name]
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be an int >= 1 (and <= F-1), got {k!r}")
    if k is None and recipe.needs_k:
        raise ValueError(f"method {name!r} ranks features: pass k (an int in 1..F-1)")
    unknown = sorted(set(hyperparameters) - set(recipe.defaults))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for method {name!r}; "
            f"allowed: {sorted(recipe.defaults)}"
        )
    hp = {key: _check_hyperparameter(name, key, v) for key, v in recipe.defaults.items()}
    hp.update({key: _check_hyperparameter(name, key, v) for key, v in hyperparameters.items()})
    if "m" in hp and k is not None and hp["m"] > k:
        raise ValueError(f"m={hp['m']} must not exceed k={k}")
    if explainer is None:
        explainer = Explainer("grad", output=recipe.output)
    elif isinstance(explainer, dict):
        explainer = Explainer(**explainer)
    elif not isinstance(explainer, Explainer):
        raise ValueError(
            f"explainer must be an Explainer, its config dict or None, got {type(explainer)}"
        )
    if groups is not None:
        explainer = explainer.with_groups(groups)
    return TrainingMethod(name, k, explainer, hp)


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
