"""Model entry ``mlp``: a fully connected classifier for inputs of any shape (flattened)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from r2et._checks import check_size, check_sizes
from r2et.models.base import register_model
from r2et.models.layers import make_activation

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected classifier: ``Linear → act`` per hidden size, then ``Linear`` to logits.
    Inputs of any shape ``(N, ...)`` are flattened."""

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        beta: float = 10.0,
    ) -> None:
        super().__init__()
        width = check_size("in_features", in_features)
        n_classes = check_size("n_classes", n_classes)
        layers: list[nn.Module] = [nn.Flatten()]
        for h in check_sizes("hidden", hidden):
            layers += [nn.Linear(width, h), make_activation(activation, beta)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _build_mlp(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    f = 1
    for d in input_shape:
        f *= int(d)
    return MLP(f, n_classes, **kw)


register_model("mlp", _build_mlp)
