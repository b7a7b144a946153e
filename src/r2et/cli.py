"""The ``r2et`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    """Train a small MLP on scikit-learn's breast-cancer data, print its gradient-saliency
    top-k features and P@k under uniform random noise."""
    import torch
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from r2et import Explainer, build_model, precision_at_k

    torch.manual_seed(args.seed)
    data = load_breast_cancer()
    xtr, xte, ytr, yte = train_test_split(
        data.data, data.target, test_size=0.3, random_state=args.seed, stratify=data.target
    )
    scaler = StandardScaler().fit(xtr)
    xtr = torch.tensor(scaler.transform(xtr), dtype=torch.float32)
    xte = torch.tensor(scaler.transform(xte), dtype=torch.float32)
    ytr, yte = torch.tensor(ytr), torch.tensor(yte)
    model = build_model("mlp", [xtr.shape[1]], 2, hidden=[64, 64])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    acc = (model(xte).argmax(1) == yte).float().mean().item()
    ex = Explainer("grad")
    s = ex.scores(model, xte)
    print(f"breast-cancer MLP: test accuracy {acc:.3f} on {len(xte)} inputs")
    for i in range(3):
        top = s[i].topk(args.k).indices.tolist()
        print(
            f"  input {i}: top-{args.k} features: " + ", ".join(data.feature_names[j] for j in top)
        )
    gen = torch.Generator().manual_seed(args.seed)
    for eps in (0.05, 0.1, 0.2):
        noisy = xte + (2 * torch.rand(xte.shape, generator=gen) - 1) * eps
        p = precision_at_k(s, ex.scores(model, noisy), args.k)
        print(f"  P@{args.k} under uniform noise eps={eps}: {p.mean().item():.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r2et", description="Stable saliency explanations (R2ET)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small MLP on breast-cancer data and explain it")
    demo.add_argument("--k", type=int, default=5, help="top-k features to report (default 5)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``r2et`` console script; bad input exits with code 2 and one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"r2et: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
