"""Issue 26: do intra-op threads pay, by the size of the work, on an idle machine and beside
one other CPU-bound process? The evidence behind ``r2et._threads.MULTI_THREAD_MACS``.

For each workload it times 1 thread against torch's default (the cores it may use), with and
without a competing process (a pure-Python busy loop in a subprocess), interleaved and
repeated: median and [min, max] of wall-clock seconds, CPU seconds beside them, and the
multiply-accumulates per batch (``r2et._threads.macs_per_row`` x rows).

    python benchmarks/threads.py [--repeats 5] [--markdown]

The thread policy is set to ``None`` here (each timing sets torch's threads itself).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from r2et import ERAttack, Explainer
from r2et._threads import macs_per_row, set_threads
from r2et.models import build_model


def workloads() -> dict[str, tuple[Callable[[], object], float]]:
    """name -> (one run, multiply-accumulates per batch)."""
    torch.manual_seed(0)
    ex = Explainer("grad")
    mlp = build_model("mlp", (20,), 2, hidden=[64, 64]).eval()
    xt = torch.randn(100, 20)
    er = ERAttack(ex, 4, 0.3, steps=50)
    cnn = build_model("cnn", (1, 28, 28), 10)
    xm = torch.rand(128, 1, 28, 28)
    cnn3 = build_model("cnn", (3, 32, 32), 10).eval()
    xc = torch.rand(32, 3, 32, 32)
    er10 = ERAttack(ex, 100, 8 / 255, steps=10)

    def train_step() -> None:
        cnn.zero_grad()
        s = ex.scores(cnn, xm, create_graph=True)
        (torch.nn.functional.cross_entropy(cnn(xm), torch.zeros(128, dtype=torch.long))
         - s.mean()).backward()  # fmt: skip

    return {
        "ERAttack-50, 64-64 MLP, 100 rows": (lambda: er(mlp, xt), macs_per_row(mlp, xt) * 100),
        "R2ET-style step, MNIST CNN, batch 128": (train_step, macs_per_row(cnn, xm) * 128),
        "ERAttack-10, CIFAR CNN, 32 images": (lambda: er10(cnn3, xc), macs_per_row(cnn3, xc) * 32),
    }


def busy() -> subprocess.Popen:
    """One competing CPU-bound process."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    set_threads(None)
    default = torch.get_num_threads()
    jobs = workloads()
    times: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for load in ("idle", "beside 1 busy process"):
        other = busy() if load != "idle" else None
        try:
            time.sleep(0.5 if other else 0)
            for run, _ in jobs.values():
                run()  # warm up
            for _ in range(a.repeats):
                for name, (run, _) in jobs.items():
                    for threads in (1, default):
                        torch.set_num_threads(threads)
                        w0, c0 = time.perf_counter(), time.process_time()
                        run()
                        w, c = time.perf_counter() - w0, time.process_time() - c0
                        times.setdefault((load, name, threads), []).append((w, c))
        finally:
            if other is not None:
                other.kill()
    torch.set_num_threads(default)
    print(f"torch {torch.__version__}, default threads {default}, {a.repeats} repeats, "
          "interleaved; wall seconds median [min, max] (CPU seconds median)")  # fmt: skip
    print(f"| load | workload | MACs per batch | 1 thread | {default} threads | ratio |")
    print("|---|---|---|---|---|---|")
    for (load, name, threads), v in times.items():
        if threads != 1:
            continue
        one, many = v, times[(load, name, default)]

        def cell(vals: list[tuple[float, float]]) -> str:
            w = [x for x, _ in vals]
            c = statistics.median(y for _, y in vals)
            return f"{statistics.median(w):.3f} [{min(w):.3f}, {max(w):.3f}] ({c:.3f})"

        ratio = statistics.median(x for x, _ in many) / statistics.median(x for x, _ in one)
        print(f"| {load} | {name} | {jobs[name][1]:.2g} | {cell(one)} | {cell(many)} "
              f"| {ratio:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
