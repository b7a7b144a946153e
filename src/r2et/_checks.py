"""Argument validation shared by every module (internal).

All checks raise ``ValueError`` naming the argument and what is allowed, as the design's
conventions require.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from r2et._kwargs import take_rows


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed: {allowed}")


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``t`` holds NaN or Inf."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_not_meta(name, t)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


def check_batch(name: str, x: torch.Tensor, min_dim: int = 2) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite floating tensor with a batch dimension."""
    check_finite(name, x)
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have a batch dimension and at least {min_dim} dims "
            f"(N, features...), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch size 0)")


def check_k(k: int, n_features: int) -> int:
    """Return ``k`` as int, raising ``ValueError`` unless ``1 <= k <= n_features - 1``."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int in 1..{n_features - 1}, got {k!r}")
    if not 1 <= k <= n_features - 1:
        raise ValueError(f"k={k} is outside the allowed range 1..{n_features - 1} (F={n_features})")
    return int(k)


def check_int(name: str, value: object, low: int, allow_none: bool = False) -> int | None:
    """Return ``value`` as int, raising ``ValueError`` unless it is an int ``>= low`` (or None
    when ``allow_none``)."""
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = "None or " if allow_none else ""
        raise ValueError(f"{name} must be {extra}an int >= {low}, got {value!r}")
    return int(value)


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive (or non-negative) finite number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and value == value and value not in (float("inf"), float("-inf"))
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_scores_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` are finite (N, F) matrices of one shape."""
    for name, t in (("a", a), ("b", b)):
        check_finite(name, t)
        if t.dim() != 2:
            raise ValueError(f"{name} must be an (N, F) score matrix, got shape {tuple(t.shape)}")
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


#: The largest model (parameter count) a spec may describe; checked on the ``meta`` device,
#: before anything is allocated (4 bytes each: 2 GB of float32 weights).
MAX_PARAMETERS = 500_000_000


def check_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    low_open: bool = False,
) -> float | int:
    """Return ``value`` (an int with ``integer``) after checking it is a finite number (not a
    bool) in ``[low, high]`` (``(low, high]`` with ``low_open``); else ``ValueError`` naming
    ``name`` and the allowed range."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    try:
        ok = ok and math.isfinite(value)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond the float range
        ok = False
    if ok and low is not None:
        ok = value > low if low_open else value >= low  # type: ignore[operator]
    if ok and high is not None:
        ok = value <= high  # type: ignore[operator]
    if not ok:
        what = "an int" if integer else "a finite number"
        lo = "" if low is None else (f" > {low:g}" if low_open else f" >= {low:g}")
        hi = "" if high is None else f" <= {high:g}"
        rng = lo + (" and" if lo and hi else "") + hi
        raise ValueError(f"{name} must be {what}{rng}, got {value!r}")
    return int(value) if integer else value  # type: ignore[return-value]


def check_device(name: str, device: object) -> torch.device:
    """Return ``device`` as a ``torch.device`` (None: CUDA when available, else CPU), raising
    ``ValueError`` for a name torch does not know or a CUDA device this machine lacks."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    allowed = "'cpu', 'cuda', 'cuda:N' or 'mps'"
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str) and device.strip():
        try:
            dev = torch.device(device.strip())
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"{name}={device!r} is not a device; allowed: {allowed}") from None
    else:
        raise ValueError(f"{name} must be None or a device name ({allowed}), got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name}={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name}={device!r}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise ValueError(f"{name}={device!r} is not supported; allowed: {allowed}")
    return dev


def check_finite_model(model: object, name: str = "model") -> None:
    """Raise ``ValueError`` if an ``nn.Module``'s weights or buffers hold NaN or Inf: such a
    model is broken and must never be scored."""
    if not isinstance(model, torch.nn.Module):
        return
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for key, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(
                f"{name} has non-finite weights (NaN or Inf in {key!r}); a broken model is "
                "never evaluated or explained"
            )


def check_finite_output(name: str, out: torch.Tensor) -> None:
    """Raise ``ValueError`` if a model's output holds NaN or Inf."""
    if out.is_floating_point() and not bool(torch.isfinite(out.detach()).all()):
        raise ValueError(
            f"{name} returned NaN or Inf (non-finite weights or inputs?); a model whose outputs "
            "are not finite is never scored"
        )


def check_model_input(model: object, x: torch.Tensor, name: str = "x") -> None:
    """For a model built by :func:`~r2et.build_model` (it has ``r2et_spec``), raise
    ``ValueError`` unless ``x`` is a batch of inputs of the spec's shape, with the dtype and
    device of the model's weights. Other callables are not checked."""
    spec = getattr(model, "r2et_spec", None)
    if not isinstance(model, torch.nn.Module) or not isinstance(spec, dict):
        return
    shape = spec.get("input_shape")
    if isinstance(shape, list) and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{name}: shape {tuple(x.shape)} does not fit the model, which takes inputs of "
            f"shape (N, {', '.join(str(d) for d in shape)})"
        )
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is None:
        return
    if x.dtype != param.dtype:
        raise ValueError(
            f"{name}: dtype {x.dtype} does not fit the model, whose weights are {param.dtype}; "
            f"cast with {name}.to({param.dtype})"
        )
    if x.device != param.device:
        raise ValueError(
            f"{name}: device {x.device} does not fit the model, which is on {param.device}; "
            f"move one with .to(device)"
        )


def check_labels(name: str, y: object, n: int, n_classes: int | None = None) -> torch.Tensor:
    """Raise ``ValueError`` unless ``y`` is an integer ``(n,)`` tensor of classes in
    ``0..n_classes-1`` (any ``>= 0`` when ``n_classes`` is None); returns it."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of class labels, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if tuple(y.shape) != (n,):
        raise ValueError(
            f"{name} must have shape ({n},), one label per input, got {tuple(y.shape)}"
        )
    if n == 0:
        return y
    lo, hi = int(y.min()), int(y.max())
    top = None if n_classes is None else n_classes - 1
    if lo < 0 or (top is not None and hi > top):
        allowed = f"0..{top}" if top is not None else ">= 0"
        raise ValueError(f"{name} holds labels {lo}..{hi}; allowed: {allowed}")
    return y


def check_bounds_pair(name: str, bounds: object, input_shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``bounds`` is a ``(low, high)`` pair of finite numbers or
    tensors that broadcast to one input of ``input_shape``, with ``low <= high`` everywhere (an
    empty box holds no input: nothing can be attacked or certified inside it)."""
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {bounds!r}")
    try:
        lo, hi = (torch.as_tensor(b).detach().to("cpu", torch.float64) for b in bounds)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a pair of numbers or tensors, got {bounds!r}") from None
    for end, t in (("low", lo), ("high", hi)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: the {end} end holds NaN or infinite values")
        try:
            fits = torch.broadcast_shapes(tuple(t.shape), tuple(input_shape)) == input_shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"{name}: the {end} end has shape {tuple(t.shape)}, which does not fit one "
                f"input of shape {tuple(input_shape)} (a scalar or per-feature values)"
            )
    try:
        bad = lo > hi
    except RuntimeError:
        raise ValueError(
            f"{name}: the low end {tuple(lo.shape)} and high end {tuple(hi.shape)} do not match"
        ) from None
    if bool(bad.any()):
        idx = int(bad.flatten().nonzero()[0])
        lo_b, hi_b = torch.broadcast_tensors(lo, hi)
        lo_v, hi_v = float(lo_b.flatten()[idx]), float(hi_b.flatten()[idx])
        raise ValueError(
            f"{name}: the low end exceeds the high end (low {lo_v:g} > high {hi_v:g} at entry "
            f"{idx}; {int(bad.sum())} entries in all); the box is empty"
        )


# ------------------------------------------------------------------ sizes, explainers, devices
def check_size(name: str, value: object) -> int:
    """Return a layer or input size as an int, raising ``ValueError`` unless it is an integer
    ``>= 1`` (a bool, a float such as ``2.5``, zero and negative sizes are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def check_sizes(
    name: str, value: object, *, min_len: int = 0, length: int | None = None
) -> list[int]:
    """Return a list of sizes (e.g. hidden widths) as ints, raising ``ValueError`` unless
    ``value`` is a list or tuple of ints ``>= 1`` with at least ``min_len`` (exactly
    ``length``, when given) entries."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of sizes (ints >= 1), got {value!r}")
    sizes = [check_size(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if length is not None and len(sizes) != length:
        raise ValueError(f"{name} must list exactly {length} sizes, got {list(value)!r}")
    if len(sizes) < min_len:
        raise ValueError(f"{name} must list at least {min_len} size(s), got {list(value)!r}")
    return sizes


def check_not_meta(name: str, t: object) -> None:
    """Raise ``ValueError`` for a tensor on the ``meta`` device (a shape without data)."""
    if isinstance(t, torch.Tensor) and t.device.type == "meta":
        raise ValueError(
            f"{name} is on the meta device: it has a shape but no data; create it on 'cpu' "
            "or 'cuda'"
        )


def model_placement(model: object) -> tuple[torch.device | None, torch.dtype | None]:
    """``(device, floating dtype)`` of an ``nn.Module``'s first floating parameter (else
    buffer): where its inputs must be and what floating dtype they must have. ``(None, None)``
    for another callable or a module without tensors (its dtype None when no tensor is
    floating). ``ValueError`` for a model whose weights are on the ``meta`` device."""
    if not isinstance(model, torch.nn.Module):
        return None, None
    tensors = [*model.parameters(), *model.buffers()]
    if not tensors:
        return None, None
    floating = next((t for t in tensors if t.is_floating_point()), None)
    ref = tensors[0] if floating is None else floating
    if ref.device.type == "meta":
        raise ValueError(
            "the model's weights are on the meta device (shapes without data); load or "
            "initialise them first (e.g. model.to_empty(device='cpu') and load_state_dict)"
        )
    return ref.device, None if floating is None else floating.dtype


def to_model(model: object, t: Any, name: str = "x") -> Any:
    """``t`` on the model's device, a floating ``t`` cast to the model's floating dtype
    (:func:`model_placement`): inputs follow the model, whatever device or floating dtype
    the caller's are (a float64 input of a float32 model is run in float32). Non-tensors, and
    every input of a model without tensors, are returned unchanged; ``ValueError`` for a
    tensor on the ``meta`` device."""
    if not isinstance(t, torch.Tensor):
        return t
    check_not_meta(name, t)
    dev, dtype = model_placement(model)
    if dev is None:
        return t
    if t.is_floating_point() and dtype is not None and t.dtype != dtype:
        return t.to(device=dev, dtype=dtype)
    return t.to(dev)


def kwargs_to_model(model: object, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every tensor of a model's keyword inputs moved and cast by :func:`to_model`."""
    return {key: to_model(model, v, key) for key, v in kwargs.items()}


def not_logits(out: object) -> str | None:
    """None when ``out`` is a tensor; else the one line that says what the model returned and
    how to wrap it: a Hugging Face style dict or tuple output needs
    :func:`r2et.models.adapt_output` (``adapt_output(model, "logits")``, ``adapt_output(model,
    0)``)."""
    if isinstance(out, torch.Tensor):
        return None
    if isinstance(out, dict) or hasattr(out, "keys"):
        keys = list(out.keys())
        key = "logits" if "logits" in keys else (keys[0] if keys else "logits")
        what, how = f"a {type(out).__name__} with keys {keys[:6]}", f"{key!r}"
    elif isinstance(out, (tuple, list)):
        what, how = f"a {type(out).__name__} of {len(out)}", "0"
    else:
        what, how = f"a {type(out).__name__}", "a function of the output that returns logits"
    return (
        f"the model returns {what}, not a tensor of logits: wrap it with "
        f"r2et.models.adapt_output(model, {how})"
    )


def check_forward(
    model: Any, x: torch.Tensor, kwargs: dict[str, Any] | None = None, name: str = "x"
) -> None:
    """Run ``model`` on the first rows (at most 2) of ``x`` without gradients and turn a
    torch ``RuntimeError`` (a shape, dtype or device that does not fit the model) into one
    ``ValueError`` naming ``x``'s shape, dtype and device; a model built by
    :func:`~r2et.build_model` is first checked against its spec (:func:`check_model_input`).
    A model that returns no tensor (a dict or tuple) is one ``ValueError`` naming
    :func:`r2et.models.adapt_output` (:func:`not_logits`). Out-of-memory errors pass through."""
    check_model_input(model, x, name)
    m = min(2, int(x.shape[0]))
    part = take_rows(kwargs or {}, slice(0, m), int(x.shape[0]))
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    try:
        with torch.no_grad():
            out = model(x[:m], **part)
    except oom:
        raise
    except RuntimeError as err:
        msg = " ".join(str(err).split())
        msg = msg if len(msg) <= 300 else msg[:297] + "..."
        raise ValueError(
            f"{name} of shape {tuple(x.shape)} ({x.dtype}, on {x.device}) does not fit the "
            f"model: {msg}"
        ) from None
    if (msg := not_logits(out)) is not None:
        raise ValueError(msg)


def model_inputs(
    model: Any, x: torch.Tensor, y: Any = None, kwargs: dict[str, Any] | None = None
) -> tuple[torch.Tensor, Any, dict[str, Any]]:
    """``(x, y, forward keywords)`` where the model runs: ``x`` detached, each moved to the
    model's device and the floating ones cast to its floating dtype (:func:`to_model`,
    :func:`kwargs_to_model`), ``x`` checked by a forward of its first rows
    (:func:`check_forward`: a shape that does not fit the model is one ``ValueError``). The one
    entry point of attacks, metrics and certificates; call it in eval mode."""
    x = to_model(model, x.detach())
    y = to_model(model, y, "y")
    kwargs = kwargs_to_model(model, kwargs or {})
    check_forward(model, x, kwargs)
    return x, y, kwargs


def check_label_range(name: str, y: object, n_outputs: int) -> torch.Tensor:
    """Raise ``ValueError`` unless ``y`` is a 1-D integer tensor of classes ``0..n_outputs-1``
    of a model with ``n_outputs`` outputs; the message lists the labels outside that range
    (at most 8 of them). Returns ``y``."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of class labels, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of class labels, got {tuple(y.shape)}")
    bad = (y < 0) | (y >= n_outputs)
    if bool(bad.any()):
        values = torch.unique(y[bad]).tolist()
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise ValueError(
            f"{name} holds class labels outside the model's outputs: {shown} "
            f"({int(bad.sum())} label(s)); the model has {n_outputs} outputs, so labels must be "
            f"in 0..{n_outputs - 1}"
        )
    return y


def align_scores_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` after :func:`check_scores_pair`, with ``b`` moved to ``a``'s device and both
    in their common dtype (a CUDA ``a`` and a CPU ``b`` are compared on the GPU); ``ValueError``
    for boolean or complex scores."""
    check_scores_pair(a, b)
    for name, t in (("a", a), ("b", b)):
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"{name} must hold real-valued scores, got dtype {t.dtype}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(device=a.device, dtype=dtype)
