"""The gap on certified score bounds (:class:`CertifiedGap`, ``r2et-cert``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from r2et.methods.base import Step, Term
from r2et.methods.gaps import masked_gap, score_scale
from r2et.metrics import topk_mask


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
        gap = masked_gap(sl, su, topk_mask(scores.detach(), k), k, step.hp.get("m"))
        return (gap / score_scale(scores, step.hp["normalize"]).squeeze(1)).mean()
