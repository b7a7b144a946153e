"""Training-step cost of every method as a ratio to vanilla, in CPU time and in FLOPs.

    python benchmarks/train_speed.py [--device cuda] [--batch-size 128] [--features 108]
        [--model mlp|cnn|cnn-cifar] [--methods vanilla,r2et] [--compare r2et]

One training step = ``method.loss`` + backward (to the parameters) + Adam step, as in
:func:`r2et.train.fit`, on the same batch and the same model for every method: an Adult-sized
MLP (F inputs, hidden [64, 64], 2 classes; synthetic tensors of Adult's shape), or the small
CNN on 1×28×28 (``cnn``, MNIST-sized) or 3×32×32 (``cnn-cifar``, CIFAR-sized, with a
``Standardize`` first layer) images, 10 classes (``exact-h`` is skipped for the CNNs: a
784 × 784 Hessian per sample). ``at`` runs its inner ERAttack for ``at_steps`` steps (default
10). Goals: r2et <= 3x vanilla, at >= 10x vanilla (R2ET at least 3x cheaper than adversarial
training: "for free").

Time: CPU time of this process (``time.process_time``, robust to other load on a shared
machine; wall time on CUDA) of interleaved repeats (:func:`_timing.time_interleaved_all`),
with ``--threads`` torch threads (default 1). Each ratio to vanilla is taken repeat by repeat
and reported as its median with the interquartile range [q25, q75]. FLOPs: the matmul and
convolution FLOPs of one step (forward, backward and double backward), counted with a
``TorchDispatchMode`` and the formulas of ``torch.utils.flop_counter`` (elementwise work is
not counted).

Fast path vs autograd (``--compare``, default ``r2et``): each compared method runs a second
time with :mod:`r2et.fastpath` switched off (``[autograd]`` rows): the logit saliency of a
ReLU network then comes from autograd's double backward instead of the explicit computation
``g = W_1ᵀ D_1 ⋯ W_Lᵀ e_c``. The last table gives both step costs relative to vanilla and
their quotient (fast / autograd; the issue asks for a FLOPs quotient <= 0.88).

Measured in the 2-core development container (shared with other jobs), torch 2.13 CPU,
1 thread, batch 128, k = 8, CPU time; ``× vanilla`` as median [q25, q75] of 21 interleaved
repeats (11 for the 3×32×32 CNN):

=================== ========== ============== ========== ============= ===================
R2ET step           FLOPs      FLOPs          FLOPs      CPU time      CPU time
× vanilla           fast       autograd       quotient   fast          autograd
=================== ========== ============== ========== ============= ===================
MLP 108-64-64-2     3.91       4.50           0.869      2.66 [2.55,   2.92 [2.74, 3.10]
                                                         2.78]
CNN 1×28×28         3.37       4.04           0.836      3.77 [3.55,   4.47 [4.37, 4.69]
                                                         3.89]
CNN 3×32×32, std.   3.45       4.10           0.842      3.80 [3.60,   4.61 [4.50, 4.72]
                                                         3.89]
=================== ========== ============== ========== ============= ===================

Time quotient fast / autograd (median [q25, q75] of the repeat-by-repeat quotients): 0.935
[0.913, 0.995] (MLP; per-step Python overhead dominates there), 0.827 [0.763, 0.870] (CNN
1×28×28), 0.819 [0.790, 0.852] (CNN 3×32×32). ``r2et-mm``: as ``r2et``; ``est-h``
(``output="loss"``): FLOPs quotient 1.000 (the cross-entropy seed depends on the logits, so
the forward graph at ``x + h v`` is back-propagated for real).
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_interleaved_all  # noqa: E402

from r2et import build_model, fastpath  # noqa: E402
from r2et.methods import TrainingMethod, get_method, list_methods  # noqa: E402

AUTOGRAD = " [autograd]"


class FlopCount(TorchDispatchMode):
    """Counts the FLOPs of every matmul/convolution (and their backward) dispatched inside the
    block, with the formulas of ``torch.utils.flop_counter`` (``total``, ``counts`` per op).

    A plain dispatch mode rather than ``FlopCounterMode``, whose module tracker installs
    backward hooks that ``torch.autograd.grad`` (used by every saliency term) rejects."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            self.counts[str(packet)] += flop_registry[packet](*args, **kwargs, out_val=out)
        return out

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))


def step_fn(
    method: TrainingMethod,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    fast: bool = True,
) -> Callable[[], None]:
    """A closure doing one full training step of ``method`` on ``(x, y)`` (``fast=False``:
    with :mod:`r2et.fastpath` switched off)."""
    model = method.prepare(copy.deepcopy(model))
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-4, **method.optimizer_kwargs)

    def step() -> None:  # the step of r2et.train.fit
        with fastpath.enabled(fast):
            loss, _ = method.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=params)
        opt.step()

    return step


def count_flops(fn: Callable[[], None]) -> int:
    """Matmul/convolution FLOPs of one call of ``fn``."""
    with FlopCount() as counter:
        fn()
    return counter.total


def ratio_stats(times: list[float], base: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the repeat-by-repeat ratios ``times[i] / base[i]``."""
    ratios = [t / b for t, b in zip(times, base)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q2, q1, q3


def setup(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any, Any, str]:
    """The model, a batch and its description for ``args.model``."""
    n = args.batch_size
    if args.model == "mlp":
        model = build_model("mlp", [args.features], 2, hidden=[64, 64])
        x = torch.randn(n, args.features)
        y = torch.randint(0, 2, (n,))
        desc = f"MLP {args.features}-64-64-2"
    elif args.model == "cnn":
        model = build_model("cnn", [1, 28, 28], 10)
        x, y = torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))
        desc = "CNN 1x28x28 (conv 32-64, dense 128, 10 classes)"
    else:
        norm = [[0.49, 0.48, 0.45], [0.25, 0.24, 0.26]]
        model = build_model("cnn", [3, 32, 32], 10, input_norm=norm)
        x, y = torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,))
        desc = "CNN 3x32x32 with Standardize (conv 32-64, dense 128, 10 classes)"
    return model.to(device), x.to(device), y.to(device), desc


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--features", type=int, default=108)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=",".join(list_methods()))
    parser.add_argument(
        "--compare", default="r2et", help="methods also run without fast path (none: no comparison)"
    )
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn", "cnn-cifar"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, x, y, desc = setup(args, device)
    names = [n for n in args.methods.split(",") if n]
    if args.model != "mlp":
        names = [n for n in names if n != "exact-h"]
    if "vanilla" not in names:
        names.insert(0, "vanilla")
    compare = [n for n in args.compare.split(",") if n and n != "none"]
    fns = {n: step_fn(get_method(n, k=args.k), model, x, y) for n in names}
    for n in compare:
        fns[n + AUTOGRAD] = step_fn(get_method(n, k=args.k), model, x, y, fast=False)
    flops = {name: count_flops(fn) for name, fn in fns.items()}
    times = time_interleaved_all(fns, device, repeats=args.repeats, warmup=3, cpu_time=True)
    base = times["vanilla"]
    clock = "CPU time" if device.type == "cpu" else "wall time"
    print(
        f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{desc}, batch {args.batch_size}, {clock}, median of {args.repeats} interleaved "
        f"repeats [q25, q75]\n"
    )
    print("| method | ms / step | × vanilla | MFLOP / step | FLOPs × vanilla |")
    print("|---|---:|---:|---:|---:|")
    for name in fns:
        med, q1, q3 = ratio_stats(times[name], base)
        ms = statistics.median(times[name]) * 1e3
        fl = flops[name] / flops["vanilla"]
        print(
            f"| {name} | {ms:.2f} | {med:.2f} [{q1:.2f}, {q3:.2f}] | "
            f"{flops[name] / 1e6:.1f} | {fl:.2f} |"
        )
    if "r2et" in times and "at" in times:
        at = statistics.median(times["at"]) / statistics.median(times["r2et"])
        print(f"\nat / r2et: {at:.1f}x (R2ET's saving over AT)")
    if compare:
        print("\nfast path vs autograd (step cost × vanilla, and their quotient fast / autograd)\n")
        print("| method | FLOPs fast | FLOPs autograd | FLOPs quotient | time fast | "
              "time autograd | time quotient |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        for n in compare:
            if n not in times:
                continue
            slow = n + AUTOGRAD
            ff, fa = flops[n] / flops["vanilla"], flops[slow] / flops["vanilla"]
            tf, tfl, tfh = ratio_stats(times[n], base)
            ta, tal, tah = ratio_stats(times[slow], base)
            tq, tql, tqh = ratio_stats(times[n], times[slow])
            print(
                f"| {n} | {ff:.2f} | {fa:.2f} | {ff / fa:.3f} | {tf:.2f} [{tfl:.2f}, {tfh:.2f}] | "
                f"{ta:.2f} [{tal:.2f}, {tah:.2f}] | {tq:.3f} [{tql:.3f}, {tqh:.3f}] |"
            )


if __name__ == "__main__":
    main()
