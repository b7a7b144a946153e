"""Integrated gradients (Sundararajan et al., 2017) along a straight path from a baseline."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from r2et.explain.base import (
    AttributionRule,
    GradientFn,
    check_internal_batch_size,
    register_explainer,
    weighted_sum,
)
from r2et.explain.units import quadrature


@register_explainer
class IntegratedGradients(AttributionRule):
    """Integrated Gradients (Sundararajan et al., 2017):
    ``a(x) = (x − b) ⊙ Σ_m w_m ∂f_c(b + α_m (x − b))/∂x`` with the nodes and weights of
    :func:`quadrature` (``n_steps``, ``rule``) and baseline ``b`` (``baseline``: a number or a
    tensor broadcastable to x); ``internal_batch_size`` rows per forward pass."""

    name = "ig"
    defaults: ClassVar[dict[str, Any]] = {
        "n_steps": 32, "baseline": 0.0, "rule": "gausslegendre", "internal_batch_size": None,
    }  # fmt: skip
    fixes_target = True

    def validate(self) -> None:
        quadrature(self.kwargs["n_steps"], self.kwargs["rule"])  # validates both
        _check_ig_baseline(self.kwargs["baseline"])
        check_internal_batch_size(self.kwargs["internal_batch_size"])

    def attribute(self, grad: GradientFn, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
        alphas, weights = quadrature(self.kwargs["n_steps"], self.kwargs["rule"])
        base = torch.as_tensor(self.kwargs["baseline"], dtype=x.dtype, device=x.device)
        try:
            ok = torch.broadcast_shapes(base.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"ig baseline of shape {tuple(base.shape)} does not broadcast to the inputs' "
                f"shape {tuple(x.shape)}; pass a scalar or a tensor of shape {tuple(x.shape[1:])}"
            )
        base = base.expand_as(x)
        delta = x - base
        a = alphas.to(dtype=x.dtype, device=x.device)

        def points(lo: int, hi: int) -> torch.Tensor:
            al = a[lo:hi].view(-1, *([1] * x.dim()))
            return (base.unsqueeze(0) + al * delta.unsqueeze(0)).reshape(-1, *x.shape[1:])

        ibs = self.kwargs["internal_batch_size"]
        return delta * weighted_sum(grad, points, weights, x, ibs, create_graph)


def _check_ig_baseline(baseline: Any) -> None:
    """An IG baseline is a finite number or a finite floating tensor."""
    if isinstance(baseline, torch.Tensor):
        if not baseline.is_floating_point() and baseline.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"ig baseline must be a number or a tensor, got dtype {baseline.dtype}"
            )
        if baseline.is_floating_point() and not bool(torch.isfinite(baseline).all()):
            raise ValueError("ig baseline contains NaN or Inf values")
        return
    ok = isinstance(baseline, (int, float)) and not isinstance(baseline, bool)
    if not ok or not np.isfinite(baseline):
        raise ValueError(f"ig baseline must be a finite number or a tensor, got {baseline!r}")
