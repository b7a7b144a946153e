"""Argument validation shared by every module (internal).

All checks raise ``ValueError`` naming the argument and what is allowed, as the design's
conventions require.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed: {allowed}")


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``t`` holds NaN or Inf."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
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
