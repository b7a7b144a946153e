"""Training-step time of every method as a ratio to vanilla, measured side by side.

    python benchmarks/train_speed.py [--device cuda] [--batch-size 128] [--features 108]
        [--model cnn]

One training step = ``method.loss`` + backward (to the parameters) + Adam step, as in
:func:`r2et.train.fit`, on the same batch and the same model for every method: an Adult-sized
MLP (F inputs, hidden [64, 64], 2 classes) or, with ``--model cnn``, the small CNN on
1×28×28 images (10 classes; ``exact-h`` is skipped there: a 784 × 784 Hessian per sample).
Median of interleaved repeats (:func:`_timing.time_interleaved`), printed as a markdown
table. ``at`` runs its inner ERAttack for
``at_steps`` steps (default 10). Goals: r2et <= 3x vanilla, at >= 10x vanilla (R2ET at least
3x cheaper than adversarial training: "for free").
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_interleaved  # noqa: E402

from r2et import build_model  # noqa: E402
from r2et.methods import get_method, list_methods  # noqa: E402


def step_fn(method, model, x, y):
    """A closure doing one full training step of ``method`` on ``(x, y)``."""
    model = method.prepare(copy.deepcopy(model))
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-4, **method.optimizer_kwargs)

    def step() -> None:  # the step of r2et.train.fit
        loss, _ = method.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        opt.step()

    return step


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
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    names = [n for n in args.methods.split(",") if n]
    if args.model == "mlp":
        model = build_model("mlp", [args.features], 2, hidden=[64, 64]).to(device)
        x = torch.randn(args.batch_size, args.features, device=device)
        y = torch.randint(0, 2, (args.batch_size,), device=device)
        desc = f"MLP {args.features}-64-64-2"
    else:
        model = build_model("cnn", [1, 28, 28], 10).to(device)
        x = torch.rand(args.batch_size, 1, 28, 28, device=device)
        y = torch.randint(0, 10, (args.batch_size,), device=device)
        desc = "CNN 1x28x28 (conv 32-64, dense 128, 10 classes)"
        names = [n for n in names if n != "exact-h"]
    if "vanilla" not in names:
        names.insert(0, "vanilla")
    fns = {n: step_fn(get_method(n, k=args.k), model, x, y) for n in names}
    times = time_interleaved(fns, device, repeats=args.repeats, warmup=3)
    base = times["vanilla"]
    print(
        f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{desc}, batch {args.batch_size}, median of {args.repeats}\n"
    )
    print("| method | ms / step | × vanilla |\n|---|---:|---:|")
    for name in names:
        print(f"| {name} | {times[name] * 1e3:.2f} | {times[name] / base:.2f} |")
    if "r2et" in times and "at" in times:
        print(f"\nat / r2et: {times['at'] / times['r2et']:.1f}x (R2ET's saving over AT)")


if __name__ == "__main__":
    main()
