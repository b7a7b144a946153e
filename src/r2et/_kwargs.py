"""Per-sample forward keywords: the one rule for which keyword inputs follow their rows.

A model's keyword inputs (a graph's adjacency and node mask, an edge index) are per-sample
when they are tensors whose first dimension is the batch size ``n``: they must be sliced,
repeated or split with the rows of ``x``. Anything else (shared tensors, flags) passes through.
"""

from __future__ import annotations

from typing import Any

import torch


def is_per_sample(value: Any, n: int) -> bool:
    """Whether ``value`` is a tensor with first dimension ``n`` (a per-sample keyword)."""
    return isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == n


def split_kwargs(kwargs: dict[str, Any], n: int) -> tuple[list[str], dict[str, Any]]:
    """``(names of the per-sample keywords, the shared ones as a dict)``."""
    per = [key for key, v in kwargs.items() if is_per_sample(v, n)]
    return per, {key: v for key, v in kwargs.items() if key not in per}


def take_rows(kwargs: dict[str, Any], idx: torch.Tensor | slice, n: int) -> dict[str, Any]:
    """Rows ``idx`` of every per-sample keyword; the rest unchanged."""
    return {key: v[idx] if is_per_sample(v, n) else v for key, v in kwargs.items()}


def repeat_batch(t: torch.Tensor, reps: int) -> torch.Tensor:
    """Stack ``reps`` copies of a batch: ``(N, ...) -> (reps·N, ...)``, copy-major order."""
    return t.repeat(reps, *([1] * (t.dim() - 1)))


def repeat_rows(kwargs: dict[str, Any], n: int, reps: int) -> dict[str, Any]:
    """``reps`` copies (copy-major, as :func:`repeat_batch`) of every per-sample keyword."""
    if reps == 1:
        return kwargs
    return {key: repeat_batch(v, reps) if is_per_sample(v, n) else v for key, v in kwargs.items()}
