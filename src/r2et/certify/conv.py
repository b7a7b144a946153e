"""Interval bounds on the logit gradient of small sequential CNNs (issue 25): networks of
``nn.Conv2d``, ``nn.ReLU``/``nn.Softplus``, ``nn.MaxPool2d``, ``nn.AvgPool2d``, ``nn.Flatten``,
``nn.Linear`` and the fixed affine :class:`~r2et.models.layers.Standardize`, ending in a
``Linear`` (the ``cnn`` model entry, :class:`~r2et.models.cnn.SmallCNN`, is one).

Every layer is a map of ``h`` ``(N, C, H, W)`` (or ``(N, F)`` after ``Flatten``); the box
``[lo, hi]`` of its input is pushed forward (IBP, Gowal et al. 2018) and the logit gradient's
row vector ``v ∈ [v_l, v_u]`` pulled back (the transposed map, as in Wicker et al., ICLR 2023):

* **Conv2d / Linear** ``h ↦ W ⋆ h + b``: forward in centre-radius form, ``c' = W ⋆ c + b``,
  ``r' = |W| ⋆ r`` (no bias); backward ``c_v ↦ Wᵀ ⋆ c_v``, ``r_v ↦ |W|ᵀ ⋆ r_v`` (the
  transposed convolution, as the vector-Jacobian product of the bias-free conv).
* **Standardize** ``h ↦ (h − μ)/σ`` (σ > 0, monotone): ``[(lo − μ)/σ, (hi − μ)/σ]``;
  backward ``v ↦ v/σ``.
* **AvgPool2d** (a linear map with weights >= 0): ``[A lo, A hi]``; backward ``[Aᵀ v_l, Aᵀ v_u]``.
* **ReLU / Softplus**: as for MLPs (:mod:`r2et.certify.intervals`: masks fixed on, fixed off
  or unstable ``[min(0, v_l), max(0, v_u)]``; Softplus derivative intervals).
* **MaxPool2d** (monotone): ``[maxpool(lo), maxpool(hi)]``. Its gradient goes to each window's
  argmax. Under the box, entry ``j`` of a window ``w`` can be the argmax only if
  ``hi_j >= max_{i∈w} lo_i`` (minus the float32 safety margin): the *candidates* of ``w``.
  With one candidate the routing is exact, ``g_in[j] += v_w``; with several, each candidate
  receives ``[min(0, v_l,w), max(0, v_u,w)]`` (it gets ``v_w`` or 0), non-candidates 0. The
  contributions of all windows holding an entry are summed, so overlapping windows
  (stride < kernel) stay sound.

Then the logit margins ``z_c − z_j`` over the last hidden box (:func:`logit_margins`) and the
scores' bounds and top-k test of :mod:`r2et.certify.deterministic`, which uses these bounds
for CNNs. There are no activation patterns here (``bound="patterns"`` falls back to these
intervals). All in float64, batched over inputs, on the inputs' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from r2et.certify.intervals import (
    ActState,
    activation_backward,
    logit_margins,
    relu_state,
    softplus_box,
)
from r2et.models.layers import Standardize

__all__ = [
    "CNN_LAYERS",
    "ConvStage",
    "conv_gradient_bounds",
    "conv_layers",
    "conv_stages",
    "largest_activation",
    "maxpool_candidates",
]

#: Layers that make a network a CNN for the deterministic certificate (an MLP has none).
CNN_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, Standardize)
_SUPPORTED = (*CNN_LAYERS, nn.Linear, nn.ReLU, nn.Softplus, nn.Flatten)
_SKIPPED = (nn.Identity, nn.Dropout)
_NAMES = "Conv2d/ReLU/Softplus/MaxPool2d/AvgPool2d/Flatten/Linear/Standardize"


def _refuse(why: str) -> TypeError:
    return TypeError(
        f"the deterministic certificate supports MLPs and sequential CNNs ({_NAMES}, ending in "
        f"a Linear layer); {why}; use method='smoothed'"
    )


def conv_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[nn.Module]:
    """The layers, in order, of a sequential CNN built from ``Conv2d`` (zero padding),
    ``ReLU``/``Softplus``, ``MaxPool2d`` (``ceil_mode=False``), ``AvgPool2d``, ``Flatten``,
    ``Linear`` and :class:`~r2et.models.layers.Standardize`, ending in a ``Linear``
    (``Identity`` and ``Dropout``, identities in eval mode, are skipped). With ``x``, checks
    that composing the layers reproduces ``model(x)``. Raises ``TypeError`` otherwise."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"the deterministic certificate needs an nn.Module, got {type(model)}")
    seq: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, Standardize):
            seq.append(m)
            continue
        if any(True for _ in m.children()) or isinstance(m, _SKIPPED):
            continue
        if not isinstance(m, _SUPPORTED):
            raise _refuse(f"found {type(m).__name__}")
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise _refuse(f"found Conv2d with padding_mode={m.padding_mode!r}")
        if isinstance(m, nn.MaxPool2d) and (m.ceil_mode or m.return_indices):
            raise _refuse("found MaxPool2d with ceil_mode or return_indices")
        seq.append(m)
    if not seq or not isinstance(seq[-1], nn.Linear):
        raise _refuse("the last layer is not a Linear")
    if x is not None:
        h = x
        try:
            for m in seq:
                h = m(h)
            out = model(x)
        except RuntimeError as err:
            raise ValueError(
                f"x of shape {tuple(x.shape)} does not fit the network: {err}"
            ) from None
        if out.shape != h.shape or not torch.allclose(out, h, rtol=1e-4, atol=1e-5):
            raise TypeError(
                "the model's forward is not the composition of its layers; use method='smoothed'"
            )
        if h.dim() != 2:
            raise _refuse("the logits are not (N, classes)")
    return seq


def largest_activation(layers: list[nn.Module], x: torch.Tensor) -> int:
    """The largest number of entries per input of any layer's input or output (from a forward
    of ``x[:1]``): what the bounds hold per row, for sizing chunks of rows."""
    h = x[:1]
    most = h.numel()
    for m in layers:
        h = m(h)
        most = max(most, h.numel())
    return int(most)


@dataclass
class ConvStage:
    """One layer in float64: ``kind`` (``"conv"``, ``"linear"``, ``"standardize"``,
    ``"relu"``, ``"softplus"``, ``"maxpool"``, ``"avgpool"``, ``"flatten"``), the module, and
    ``w``, ``b`` (weight and bias, or Standardize's mean and std)."""

    kind: str
    module: nn.Module
    w: torch.Tensor | None = None
    b: torch.Tensor | None = None


def conv_stages(layers: list[nn.Module], device: torch.device) -> list[ConvStage]:
    """:func:`conv_layers`'s layers as :class:`ConvStage` s with float64 parameters on
    ``device`` (a missing bias is 0)."""

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=device, dtype=torch.float64)

    out = []
    for m in layers:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = f64(m.weight)
            b = torch.zeros(w.shape[0], dtype=w.dtype, device=device) if m.bias is None else m.bias
            out.append(ConvStage("conv" if isinstance(m, nn.Conv2d) else "linear", m, w, f64(b)))
        elif isinstance(m, Standardize):
            out.append(ConvStage("standardize", m, f64(m.mean), f64(m.std)))
        else:
            kinds = {nn.ReLU: "relu", nn.Softplus: "softplus", nn.MaxPool2d: "maxpool",
                     nn.AvgPool2d: "avgpool", nn.Flatten: "flatten"}  # fmt: skip
            out.append(ConvStage(next(v for t, v in kinds.items() if isinstance(m, t)), m))
    return out


def _conv(st: ConvStage, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None):
    m = st.module
    if st.kind == "linear":
        return F.linear(h, w, b)
    return F.conv2d(h, w, b, m.stride, m.padding, m.dilation, m.groups)


def _transpose(fn: Any, shape: torch.Size, v: torch.Tensor) -> torch.Tensor:
    """``Aᵀ v`` for the linear map ``fn`` (``A``) of inputs of ``shape``: its vector-Jacobian
    product (for a convolution, the transposed convolution)."""
    zero = torch.zeros(shape, dtype=v.dtype, device=v.device)
    return torch.func.vjp(fn, zero)[1](v)[0]


def _conv_transpose(
    st: ConvStage, shape: torch.Size, v: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """``Wᵀ ⋆ v``: the transposed map of the bias-free conv (or linear) layer ``st`` with
    weight ``w``, back to inputs of ``shape``."""
    m = st.module
    if st.kind == "linear":
        return v @ w
    if isinstance(m.padding, str):  # "same"/"valid": the vector-Jacobian product
        return _transpose(lambda z: _conv(st, z, w, None), shape, v)
    return torch.nn.grad.conv2d_input(shape, w, v, m.stride, m.padding, m.dilation, m.groups)


def _geometry(m: nn.MaxPool2d) -> tuple[tuple[int, int], ...]:
    return _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)


def _windows(t: torch.Tensor, geo: tuple[tuple[int, int], ...], fill: float) -> torch.Tensor:
    """The pooling windows of ``t`` ``(N, C, H, W)`` as ``(N, C, K, L)`` (K entries per
    window, L windows in the pool's output order), padding filled with ``fill``."""
    k, s, p, d = geo
    n, c = t.shape[:2]
    t = F.pad(t, (p[1], p[1], p[0], p[0]), value=fill)
    u = F.unfold(t.reshape(n * c, 1, *t.shape[2:]), k, dilation=d, stride=s)
    return u.view(n, c, *u.shape[1:])


def _unwindows(
    u: torch.Tensor, geo: tuple[tuple[int, int], ...], size: tuple[int, int]
) -> torch.Tensor:
    """The adjoint of :func:`_windows`: ``(N, C, K, L)`` back to ``(N, C, H, W)``, the entries
    of overlapping windows summed, padding dropped."""
    k, s, p, d = geo
    n, c, kk, ll = u.shape
    full = (size[0] + 2 * p[0], size[1] + 2 * p[1])
    t = F.fold(u.reshape(n * c, kk, ll), full, k, dilation=d, stride=s)
    return t[:, 0, p[0] : p[0] + size[0], p[1] : p[1] + size[1]].reshape(n, c, *size)


def maxpool_candidates(
    lo_w: torch.Tensor, hi_w: torch.Tensor, eps_w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(candidate, unique)`` of max-pool windows ``(N, C, K, L)`` whose entries lie in
    ``[lo_w, hi_w]``: entry ``j`` can be its window's argmax somewhere in the box only if
    ``hi_j >= max_i lo_i − eps`` (``eps`` ``(N, C, 1, L)``: the float32 safety margin);
    ``unique`` ``(N, C, 1, L)``: the window has exactly one candidate (then it is the argmax
    everywhere in the box, and the routing of the gradient is exact)."""
    cand = hi_w >= lo_w.amax(2, keepdim=True) - eps_w
    return cand, cand.sum(2, keepdim=True) == 1


def conv_gradient_bounds(
    stages: list[ConvStage],
    low: torch.Tensor,
    high: torch.Tensor,
    target: torch.Tensor,
    slack: float = 0.0,
    trace: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interval bounds over the box ``[low, high]`` (``(N, C, H, W)``, the network's input
    shape) of a sequential CNN (:func:`conv_stages`): ``(g_l, g_u, margin_l)`` with
    ``g_l <= ∂z_c/∂x <= g_u`` (shape of ``low``) for the target class ``c`` ``(N,)`` at every
    point of the box (ReLU'(0) = 0 and max-pool ties routed anywhere are both covered), and
    ``margin_l`` ``(N, C)`` a lower bound of ``z_c − z_j`` (``+inf`` at ``j = c``).

    Forward (IBP): conv/linear ``c' = W ⋆ c + b``, ``r' = |W| ⋆ r``; standardize
    ``(lo − μ)/σ``; avg-pool ``[A lo, A hi]``; max-pool ``[maxpool(lo), maxpool(hi)]``;
    activations as for MLPs. Backward, from ``v = W_L[c]``: transposed maps
    ``c_v ↦ Wᵀ ⋆ c_v``, ``r_v ↦ |W|ᵀ ⋆ r_v``, ``v/σ``, ``[Aᵀ v_l, Aᵀ v_u]``; activations as
    for MLPs; max-pool: ``v_w`` to the window's unique candidate, else
    ``[min(0, v_l), max(0, v_u)]`` to every candidate (:func:`maxpool_candidates`), summed
    over windows. ``slack`` (relative): a unit (or a max-pool rival) is decided only if it
    clears 0 (the window's largest lower bound) by ``slack`` times the magnitude
    ``|W| |c| + |W| r + |b|`` of the pre-activations that produced it, and the margins are
    lowered likewise (float32 rounding of the deployed model cannot undo a certificate).
    ``trace`` (a list): the box ``(lo, hi)`` of every layer's output but the last is appended
    (the forward bounds, for tests)."""
    lo, hi = low, high
    mag = torch.maximum(lo.abs(), hi.abs())  # magnitude behind each value (float32 margin)
    tape: list[tuple[ConvStage, Any]] = []
    for st in stages[:-1]:
        shape = lo.shape
        if st.kind in ("conv", "linear"):
            c, r = (lo + hi) / 2, (hi - lo) / 2
            pc, pr = _conv(st, c, st.w, st.b), _conv(st, r, st.w.abs(), None)
            lo, hi = pc - pr, pc + pr
            mag = _conv(st, c.abs(), st.w.abs(), st.b.abs()) + pr
            tape.append((st, shape))
        elif st.kind == "standardize":
            lo, hi = (lo - st.w) / st.b, (hi - st.w) / st.b
            mag = (mag + st.w.abs()) / st.b
            tape.append((st, None))
        elif st.kind == "relu":
            state: ActState = relu_state(lo, hi, slack * mag, slack)
            lo, hi = lo.clamp_min(0), hi.clamp_min(0)
            tape.append((st, state))
        elif st.kind == "softplus":
            lo, hi, dl, du = softplus_box(lo, hi, float(st.module.beta), float(st.module.threshold))
            mag = torch.maximum(mag, torch.maximum(lo.abs(), hi.abs()))
            tape.append((st, (dl, du, True)))
        elif st.kind == "maxpool":
            geo = _geometry(st.module)
            eps = slack * _windows(mag, geo, 0.0).amax(2, keepdim=True)
            cand, unique = maxpool_candidates(
                _windows(lo, geo, float("-inf")), _windows(hi, geo, float("-inf")), eps
            )
            lo, hi, mag = st.module(lo), st.module(hi), st.module(mag)
            tape.append((st, (cand, unique, geo, shape)))
        else:  # avgpool, flatten: the module itself (avg-pool weights are >= 0)
            lo, hi, mag = st.module(lo), st.module(hi), st.module(mag)
            tape.append((st, shape))
        if trace is not None:
            trace.append((lo, hi))
    last = stages[-1]
    if lo.dim() != 2:
        raise TypeError("the last Linear layer must see flattened features (N, F)")
    margin = logit_margins(last.w, last.b, lo, hi, target, slack)
    vl = vu = last.w[target]
    for st, saved in reversed(tape):
        if st.kind in ("conv", "linear"):
            c, r = (vl + vu) / 2, (vu - vl) / 2
            w, wa = st.w, st.w.abs()
            c, r = _conv_transpose(st, saved, c, w), _conv_transpose(st, saved, r, wa)
            vl, vu = c - r, c + r
        elif st.kind == "standardize":
            vl, vu = vl / st.b, vu / st.b
        elif st.kind in ("relu", "softplus"):
            vl, vu = activation_backward(vl, vu, saved)
        elif st.kind == "maxpool":
            cand, unique, geo, shape = saved
            wl, wu = vl.flatten(2).unsqueeze(2), vu.flatten(2).unsqueeze(2)  # (N, C, 1, L)
            zero = torch.zeros((), dtype=wl.dtype, device=wl.device)
            cl = torch.where(cand, torch.where(unique, wl, wl.clamp_max(0)), zero)
            cu = torch.where(cand, torch.where(unique, wu, wu.clamp_min(0)), zero)
            vl, vu = _unwindows(cl, geo, shape[2:]), _unwindows(cu, geo, shape[2:])
        elif st.kind == "avgpool":
            vl, vu = (_transpose(st.module, saved, v) for v in (vl, vu))
        else:  # flatten
            vl, vu = vl.reshape(saved), vu.reshape(saved)
    return vl, vu, margin
