"""``r2et demo``: train a small MLP on breast-cancer data and explain it."""

from __future__ import annotations

import argparse

from r2et.cli.args import check_k_arg


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a small MLP on scikit-learn's breast-cancer data, print its gradient-saliency
    top-k features and P@k under uniform random noise."""
    import torch

    from r2et.data import load_dataset
    from r2et.explain import Explainer
    from r2et.metrics import precision_at_k
    from r2et.models import build_model
    from r2et.train import fit

    ds = load_dataset("breast-cancer", seed=args.seed)
    check_k_arg("--k", args.k, ds)
    torch.manual_seed(args.seed)
    model = build_model("mlp", list(ds.input_shape), ds.n_classes, hidden=[64, 64])
    res = fit(model, "vanilla", ds, epochs=args.epochs, seed=args.seed, progress=False)
    xte, yte, _ = ds.split("test")
    model = res.model.eval()
    acc = (model(xte).argmax(1) == yte).float().mean().item()
    ex = Explainer("grad")
    s = ex.scores(model, xte)
    print(f"breast-cancer MLP: test accuracy {acc:.3f} on {len(xte)} inputs")
    for i in range(3):
        top = s[i].topk(args.k).indices.tolist()
        print(f"  input {i}: top-{args.k}: " + ", ".join(ds.feature_names[j] for j in top))
    gen = torch.Generator().manual_seed(args.seed)
    for eps in (0.05, 0.1, 0.2):
        noisy = xte + (2 * torch.rand(xte.shape, generator=gen) - 1) * eps
        p = precision_at_k(s, ex.scores(model, noisy), args.k)
        print(f"  P@{args.k} under uniform noise eps={eps}: {p.mean().item():.3f}")
    return 0
