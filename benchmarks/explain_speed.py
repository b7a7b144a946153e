"""r2et explainers versus Captum on the same model and batch; prints time ratios.

    python benchmarks/explain_speed.py [--device cuda]

Ratio = r2et time / Captum time (below 1.0: r2et is faster), create_graph=False, median of
interleaved repeats.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import time_interleaved  # noqa: E402

from r2et import Explainer, build_model  # noqa: E402


def explainer_pairs(model, x, target, steps=32, samples=25):
    """(r2et, Captum) callables computing the same attribution."""
    return {
        "grad": (
            lambda: Explainer("grad").attribute(model, x, target),
            lambda: Saliency(model).attribute(x, target=target, abs=False),
        ),
        "ig": (
            lambda: Explainer("ig", n_steps=steps).attribute(model, x, target),
            lambda: IntegratedGradients(model).attribute(x, target=target, n_steps=steps),
        ),
        "smoothgrad": (
            lambda: Explainer(
                "smoothgrad", n_samples=samples, sigma=0.1, sigma_mode="absolute"
            ).attribute(model, x, target),
            lambda: NoiseTunnel(Saliency(model)).attribute(
                x, nt_type="smoothgrad", nt_samples=samples, stdevs=0.1, target=target, abs=False
            ),
        ),
    }


def main() -> None:
    warnings.filterwarnings("ignore", message="Input Tensor")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    cases = {
        "mlp 104 feats, N=256": (build_model("mlp", [104], 2, hidden=[64, 64]), (256, 104)),
        "cnn 1x28x28, N=64": (build_model("cnn", [1, 28, 28], 10), (64, 1, 28, 28)),
    }
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'case':24s} {'method':12s} {'r2et ms':>9s} {'captum ms':>10s} {'ratio':>6s}")
    for case, (model, shape) in cases.items():
        model = model.to(device).eval()
        x = torch.randn(shape, device=device)
        target = model(x).argmax(1)
        for method, (ours, theirs) in explainer_pairs(model, x, target).items():
            t = time_interleaved({"r2et": ours, "captum": theirs}, device, repeats=args.repeats)
            ratio = t["r2et"] / t["captum"]
            print(
                f"{case:24s} {method:12s} {1e3 * t['r2et']:9.2f} {1e3 * t['captum']:10.2f} "
                f"{ratio:6.2f}"
            )


if __name__ == "__main__":
    main()
