"""Hessian terms: the finite-difference Hessian norm along the gradient sign
(:class:`FiniteDifferenceHessian`, Est-H) and the exact per-sample input Hessian
(:class:`ExactHessian`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from r2et.methods.base import AffineTerm, Step, Term
from r2et.methods.saliency import input_hessian


@dataclass(frozen=True)
class FiniteDifferenceHessian(AffineTerm):
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
