"""Side-by-side timing helpers for the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device, cpu_time: bool) -> Callable[[], float]:
    """The clock to read: CPU time of this process (``time.process_time``, robust to other
    load on a shared machine) for CPU work when ``cpu_time``, wall time otherwise (and always
    on CUDA, where the work is not this process's CPU time)."""
    return time.process_time if cpu_time and device.type != "cuda" else time.perf_counter


def time_interleaved_all(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int = 7,
    warmup: int = 2,
    cpu_time: bool = False,
) -> dict[str, list[float]]:
    """Every repeat's time (seconds) of each function; calls alternate so that all of them see
    the same machine load."""
    now = clock(device, cpu_time)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = now()
            fn()
            sync(device)
            times[name].append(now() - t0)
    return times


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int = 7,
    warmup: int = 2,
    cpu_time: bool = False,
) -> dict[str, float]:
    """Median time (seconds) of each function over interleaved repeats."""
    all_times = time_interleaved_all(fns, device, repeats, warmup, cpu_time)
    return {name: statistics.median(v) for name, v in all_times.items()}
