"""Pieces that act through one hook, not a loss term: a factor of the cross-entropy
(:class:`CEWeight`), the optimiser's weight decay (:class:`WeightDecay`) and the Softplus model
transform (:class:`SoftplusActivations`)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from r2et.methods.base import Term
from r2et.models import has_relu, relu_to_softplus


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
