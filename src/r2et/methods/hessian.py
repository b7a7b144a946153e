"""Hessian terms: the finite-difference Hessian norm along the gradient sign
(:class:`FiniteDifferenceHessian`, Est-H) and the exact per-sample input Hessian
(:class:`ExactHessian`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from r2et._checks import check_choice
from r2et.explain import Explainer
from r2et.methods.base import AffineTerm, Step, Term
from r2et.methods.saliency import graph_attribution, input_hessian


@dataclass(frozen=True)
class FiniteDifferenceHessian(AffineTerm):
    """``R = mean_n ‖(q(x + h v) − q(x)) / h‖₂`` (log ``hess``, weight ``mu``): a
    finite-difference input-Hessian norm with an l_inf step ``h`` along a unit direction ``v``.

    The paper's form (Est-H; the defaults ``direction="sign"``, ``on="attribution"``):
    ``v = sign(a(x))`` (detached) and ``q = a`` the step's attribution, so ``q(x)`` is the
    step's saliency and ``q(x + h v)`` costs one more gradient (no logits).

    ``direction="data"``: ``v_n = (x_{n+1} − x_n) / ‖x_{n+1} − x_n‖_∞``, the direction from
    ``x_n`` towards the next input of the batch (:func:`data_direction`; batches are shuffled,
    so the partner is another random input every epoch; a batch of one, or a row equal to its
    neighbour, falls back to ``sign``): the probe stays in the span of the data (on one-hot
    columns it moves weight from the category a person has to another person's) instead of
    raising every absent category at once.
    ``on="gradient"``: ``q = ∂f_c/∂x``, the curvature of the model itself, whatever the
    attribution rule (with ``grad`` it is the step's saliency; with another rule one more
    gradient at ``x``). With ``on="attribution"`` and an attribution ``x ⊙ g``, the term also
    penalises ``h v ⊙ g``, i.e. the attribution's dependence on the input itself.

    With a ``normalize`` other than ``"none"`` (read when the row has it) each difference is
    divided by ``‖q(x)‖₂`` (scale-free, like the gap). ``t`` is the mean difference norm,
    ``a = 1/h``."""

    direction: str = "sign"
    on: str = "attribution"
    name: ClassVar[str] = "hess"
    weight_key: ClassVar[str | None] = "mu"
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_choice("direction", self.direction, ("sign", "data"))
        check_choice("on", self.on, ("attribution", "gradient"))

    def defaults(self) -> dict[str, Any]:
        return {"mu": 0.1, "h": 0.3}

    def optional(self) -> tuple[str, ...]:
        return ("normalize",)

    def affine(self, step: Step) -> tuple[torch.Tensor, float, float]:
        h, attr = step.hp["h"], step.attribution
        x = step.x.detach()
        if self.on == "attribution" or step.explainer.method == "grad":
            q0, q_at = attr, step.attribution_at  # the step's own saliency is the probed one
        else:
            gradient = _gradient_of(step.explainer)

            def q_at(point: torch.Tensor) -> torch.Tensor:
                return graph_attribution(gradient, step.model, point, step.target, step.fkw, False)[
                    2
                ]

            q0 = q_at(x)
        v = torch.sign(attr.detach())
        if self.direction == "data":
            v = data_direction(x, v)
        diff = (q_at(torch.add(x, v, alpha=h)) - q0).flatten(1).norm(dim=1)
        if step.hp.get("normalize", "none") != "none":
            diff = diff / q0.flatten(1).norm(dim=1).clamp_min(1e-12)
        return diff.mean(), 1.0 / h, 0.0


def data_direction(x: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """``v_n = (x_{n+1} − x_n) / ‖x_{n+1} − x_n‖_∞`` (cyclic: the last input points at the
    first), the l_inf-unit direction from each input towards the next one of its batch;
    ``fallback`` (shaped like ``x``) for a batch of one and for rows equal to their neighbour.
    Deterministic given the batch: :func:`r2et.fit` shuffles the batches every epoch, so the
    pairs change from epoch to epoch."""
    if x.shape[0] < 2:
        return fallback
    d = (x.roll(-1, 0) - x).flatten(1)
    scale = d.abs().amax(1, keepdim=True)
    v = torch.where(scale > 0, d / scale.clamp_min(torch.finfo(d.dtype).tiny), fallback.flatten(1))
    return v.view_as(x)


def _gradient_of(ex: Any) -> Any:
    """The plain gradient explainer with ``ex``'s output (``∂f_c/∂x``)."""
    return Explainer("grad", output=ex.output, fast=ex.fast)


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
