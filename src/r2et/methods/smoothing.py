"""SSR's smoothed-geometry term (:class:`SmoothedGeometry`, Wang et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from r2et.methods.base import Step, Term
from r2et.methods.saliency import ssr_term


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
