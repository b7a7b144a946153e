"""Attack cost, measured side by side in one process: the ensemble presets relative to the
paper's 50-step ERAttack, and the batched attack relative to one sample at a time.

    python benchmarks/attack_speed.py [--device cuda] [--n 128] [--repeats 5] [--threads 1]
        [--part presets|batching|all]

Presets: each :class:`~r2et.EnsembleAttack` preset and the 50-step ERAttack (Softplus(10)
surrogate, l_inf) run on the same model and inputs, interleaved; printed is the median and the
min-max spread over repeats of (preset CPU time / ERAttack-50 CPU time of the same repeat),
with one torch thread by default (``time.process_time``; wall time on CUDA). Early exit is off
so that the cost does not depend on how breakable the random model is. "one at a time" is the
same ERAttack called on each row separately, the way the authors' released code attacks one
image at a time; ratio = per-sample time / batched time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_interleaved, time_interleaved_all  # noqa: E402

from r2et import Explainer, build_model  # noqa: E402
from r2et.attacks import PRESETS, EnsembleAttack, ERAttack  # noqa: E402


def cases(
    n: int, device: torch.device, channels: list[int]
) -> dict[str, tuple[torch.nn.Module, torch.Tensor, int, float, tuple | None]]:
    """(model, inputs, k, eps, bounds) per case: an MLP on Adult-sized tabular inputs (108
    features, eps 0.3) and the zoo's small CNN on 28x28 images (k 50, eps 0.1, box [0, 1]);
    both ReLU, so the attacks use Softplus surrogates."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mlp = build_model("mlp", [108], 2, hidden=[64, 64])
    cnn = build_model("cnn", [1, 28, 28], 10, channels=channels)
    name = f"cnn{channels[0]}-{channels[1]} 1x28x28"
    return {
        "mlp 108 feats": (
            mlp.to(device).eval(), torch.randn(n, 108, generator=g).to(device), 8, 0.3, None
        ),
        name: (
            cnn.to(device).eval(), torch.rand(n, 1, 28, 28, generator=g).to(device), 50, 0.1,
            (0.0, 1.0),
        ),
    }  # fmt: skip


def presets(args: argparse.Namespace, device: torch.device) -> None:
    print(f"\nensemble presets / ERAttack-50 (CPU time ratio, median [min, max] of {args.repeats})")
    print(f"{'case':22s} {'N':>4s} {'ER-50 s':>8s} " + " ".join(f"{p:>20s}" for p in PRESETS))
    ex = Explainer("grad")
    for case, (model, x, k, eps, bounds) in cases(args.n, device, args.cnn_channels).items():
        fns = {"er50": lambda m=model, x=x, k=k, e=eps, b=bounds: ERAttack(
            ex, k, e, 50, bounds=b, seed=0, early_stop=False)(m, x)}  # fmt: skip
        for p in PRESETS:
            fns[p] = lambda m=model, x=x, k=k, e=eps, b=bounds, p=p: EnsembleAttack(
                ex, k, e, bounds=b, preset=p, seed=0, early_stop=False
            )(m, x)
        if not args.thorough:
            fns.pop("thorough")
        t = time_interleaved_all(fns, device, repeats=args.repeats, warmup=1, cpu_time=True)
        cells = []
        for p in PRESETS:
            if p not in t:
                cells.append(f"{'(skipped)':>20s}")
                continue
            r = [a / b for a, b in zip(t[p], t["er50"])]
            cells.append(f"{statistics.median(r):7.1f} [{min(r):4.1f}, {max(r):4.1f}]".rjust(20))
        er = statistics.median(t["er50"])
        print(f"{case:22s} {args.n:4d} {er:8.2f} " + " ".join(cells), flush=True)


def batching(args: argparse.Namespace, device: torch.device) -> None:
    print("\nERAttack-50 batched versus one sample at a time (wall time, median)")
    print(f"{'case':22s} {'N':>4s} {'batched s':>10s} {'per-sample s':>13s} {'ratio':>7s}")
    ex = Explainer("grad")
    for case, (model, x, k, eps, bounds) in cases(args.n, device, args.cnn_channels).items():
        atk = ERAttack(ex, k, eps, steps=50, bounds=bounds, seed=0)

        def batched(atk=atk, model=model, x=x) -> object:
            return atk(model, x)

        def per_sample(atk=atk, model=model, x=x) -> object:
            return [atk(model, x[i : i + 1]) for i in range(x.shape[0])]

        t = time_interleaved(
            {"batched": batched, "per_sample": per_sample}, device, repeats=3, warmup=1
        )
        ratio = t["per_sample"] / t["batched"]
        print(f"{case:22s} {args.n:4d} {t['batched']:10.3f} {t['per_sample']:13.3f} {ratio:6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--part", default="presets", choices=["presets", "batching", "all"])
    parser.add_argument("--thorough", action="store_true", help="also time the thorough preset")
    parser.add_argument(
        "--cnn-channels", type=int, nargs=2, default=[32, 64], help="conv widths of the CNN"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.part in ("presets", "all"):
        presets(args, device)
    if args.part in ("batching", "all"):
        batching(args, device)


if __name__ == "__main__":
    main()
