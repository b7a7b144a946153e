"""``r2et explain``: save a PNG of an input's saliency, top-k highlighted."""

from __future__ import annotations

import argparse
from pathlib import Path

from r2et.cli.args import check_k_arg, probe_writable, run_dataset


def cmd_explain(args: argparse.Namespace) -> int:
    """Save a PNG of one input and its saliency with the top-k features highlighted."""
    from r2et._checks import check_finite_model
    from r2et.explain import Explainer
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
    ex = Explainer(args.explainer)
    k = check_k_arg("--k", args.k if args.k is not None else ds.default_k, ds, ex)
    model = run.model.eval()
    scores = ex.scores(model, x[idx], **kw)[0].detach()
    pred = int(model(x[idx], **kw).argmax(1))
    path = plot_explanation(
        ds,
        x[idx][0],
        scores,
        k,
        args.out,
        title=f"{name} {args.split}[{args.index}]: label {int(y[args.index])}, predicted {pred}",
        mask=kw.get("mask"),
    )
    print(f"-> {path}")
    return 0
