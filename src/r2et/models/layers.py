"""Building blocks shared by the model entries: the activation layers (``nn.ReLU`` modules or
``nn.Softplus``, never functional, so :func:`~r2et.models.relu_to_softplus` can swap them),
the Softplus ``beta`` check and the fixed input standardisation :class:`Standardize`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from r2et._checks import check_choice, check_positive

__all__ = [
    "ACTIVATIONS",
    "MAX_SOFTPLUS_BETA",
    "Standardize",
    "check_beta",
    "make_activation",
    "make_input_norm",
]

ACTIVATIONS = ("relu", "softplus")


#: The largest Softplus ``beta`` accepted (float32 Softplus overflows long before 1e300; a
#: beta of 1e4 is already a ReLU to 4 decimals at unit scale).
MAX_SOFTPLUS_BETA = 1e6


def check_beta(beta: Any) -> None:
    """``ValueError`` unless ``beta`` is a real number with ``0 < beta <= MAX_SOFTPLUS_BETA``."""
    check_positive("beta", beta)
    if not float(beta) <= MAX_SOFTPLUS_BETA:
        raise ValueError(f"beta={beta!r} is outside (0, {MAX_SOFTPLUS_BETA:g}]")


def make_activation(name: str, beta: float) -> nn.Module:
    """A fresh ``nn.ReLU()`` (``name="relu"``) or ``nn.Softplus(beta)`` (``"softplus"``)."""
    check_choice("activation", name, ACTIVATIONS)
    if name == "softplus":
        check_beta(beta)
    return nn.ReLU() if name == "relu" else nn.Softplus(beta=beta)


class Standardize(nn.Module):
    """Fixed per-channel standardisation ``(x - mean_c) / std_c`` as the first layer of a
    model, so data, attack bounds and budgets stay in pixel units while the network sees
    standardised inputs. No batch statistics: each sample is standardised on its own. The
    constants are buffers, so checkpoints carry them.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        means, stds = [float(v) for v in mean], [float(v) for v in std]
        # checked on the Python floats: under torch.device("meta") (the guarded build of
        # load_run and count_model_parameters) the tensors below hold no values
        if len(means) != len(stds) or not means or not all(v > 0 for v in stds):
            raise ValueError(
                f"input_norm needs [mean, std] lists of one value per channel with std > 0, "
                f"got mean={list(mean)} and std={list(std)}"
            )
        m, s = torch.as_tensor(means), torch.as_tensor(stds)
        self.register_buffer("mean", m.view(-1, 1, 1))
        self.register_buffer("std", s.view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def make_input_norm(spec: Sequence[Sequence[float]] | None, channels: int) -> nn.Module:
    """``Standardize(*spec)`` (checked against ``channels``), or the identity for None."""
    if spec is None:
        return nn.Identity()
    if len(spec) != 2:
        raise ValueError(f"input_norm must be [mean, std], got {spec!r}")
    layer = Standardize(*spec)
    if layer.mean.numel() != channels:
        raise ValueError(f"input_norm has {layer.mean.numel()} channels, the input has {channels}")
    return layer
