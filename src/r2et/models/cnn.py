"""Model entries ``cnn`` (:class:`SmallCNN`, two conv blocks for 28×28 or 32×32 images) and
``resnet9`` (:class:`ResNet9`, CIFAR-sized ``(C, 32, 32)``; GroupNorm by default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from r2et._checks import check_choice, check_size, check_sizes
from r2et.models.base import register_model
from r2et.models.layers import make_activation, make_input_norm

__all__ = ["NORMS", "POOLS", "ResNet9", "SmallCNN"]


POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class SmallCNN(nn.Module):
    """Two conv blocks (``conv3×3 → act → pool2``) and a two-layer head, for 28×28 or 32×32
    images with any number of channels; ``input_norm=[mean, std]`` (one value per channel)
    puts a :class:`Standardize` layer first.

    ``pool="max"`` (the default) or ``"avg"``. The average pool is the one to train when the
    model's saliency will be *certified* (:func:`r2et.certify.certified_radius`): on images
    with a constant background (MNIST's zeros) many 2×2 max-pool windows hold exact ties, a
    perturbation of 1e-6 re-routes their gradient, and the exact certified radius of the
    gradient's top-k is 0; an average pool has no argmax to re-route (``docs/certify.md``).
    """

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        n_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        activation: str = "relu",
        beta: float = 10.0,
        input_norm: Sequence[Sequence[float]] | None = None,
        pool: str = "max",
    ) -> None:
        super().__init__()
        check_choice("pool", pool, tuple(POOLS))
        in_channels = check_size("in_channels", in_channels)
        for key, side in (("height", height), ("width", width)):
            if check_size(key, side) < 4:
                raise ValueError(
                    f"cnn needs images of at least 4x4 pixels (two 2x2 pools), got {key}={side}"
                )
        c1, c2 = check_sizes("channels", channels, length=2)
        hidden = check_size("hidden", hidden)
        n_classes = check_size("n_classes", n_classes)
        self.features = nn.Sequential(
            make_input_norm(input_norm, in_channels),
            nn.Conv2d(in_channels, c1, 3, padding=1),
            make_activation(activation, beta),
            POOLS[pool](2),
            nn.Conv2d(c1, c2, 3, padding=1),
            make_activation(activation, beta),
            POOLS[pool](2),
        )
        flat = c2 * (height // 4) * (width // 4)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            make_activation(activation, beta),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


NORMS = ("group", "batch", "none")


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    return nn.Identity()


class _ConvBlock(nn.Sequential):
    """``conv3×3 → norm → act`` (→ ``maxpool2`` when ``pool``)."""

    def __init__(
        self, c_in: int, c_out: int, norm: str, groups: int, act: nn.Module, pool: bool
    ) -> None:
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none")]
        layers += [_norm(norm, c_out, groups), act]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class _Residual(nn.Module):
    """``x + f(x)`` for two conv blocks ``f`` that keep the shape."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """ResNet-9 (the DAWNBench CIFAR-10 network of D. Page, 2018) for 32×32 images:

    ``prep(w) → [conv(2w) + pool, res(2w)] → conv(4w) + pool → [conv(8w) + pool, res(8w)]
    → global max-pool → Linear``, each conv ``3×3 → norm → act``.

    ``norm="group"`` (default, GroupNorm with ``groups`` groups) keeps samples independent, so
    per-sample input gradients are exact in train and eval mode alike; ``norm="batch"``
    (BatchNorm) mixes samples through batch statistics in train mode, so per-sample gradients
    are exact only in eval mode; ``norm="none"`` uses biased convs without normalisation.
    ``input_norm=[mean, std]`` puts a fixed per-channel :class:`Standardize` layer first (the
    official code standardises its inputs; here it lives in the model so attacks work in
    pixel units). Activations are ``nn.ReLU`` modules (or Softplus), so
    :func:`relu_to_softplus` applies.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: int = 64,
        norm: str = "group",
        groups: int = 8,
        activation: str = "relu",
        beta: float = 10.0,
        input_norm: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        check_choice("norm", norm, NORMS)
        w = check_size("width", width)
        in_channels = check_size("in_channels", in_channels)
        groups = check_size("groups", groups)
        n_classes = check_size("n_classes", n_classes)

        def block(c_in: int, c_out: int, pool: bool = False) -> nn.Module:
            return _ConvBlock(c_in, c_out, norm, groups, make_activation(activation, beta), pool)

        self.features = nn.Sequential(
            make_input_norm(input_norm, in_channels),
            block(in_channels, w),
            block(w, 2 * w, pool=True),
            _Residual(nn.Sequential(block(2 * w, 2 * w), block(2 * w, 2 * w))),
            block(2 * w, 4 * w, pool=True),
            block(4 * w, 8 * w, pool=True),
            _Residual(nn.Sequential(block(8 * w, 8 * w), block(8 * w, 8 * w))),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8 * w, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _build_cnn(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs input_shape (C, H, W), got {tuple(input_shape)}")
    c, h, w = (int(d) for d in input_shape)
    return SmallCNN(c, h, w, n_classes, **kw)


def _build_resnet9(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"resnet9 needs input_shape (C, H, W), got {tuple(input_shape)}")
    if min(int(d) for d in input_shape[1:]) < 8:
        raise ValueError(
            f"resnet9 needs images of at least 8x8 pixels (three 2x2 pools), got input_shape "
            f"{tuple(input_shape)}"
        )
    return ResNet9(int(input_shape[0]), n_classes, **kw)


register_model("cnn", _build_cnn)
register_model("resnet9", _build_resnet9)
