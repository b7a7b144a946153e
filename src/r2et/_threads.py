"""Torch threads chosen for the work (issue 26): small models gain nothing from intra-op
threads and, on a machine another process keeps busy, lose badly to them (the threads wait on
each other: ERAttack-50 on a 64-64 MLP, 100 inputs, beside two busy processes on 2 cores took
8.8 s with 2 threads against 0.16 s with 1).

The policy (:func:`set_threads`) is ``"auto"`` by default: each top-level call of
:func:`r2et.fit`, :func:`r2et.evaluate` and the attacks runs with :func:`threads_for` its
model's work and restores torch's setting afterwards; an int pins every call to that many
threads; ``None`` leaves torch's setting alone. ``R2ET_THREADS`` (an int, ``auto`` or
``torch``) sets the policy for a process; ``OMP_NUM_THREADS`` set by the user means ``None``
(torch already follows it).

The work of a model is the multiply-accumulates of one forward of one row (:func:`macs_per_row`,
counted by forward hooks on linear and convolution layers). A batch under
:data:`MULTI_THREAD_MACS` runs on one thread; from it, on the threads torch started with.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

MULTI_THREAD_MACS = 1e8
"""Multiply-accumulates per batch from which r2et uses torch's default threads
(``benchmarks/threads.py`` on the 2-core CI machine, ``docs/results/threads.md``): a 64-64 MLP
(5.5e5 per batch of 100) gained nothing from 2 threads idle and lost 3.3x beside one busy
process; a small CNN (2e8-5e8 per batch) gained 1.4-2x idle and lost 1.7-2.5x beside one busy
process. Tabular MLPs and the small graph networks stay under it; image CNNs are over it, so
on a busy machine set ``R2ET_THREADS=1`` for them."""

_policy: list[int | str | None] = []  # set_threads' value; empty: from the environment
_depth = [0]  # nesting of thread_budget: only the outermost call chooses


def _from_environment() -> int | str | None:
    value = os.environ.get("R2ET_THREADS", "").strip().lower()
    if value in ("", "auto"):
        return None if os.environ.get("OMP_NUM_THREADS") and not value else "auto"
    if value == "torch":
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"R2ET_THREADS must be an int >= 1, 'auto' or 'torch', got {value!r}")


def set_threads(policy: int | str | None) -> None:
    """How many torch threads r2et's top-level calls use: ``"auto"`` (:func:`threads_for`
    the model's work, the default), an int >= 1 (always that many), or ``None`` (torch's own
    setting, untouched)."""
    if policy is not None and policy != "auto":
        if isinstance(policy, bool) or not isinstance(policy, int) or policy < 1:
            raise ValueError(f"threads must be an int >= 1, 'auto' or None, got {policy!r}")
    _policy[:] = [policy]


def get_threads_policy() -> int | str | None:
    """The policy in force (:func:`set_threads`, else ``R2ET_THREADS`` / ``OMP_NUM_THREADS``)."""
    return _policy[0] if _policy else _from_environment()


def macs_per_row(model: Any, x: torch.Tensor, **forward_kwargs: Any) -> float:
    """Multiply-accumulates of ``model``'s linear and convolution layers on the first row of
    ``x`` (one forward without gradients, counted by forward hooks): a linear layer ``in ·
    out`` per output position, a convolution ``out_elements · in_channels/groups · kernel``.
    0 for a model that is not an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        return 0.0
    total = [0.0]

    def hook(mod: nn.Module, _inp: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        if isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features
        elif isinstance(mod, nn.modules.conv._ConvNd):
            kernel = 1
            for s in mod.kernel_size:
                kernel *= s
            total[0] += out.numel() * (mod.in_channels // mod.groups) * kernel

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]  # fmt: skip
    kw = {k: v[:1] if isinstance(v, torch.Tensor) and v.shape[:1] == x.shape[:1] else v
          for k, v in forward_kwargs.items()}  # fmt: skip
    try:
        with torch.no_grad():
            model(x[:1], **kw)
    except Exception:  # a model that needs more than a row: count nothing, stay on 1 thread
        return 0.0
    finally:
        for h in handles:
            h.remove()
    return total[0]


def threads_for(macs_per_batch: float) -> int:
    """1 below :data:`MULTI_THREAD_MACS` multiply-accumulates per batch, else the threads
    torch starts with (its default: the cores it may use)."""
    return 1 if macs_per_batch < MULTI_THREAD_MACS else _DEFAULT_THREADS


_DEFAULT_THREADS = torch.get_num_threads()


@contextlib.contextmanager
def thread_budget(model: Any, x: torch.Tensor | None, batch: int | None = None,
                  **forward_kwargs: Any) -> Iterator[int]:  # fmt: skip
    """Run the block with the threads of the policy (:func:`get_threads_policy`) for
    ``model`` on batches of ``batch`` rows like ``x`` (default: ``len(x)``), restoring torch's
    setting after; nested blocks keep the outermost choice. Yields the threads used."""
    policy = get_threads_policy()
    before = torch.get_num_threads()
    if _depth[0] > 0 or policy is None or x is None:
        _depth[0] += 1
        try:
            yield before
        finally:
            _depth[0] -= 1
        return
    if policy == "auto":
        rows = int(x.shape[0]) if batch is None else int(batch)
        n = threads_for(macs_per_row(model, x, **forward_kwargs) * rows)
    else:
        n = int(policy)
    _depth[0] += 1
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        _depth[0] -= 1
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
