"""The saliency helpers of the training terms: the attribution with a graph to the parameters
(:func:`graph_attribution`), the exact per-sample input Hessian (:func:`input_hessian`), SSR's
top eigenvalue (:func:`ssr_term`), and the warning about BatchNorm layers that couple the
samples of a batch (:func:`batch_statistics_layers`, :func:`warn_batch_statistics`)."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from r2et._kwargs import split_kwargs
from r2et._second_order import second_order
from r2et.explain import select_output

Target = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def graph_attribution(
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
