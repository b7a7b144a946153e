"""Model zoo: small architectures for tabular, image and graph data, built from a JSON spec.

``build_model(name, input_shape, n_classes, **kw)`` returns an ``nn.Module`` whose
``r2et_spec`` attribute is a JSON-ready dict; ``build_model(**spec)`` rebuilds it, which is how
checkpoints restore models without unpickling.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from r2et._checks import check_choice, check_positive

ACTIVATIONS = ("relu", "softplus")


def _activation(name: str, beta: float) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return nn.ReLU() if name == "relu" else nn.Softplus(beta=beta)


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
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), _activation(activation, beta)]
            width = int(h)
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks (``conv3×3 → act → maxpool2``) and a two-layer head, for 28×28 or 32×32
    images with any number of channels."""

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
    ) -> None:
        super().__init__()
        c1, c2 = (int(c) for c in channels)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1),
            _activation(activation, beta),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            _activation(activation, beta),
            nn.MaxPool2d(2),
        )
        flat = c2 * (height // 4) * (width // 4)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            _activation(activation, beta),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _build_mlp(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    f = 1
    for d in input_shape:
        f *= int(d)
    return MLP(f, n_classes, **kw)


def _build_cnn(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs input_shape (C, H, W), got {tuple(input_shape)}")
    c, h, w = (int(d) for d in input_shape)
    return SmallCNN(c, h, w, n_classes, **kw)


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {"mlp": _build_mlp, "cnn": _build_cnn}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(MODEL_BUILDERS)


def build_model(name: str, input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    """Build model ``name`` for inputs of shape ``input_shape`` (without the batch dimension)
    and ``n_classes`` outputs; the JSON spec is stored as ``model.r2et_spec``."""
    check_choice("name", name, list_models())
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
    shape = [int(d) for d in input_shape]
    try:
        model = MODEL_BUILDERS[name](shape, n_classes, **kw)
    except TypeError as err:
        raise ValueError(f"bad keyword arguments for model {name!r}: {err}") from None
    model.r2et_spec = {
        "name": name,
        "input_shape": shape,
        "n_classes": n_classes,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
    }
    return model


def relu_to_softplus(model: nn.Module, beta: float = 10.0, inplace: bool = False) -> nn.Module:
    """Replace every ``nn.ReLU`` module (nested, in-place or not) by ``nn.Softplus(beta)``.

    ``softplus_β(z) = log(1 + e^{βz})/β`` → ReLU as β → ∞, so a large β keeps the function while
    giving the input-gradient curvature (Dombrowski et al., NeurIPS 2019). Returns a copy unless
    ``inplace``; parameters are copied, not shared. ReLUs applied functionally
    (``F.relu``/``torch.relu`` inside ``forward``) cannot be seen and are left unchanged.
    """
    check_positive("beta", beta)
    target = model if inplace else copy.deepcopy(model)
    for name, child in list(target.named_children()):
        if isinstance(child, nn.ReLU):
            setattr(target, name, nn.Softplus(beta=beta))
        else:
            relu_to_softplus(child, beta, inplace=True)
    return target


def has_relu(model: nn.Module) -> bool:
    """True if any submodule is an ``nn.ReLU``."""
    return any(isinstance(m, nn.ReLU) for m in model.modules())
