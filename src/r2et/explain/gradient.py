"""Gradient saliency and gradient × input: the rules local to ``x`` (one gradient at ``x``)."""

from __future__ import annotations

import torch

from r2et.explain.base import AttributionRule, register_explainer


@register_explainer
class Gradient(AttributionRule):
    """Gradient saliency (Simonyan et al., 2014): ``a(x) = ∂f_c(x)/∂x``."""

    name = "grad"
    local = True

    def from_gradient(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g


@register_explainer
class GradientXInput(AttributionRule):
    """Gradient × input (Shrikumar et al., 2016): ``a(x) = x ⊙ ∂f_c(x)/∂x``."""

    name = "grad_x_input"
    local = True

    def from_gradient(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * g
