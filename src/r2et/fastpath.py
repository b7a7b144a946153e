"""Gradient saliency of piecewise-linear networks as an explicit forward computation.

For a network ``f(x) = W_L σ(W_{L−1} ⋯ σ(W_1 x + b_1) ⋯ + b_{L−1}) + b_L`` made of affine
layers (Linear, Conv2d, Standardize, average pooling, flatten) and piecewise-linear ones (ReLU,
LeakyReLU, max pooling), the gradient of the explained output is

    ``g(x) = ∂f_c/∂x = W_1ᵀ D_1 W_2ᵀ D_2 ⋯ W_{L−1}ᵀ D_{L−1} W_Lᵀ s``,

where ``D_l`` is the activation pattern of layer l at x (``diag(z_l > 0)`` for ReLU,
``diag(1 or slope)`` for LeakyReLU, the arg-max selection of a max-pool window), ``Wᵀ`` is the
transpose of an affine layer's linear part (``W_lᵀ u = u W_l`` for Linear, the transposed
convolution for Conv2d, ``u / std`` for Standardize) and ``s`` is the seed: ``e_c`` for the
logit (so ``W_Lᵀ e_c`` is the row ``W_L[c]``), ``p_c (e_c − p)`` for the softmax probability,
``p − e_c`` for the cross-entropy (``p = softmax(f(x))``).

Autograd gets ``g`` with ``create_graph=True`` by back-propagating through the forward graph,
and the training loss then back-propagates through that backward graph: a double backward.
The ReLU and max-pool backward kernels are linear in the incoming gradient, and their
derivative w.r.t. the forward activation is zero, yet autograd pushes those zeros back through
every layer of the forward pass (the whole forward graph at ``x + h·v`` in R2ET's
finite-difference term, whose logits are used for nothing else). Here the chain above is
written as an ordinary forward computation, with the patterns ``D_l`` and the pool indices
detached (constants of the graph) and the same backward kernels torch uses
(``threshold_backward``, ``leaky_relu_backward``, ``max_pool2d_with_indices_backward``,
``avg_pool2d_backward``, the transposed convolution), so the value, the gradient w.r.t. the
parameters and the gradient w.r.t. ``x`` (zero through the patterns, which is the exact second
derivative of a piecewise-linear network wherever it is differentiable; through the seed for
``"prob"``/``"loss"``) equal autograd's, and the training loss needs one backward.

:func:`saliency` returns ``(logits, g)`` for a supported model and None for any other (the
caller falls back to autograd). Supported, detected structurally with exact types (a subclass
may override ``forward``): ``nn.Sequential``, r2et's :class:`~r2et.models.MLP` and
:class:`~r2et.models.SmallCNN`, made of ``nn.Linear``, ``nn.Conv2d`` (zero padding, numeric
``padding``), ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.MaxPool2d``, ``nn.AvgPool2d``,
``nn.Flatten``, :class:`~r2et.models.Standardize`, ``nn.Identity`` and ``nn.Dropout`` (in eval
mode or with ``p = 0``), without hooks and without forward keywords. Softplus models (method
``sp``, the attacks' surrogates), GroupNorm or residual networks (``resnet9``), graph networks
and anything else fall back.

:func:`set_enabled` / :func:`enabled` switch the fast path off process-wide (benchmarks and
tests compare both); ``Explainer(..., fast=False)`` switches it off for one explainer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from r2et.models import MLP, SmallCNN, Standardize

__all__ = ["enabled", "is_enabled", "layers_of", "saliency", "set_enabled", "supports"]

OUTPUTS = ("logit", "prob", "loss")

_ENABLED = True

_Backward = Callable[[torch.Tensor], torch.Tensor]
Target = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def set_enabled(flag: bool) -> None:
    """Switch the fast path on or off for the whole process (default: on)."""
    global _ENABLED
    _ENABLED = bool(flag)


def is_enabled() -> bool:
    """Whether the fast path is switched on (:func:`set_enabled`)."""
    return _ENABLED


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """Switch the fast path on or off inside the block, restoring the previous state after."""
    before = _ENABLED
    set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(before)


# ---------------------------------------------------------------------------- structure
_SIMPLE = (nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Flatten, nn.Identity, Standardize)


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
    )


def _global_hooks() -> bool:
    mod = nn.modules.module
    names = (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    )
    return any(bool(getattr(mod, name, None)) for name in names)


def _supported_leaf(m: nn.Module) -> bool:
    t = type(m)
    if t in _SIMPLE:
        return True
    if t is nn.Conv2d:
        return m.padding_mode == "zeros" and not isinstance(m.padding, str)
    if t is nn.MaxPool2d:
        return not m.return_indices
    if t is nn.AvgPool2d:
        return True
    if t is nn.Dropout:
        return not m.training or m.p == 0
    return False


def _flatten_layers(module: nn.Module, out: list[nn.Module]) -> bool:
    """Append the layers of ``module`` in the order its ``forward`` applies them; False if
    some part is not supported."""
    if _has_hooks(module):
        return False
    t = type(module)
    if t is nn.Sequential:
        return all(_flatten_layers(child, out) for child in module)
    if t is MLP:
        return _flatten_layers(module.net, out)
    if t is SmallCNN:
        return _flatten_layers(module.features, out) and _flatten_layers(module.head, out)
    if _supported_leaf(module):
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters()):
            return False
        out.append(module)
        return True
    return False


def layers_of(model: Any) -> list[nn.Module] | None:
    """The layers of a supported piecewise-linear ``model`` in forward order, else None."""
    if not isinstance(model, nn.Module) or _global_hooks():
        return None
    out: list[nn.Module] = []
    return out if _flatten_layers(model, out) and out else None


def supports(model: Any) -> bool:
    """Whether :func:`saliency` computes ``model``'s saliency explicitly (else: autograd)."""
    return layers_of(model) is not None


# ---------------------------------------------------------------------------- one layer
def _pair(v: int | tuple[int, ...] | list[int]) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(u) for u in v]


def _conv(m: nn.Conv2d, h: torch.Tensor) -> tuple[torch.Tensor, _Backward]:
    out = F.conv2d(h, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
    size, kernel = h.shape[-2:], m.weight.shape[-2:]
    stride, pad, dil = _pair(m.stride), _pair(m.padding), _pair(m.dilation)
    # the rows/columns the strided convolution never reached: transpose-conv output padding
    extra = [
        size[i] - ((out.shape[-2 + i] - 1) * stride[i] - 2 * pad[i] + dil[i] * (kernel[i] - 1) + 1)
        for i in range(2)
    ]

    def back(u: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(u, m.weight, None, stride, pad, extra, m.groups, dil)

    return out, back


def _max_pool(m: nn.MaxPool2d, h: torch.Tensor) -> tuple[torch.Tensor, _Backward]:
    kernel = _pair(m.kernel_size)
    stride = kernel if m.stride is None else _pair(m.stride)
    pad, dil = _pair(m.padding), _pair(m.dilation)
    out, idx = F.max_pool2d(h, kernel, stride, pad, dil, m.ceil_mode, return_indices=True)
    ref = h.detach()

    def back(u: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.max_pool2d_with_indices_backward(
            u, ref, kernel, stride, pad, dil, m.ceil_mode, idx
        )

    return out, back


def _avg_pool(m: nn.AvgPool2d, h: torch.Tensor) -> tuple[torch.Tensor, _Backward]:
    kernel = _pair(m.kernel_size)
    stride = kernel if m.stride is None else _pair(m.stride)
    pad = _pair(m.padding)
    args = (kernel, stride, pad, m.ceil_mode, m.count_include_pad, m.divisor_override)
    out = F.avg_pool2d(h, *args)
    ref = h.detach()

    def back(u: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.avg_pool2d_backward(u, ref, *args)

    return out, back


def _step(m: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, _Backward | None]:
    """One layer's output and its transposed Jacobian ``u ↦ Jᵀ u`` at ``h`` (with its
    activation pattern detached); None for the identity."""
    t = type(m)
    if t is nn.Linear:
        w = m.weight
        return F.linear(h, w, m.bias), lambda u: u @ w
    if t is nn.ReLU:
        out = torch.relu(h)
        ref = out.detach()
        return out, lambda u: torch.ops.aten.threshold_backward(u, ref, 0)
    if t is nn.LeakyReLU:
        slope = float(m.negative_slope)
        ref = h.detach()
        back = lambda u: torch.ops.aten.leaky_relu_backward(u, ref, slope, False)  # noqa: E731
        return F.leaky_relu(h, slope), back
    if t is nn.Conv2d:
        return _conv(m, h)
    if t is nn.MaxPool2d:
        return _max_pool(m, h)
    if t is nn.AvgPool2d:
        return _avg_pool(m, h)
    if t is Standardize:
        std = m.std
        return (h - m.mean) / std, lambda u: u / std
    if t is nn.Flatten:
        shape = h.shape
        return m(h), lambda u: u.reshape(shape)
    return h, None  # Identity, Dropout in eval mode (or p = 0)


# ---------------------------------------------------------------------------- the saliency
class _ZeroInputGradient(torch.autograd.Function):
    """``g`` unchanged, with a zero gradient to ``x``: the explicit saliency does not depend
    on ``x`` except through the (constant) activation pattern, and autograd's double backward
    gives exactly zero there; this keeps ``g`` connected to ``x`` as autograd's is, so that
    ``torch.autograd.grad(L(g), x)`` returns zeros rather than failing."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.x_shape, ctx.x_dtype, ctx.x_device = x.shape, x.dtype, x.device
        return g.view_as(g)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, torch.zeros(ctx.x_shape, dtype=ctx.x_dtype, device=ctx.x_device)


def _seed(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """``∂(Σ_n f_{c_n})/∂logits`` (N, C): ``e_c`` (logit), ``p_c (e_c − p)`` (prob),
    ``p − e_c`` (cross-entropy), differentiable through the logits."""
    onehot = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
    if output == "logit":
        return onehot
    p = logits.softmax(1)
    if output == "prob":
        return p.gather(1, target[:, None]) * (onehot - p)
    return p - onehot


def saliency(
    model: Any,
    x: torch.Tensor,
    target: Target,
    output: str = "logit",
    forward_kwargs: dict[str, Any] | None = None,
    need_logits: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor] | None:
    """``(logits, g)`` with ``g = ∂f_c/∂x`` computed explicitly, or None when ``model`` is not
    supported, forward keywords are given, ``output`` is unknown or the fast path is switched
    off (:func:`set_enabled`): the caller then uses autograd.

    ``g = W_1ᵀ D_1 W_2ᵀ ⋯ D_{L−1} W_Lᵀ s`` (module docstring) is differentiable w.r.t. the
    parameters exactly as autograd's ``create_graph=True`` gradient is, and w.r.t. ``x`` only
    through the seed ``s`` (for ``"prob"``/``"loss"``); the activation patterns and pool indices
    are constants. ``target`` is an ``(N,)`` long tensor of classes or a callable mapping the
    detached logits to one (e.g. their argmax). ``need_logits=False`` skips the graph of the
    forward pass (it runs without autograd, so the returned logits are detached; the last
    affine layer is then only evaluated when the seed needs the logits).
    """
    if not _ENABLED or forward_kwargs or output not in OUTPUTS:
        return None
    layers = layers_of(model)
    if layers is None:
        return None
    # with the logit as output and a Linear last layer, W_Lᵀ e_c is the row W_L[c]
    row_seed = output == "logit" and type(layers[-1]) is nn.Linear
    body = layers[:-1] if row_seed else layers
    graph = need_logits or not row_seed  # the prob/loss seed is differentiated via the logits
    backs: list[_Backward] = []
    h = x
    with contextlib.nullcontext() if graph else torch.no_grad():
        for m in body:
            h, back = _step(m, h)
            if back is not None:
                backs.append(back)
        logits = None
        if not row_seed:
            logits = h
        elif need_logits or callable(target):
            last = layers[-1]
            logits = F.linear(h, last.weight, last.bias)
    if callable(target):
        target = target(logits.detach())
    u = layers[-1].weight[target] if row_seed else _seed(logits, target, output)
    for back in reversed(backs):
        u = back(u)
    if x.requires_grad:
        u = _ZeroInputGradient.apply(u, x)
    return (logits if need_logits else None), u
