"""The entry point :func:`certified_radius`: checks its arguments, runs the model in eval mode
and dispatches to :func:`~r2et.certify.deterministic.deterministic_certificate` or
:func:`~r2et.certify.smoothed.smoothed_certificate` (see :mod:`r2et.certify` for the maths)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import torch

from r2et._checks import (
    check_batch,
    check_bounds_pair,
    check_choice,
    check_int,
    check_positive,
    model_inputs,
)
from r2et.certify.deterministic import BOUNDS, deterministic_certificate
from r2et.certify.result import CertificateResult
from r2et.certify.smoothed import smoothed_certificate
from r2et.explain import Explainer, as_explainer
from r2et.models import eval_mode

__all__ = ["METHODS", "certified_radius"]

METHODS = ("deterministic", "smoothed")


def certified_radius(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    explainer: Explainer,
    k: int,
    method: str = "deterministic",
    *,
    target: int | torch.Tensor | None = None,
    radii: Sequence[float] | torch.Tensor | None = None,
    bounds: tuple[Any, Any] | None = None,
    max_radius: float = 1.0,
    n_bisect: int = 20,
    rtol: float = 1e-5,
    sigma: float = 0.25,
    n0: int = 64,
    n: int = 1000,
    alpha: float = 0.001,
    batch_size: int = 4096,
    seed: int = 0,
    progress: bool = False,
    bound: str = "patterns",
    max_patterns: int = 1024,
    **forward_kwargs: Any,
) -> CertificateResult:
    """Certify the top-k set of ``explainer``'s scores on every row of ``x``.

    ``method="deterministic"`` (l_inf; MLPs of ``nn.Linear``/``nn.ReLU``/``nn.Softplus``, and
    sequential CNNs of ``Conv2d``/``ReLU``/``Softplus``/``MaxPool2d``/``AvgPool2d``/``Flatten``/
    ``Linear``/``Standardize`` such as the ``cnn`` entry, :mod:`r2et.certify.conv`; explainer
    ``grad`` or ``grad_x_input`` of the ``logit``): bounds ``g_l <= ∂z_c/∂x' <= g_u`` on the
    gradient over the ball (``bound="patterns"``, the default: every activation pattern of
    the unstable units enumerated, for inputs with at most ``max_patterns`` of them,
    :mod:`r2et.certify.patterns`, and the stronger of that and the ``"crown"`` bound;
    ``bound="crown"``: pre-activations and logit margins by linear relaxation (CROWN,
    :mod:`r2et.certify.crown`), then intervals through the gradient's backward pass;
    ``bound="interval"``: IBP pre-activations and intervals through the backward pass; a
    Softplus MLP's ``"patterns"`` is ``"crown"``, CNNs always use the interval bound, and
    ``params["bound"]`` of the result says which was used), the top-k
    certified when ``#{j ≠ i : s_u_j >= s_l_i} <= k − 1`` for every top-k ``i``, bisection over
    ``[0, max_radius]`` (``n_bisect`` halvings; a
    radius equal to ``max_radius`` means "at least"), the ball intersected with the data box
    ``bounds = (low, high)`` when given; ``target=None`` also requires the predicted class to
    be certified. ``method="smoothed"`` (l2; any model and explainer): the
    membership frequency under ``N(0, sigma²)`` noise, ``n0`` selection and ``n`` estimation
    samples in chunks of about ``batch_size`` noisy rows, confidence ``1 − alpha`` per input
    (Bonferroni over features), noise seeded by ``seed``. ``radii``: where the certified P@k
    lower bound is reported (default: 16 points up to ``max_radius``, smoothed: up to
    ``2 sigma``). See the module docstring for the formulas. The model runs in eval mode.

    ``explainer`` may be an explainer name (``"grad"``). ``bounds`` must be finite with
    ``low <= high`` everywhere (an empty box certifies nothing). ``x`` (a floating batch) is
    run where the model is: moved to its device and cast to its floating dtype, so the
    certificate is about the input as the model sees it (a float64 ``x`` of a float32 model is
    certified at its float32 rounding); the result comes back on ``x``'s device. A shape that
    does not fit the model raises one ``ValueError``.
    """
    check_choice("method", method, METHODS)
    check_batch("x", x)
    explainer = as_explainer(explainer)
    if not (hasattr(explainer, "scores") and hasattr(explainer, "reduce_attr")):
        raise TypeError(f"explainer must be an r2et Explainer, got {type(explainer).__name__}")
    if bounds is not None:
        check_bounds_pair("bounds", bounds, tuple(x.shape[1:]))
    check_int("n_bisect", n_bisect, 1)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    check_positive("max_radius", max_radius)
    check_positive("rtol", rtol, allow_zero=True)
    check_choice("bound", bound, BOUNDS)
    check_int("max_patterns", max_patterns, 1)
    if method == "smoothed":
        check_positive("sigma", sigma)
        check_int("n0", n0, 1)
        check_int("n", n, 1)
        if not (isinstance(alpha, float) and 0 < alpha < 1):
            raise ValueError(f"alpha must be a float in (0, 1), got {alpha!r}")
    top = max_radius if method == "deterministic" else 2 * sigma
    grid = _radii(radii, top, x)
    home = x.device
    t0 = time.perf_counter()
    with eval_mode(model), torch.no_grad():
        x, target, forward_kwargs = model_inputs(model, x, target, forward_kwargs)
        if method == "deterministic":
            res = deterministic_certificate(
                model, x, explainer, k, target, grid, bounds, max_radius, n_bisect, rtol,
                forward_kwargs, bound, max_patterns,
            )  # fmt: skip
        else:
            res = smoothed_certificate(
                model, x, explainer, k, target, grid, sigma, n0, n, alpha, batch_size, seed,
                progress, forward_kwargs,
            )  # fmt: skip
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    res.seconds = time.perf_counter() - t0
    return res if home == x.device else _to_device(res, home)


def _to_device(res: CertificateResult, device: torch.device) -> CertificateResult:
    """``res`` with its per-input tensors moved to ``device`` (the caller's input's; ``radii``
    stays on the CPU, as always)."""
    for f in fields(res):
        v = getattr(res, f.name)
        if isinstance(v, torch.Tensor) and f.name != "radii":
            setattr(res, f.name, v.to(device))
    return res


def _radii(radii: Any, top: float, x: torch.Tensor) -> torch.Tensor:
    if radii is None:
        return torch.linspace(0, top, 17, dtype=torch.float64)[1:]
    r = torch.as_tensor(radii, dtype=torch.float64).flatten().cpu()
    if r.numel() == 0 or not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError("radii must be a non-empty sequence of finite numbers >= 0")
    return r
