"""ERAttack batched over the whole input batch versus one sample at a time; prints the
throughput ratio.

    python benchmarks/attack_speed.py [--device cuda] [--n 128] [--steps 50] [--repeats 3]

"one at a time" is the same attack called on each row separately, the way the authors'
released code attacks one image at a time. Both sides run in the same process, interleaved
(median of repeats), on the same model and inputs; ratio = per-sample time / batched time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_interleaved  # noqa: E402

from r2et import Explainer, build_model  # noqa: E402
from r2et.attacks import ERAttack  # noqa: E402


def cases(
    n: int, device: torch.device, channels: list[int]
) -> dict[str, tuple[torch.nn.Module, torch.Tensor, int]]:
    """(model, inputs, k) per case: an MLP on Adult-sized tabular inputs (108 features) and
    the zoo's small CNN on 28x28 images (both ReLU, so the attack uses its Softplus
    surrogate)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mlp = build_model("mlp", [108], 2, hidden=[64, 64])
    cnn = build_model("cnn", [1, 28, 28], 10, channels=channels)
    name = f"cnn{channels[0]}-{channels[1]} 1x28x28"
    return {
        "mlp 108 feats": (mlp.to(device).eval(), torch.randn(n, 108, generator=g), 8),
        name: (cnn.to(device).eval(), torch.rand(n, 1, 28, 28, generator=g), 50),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--cnn-channels", type=int, nargs=2, default=[32, 64], help="conv widths of the CNN"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"ERAttack l_inf, {args.steps} steps"
    )
    print(f"{'case':22s} {'N':>4s} {'batched s':>10s} {'per-sample s':>13s} {'ratio':>7s}")
    ex = Explainer("grad")
    for case, (model, x, k) in cases(args.n, device, args.cnn_channels).items():
        x = x.to(device)
        bounds = (0.0, 1.0) if x.dim() == 4 else None
        eps = 0.1 if x.dim() == 4 else 0.2
        atk = ERAttack(ex, k, eps, steps=args.steps, bounds=bounds, seed=0)

        def batched(atk=atk, model=model, x=x) -> object:
            return atk(model, x)

        def per_sample(atk=atk, model=model, x=x) -> object:
            return [atk(model, x[i : i + 1]) for i in range(x.shape[0])]

        t = time_interleaved(
            {"batched": batched, "per_sample": per_sample},
            device,
            repeats=args.repeats,
            warmup=1,
        )
        ratio = t["per_sample"] / t["batched"]
        print(f"{case:22s} {args.n:4d} {t['batched']:10.3f} {t['per_sample']:13.3f} {ratio:6.1f}x")


if __name__ == "__main__":
    main()
