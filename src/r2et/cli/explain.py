"""``r2et explain``: save a PNG of an input's saliency, top-k highlighted."""

from __future__ import annotations

import argparse
from pathlib import Path

from r2et.cli.args import check_k_arg, explainer_of_run, probe_writable, run_dataset


def cmd_explain(args: argparse.Namespace) -> int:
    """Save a PNG of one input and its saliency with the top-k features highlighted."""
    import torch

    from r2et._checks import check_finite_model
    from r2et.describe import explain_row
    from r2et.plotting import plot_explanation
    from r2et.runs import load_run

    probe_writable("--out", Path(args.out), "file")
    run = load_run(args.run, trust_factory=args.trust_factory)
    check_finite_model(run.model, name=f"the model of {args.run}")
    name, ds = run_dataset(run.config, args)
    x, y, kw = ds.split(args.split)
    if not 0 <= args.index < len(x):
        raise ValueError(f"--index must lie in 0..{len(x) - 1} for the {args.split} split")
    idx = slice(args.index, args.index + 1)
    from r2et._kwargs import take_rows

    kw = take_rows(kw, idx, len(x))
    ex, trained_k, _ = explainer_of_run(run.config, args, ds, name)
    k = args.k if args.k is not None else trained_k if trained_k is not None else ds.default_k
    k = check_k_arg("--k", k, ds, ex)
    model = run.model.eval()
    row = explain_row(model, ds, args.index, split=args.split, explainer=ex, k=k)
    scores = torch.zeros(len(row["ranking"]))
    for entry in row["ranking"]:
        scores[entry["position"]] = entry["score"]
    groups = ex.config().get("groups")
    name = ds.name or name
    head = (
        f"{name} {args.split}[{args.index}]: label {row['label']}, predicted "
        f"{row['predicted']} (p = {row['probability']:.2f})"
    )
    path = plot_explanation(
        ds, x[idx][0], scores, k, args.out, title=head, mask=kw.get("mask"), groups=groups
    )
    print(head)
    what = "attributes" if groups else "columns" if ds.modality == "tabular" else "features"
    print(f"top-{k} ({ex.method}, {what}; the row's own values):")
    for entry in row["ranking"][:k]:
        print(f"  {entry['rank']}. {entry['unit']}  ({entry['score']:.4g})")
    print(f"-> {path}")
    return 0
