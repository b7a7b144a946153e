"""Issue 25's COMPAS check of the activation-pattern bound against the interval bound.

    R2ET_DATA=../shared/data python benchmarks/certify_patterns.py [--n 100] [--k 4]
        [--methods vanilla,r2et] [--preset standard] [--seed 0]

The library's defaults as the issue states them: COMPAS seed 0 (``--seed``), a vanilla model
pre-trained 5 epochs, a copy fine-tuned 3 epochs with each method (``fit`` with the data's
suggestions), the data's own explanation (gradient x input per attribute) and ``k``; the
first ``--n`` test rows, inside the data box. Per model: its test accuracy and distinct
top-k sets among the rows (locality), the deletion gain with its interval (faithfulness),
the median and mean certified l_inf radius with ``bound="interval"`` and
``bound="patterns"`` (Softplus models: intervals only), CPU seconds of each (one torch
thread), and two checks from outside: the inputs, grouped by certified radius (rounded down
to a 2^(1/4) grid), are attacked by the ``--preset`` ensemble at 0.999 x that radius (no
top-k set and no class may change: soundness) and at 2 x it (how many change: the
certificate is not vacuous).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from r2et import EnsembleAttack, evaluate, fit
from r2et.certify import certified_radius
from r2et.data import load_dataset
from r2et.metrics import topk_mask
from r2et.models import build_model


def pretrained_compas(seed: int = 0, epochs: int = 5):
    """The recipe of the certificate studies: COMPAS split with ``seed``, the dataset's
    default model pre-trained ``epochs`` epochs with cross-entropy; ``(ds, model)``."""
    ds = load_dataset("compas", seed=seed)
    torch.manual_seed(seed)
    spec = dict(ds.default_model)
    name = spec.pop("name")
    model = build_model(name, list(ds.input_shape), ds.n_classes, **spec)
    fit(model, "vanilla", ds, epochs=epochs, seed=seed, progress=False)
    return ds, model


def finetuned(base, method: str, ds, seed: int, epochs: int = 3):
    """The model a certificate study scores for ``method``: ``base`` itself for vanilla, else
    a copy fine-tuned ``epochs`` epochs with ``fit`` (a Softplus copy for sp and r2et-sp), in
    eval mode."""
    if method == "vanilla":
        return base.eval()
    return fit(
        copy.deepcopy(base), method, ds, epochs=epochs, seed=seed, progress=False
    ).model.eval()


def explanation_columns(model, ds, ex, k: int, n: int, seed: int) -> str:
    """The markdown cells ``test acc | distinct top-k / n | deletion gain [95% CI]`` of a
    model's unattacked explanation on the first ``n`` test rows: what a radius is worth
    beside it (locality, faithfulness)."""
    clean = evaluate(model, ds, ex, k=k, attacks={}, n=n, seed=seed)  # no attack
    gain, (g_lo, g_hi) = (
        clean["faithfulness"][key] for key in ("deletion_gain", "deletion_gain_ci")
    )
    return (
        f"{clean['accuracy']:.3f} | {clean['locality']['distinct_topk_sets']} / {n} "
        f"| {gain:.3f} [{g_lo:.3f}, {g_hi:.3f}]"
    )


def attacked_changes(model, ds, ex, k, x, radius, factor, preset):
    """Inputs whose top-k set changes under the ensemble at ``factor`` x their radius
    (grouped on a 2^(1/4) grid, rounded down); the attack keeps the prediction."""
    changed = 0
    tried = 0
    buckets = torch.where(radius > 0, torch.floor(4 * torch.log2(radius.clamp_min(1e-12))), -1e9)
    for b in buckets.unique().tolist():
        if b < -1e8:
            continue
        rows = (buckets == b).nonzero().squeeze(1)
        eps = factor * 2 ** (b / 4)
        if factor < 1:
            eps = min(eps, float(radius[rows].min()) * factor)
        atk = EnsembleAttack(ex, k, eps, bounds=ds.bounds, preset=preset, seed=0)
        res = atk(model, x[rows])
        before = topk_mask(res.scores_clean, k)
        after = topk_mask(res.scores_adv, k)
        changed += int((before != after).any(1).sum())
        tried += len(rows)
    return changed, tried


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--methods", default="vanilla,r2et")
    p.add_argument("--preset", default="standard")
    p.add_argument("--seed", type=int, default=0, help="the split, initialisation and training")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ds, base = pretrained_compas(a.seed)
    k = a.k or ds.default_k
    ex = ds.explainer()
    x = ds.test[0][: a.n]
    print(f"COMPAS seed {a.seed}, k = {k}, {len(x)} test rows, {ex.method} per attribute, data box")
    print("| model | test acc | distinct top-k / n | deletion gain [95% CI] | bound "
          "| median radius | mean radius | CPU s | changed at 0.999 r "
          "| changed at 2 r |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method in a.methods.split(","):
        model = finetuned(base, method, ds, a.seed)
        bounds_kinds = ("interval",) if method in ("sp", "r2et-sp") else ("interval", "patterns")
        quality = explanation_columns(model, ds, ex, k, len(x), a.seed)
        for bound in bounds_kinds:  # Softplus: no activation patterns
            t0 = time.process_time()
            res = certified_radius(model, x, ex, k, bound=bound, bounds=ds.bounds)
            cpu = time.process_time() - t0
            r = res.radius.double()
            inside = attacked_changes(model, ds, ex, k, x, r, 0.999, a.preset)
            outside = attacked_changes(model, ds, ex, k, x, r, 2.0, a.preset)
            print(
                f"| {method} | {quality} | {bound} | {r.median():.4f} "
                f"| {r.mean():.4f} | {cpu:.1f} "
                f"| {inside[0]} of {inside[1]} | {outside[0]} of {outside[1]} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
