"""Issue 25: the deterministic (interval) certificate on the library's small CNN on mnist5k.

    R2ET_DATA=../shared/data python benchmarks/certify_cnn.py [--n 100] [--k 50]
        [--methods vanilla,r2et] [--pools max,avg] [--pre-epochs 6] [--epochs 2]
        [--preset standard]

Seed 0, one torch thread. The ``cnn`` model entry (:class:`~r2et.models.cnn.SmallCNN`:
conv 3x3 (32) → ReLU → maxpool 2 → conv 3x3 (64) → ReLU → maxpool 2 → Linear 128 → ReLU →
Linear 10; ``--pools avg``: the same entry with ``pool="avg"``, both ``MaxPool2d(2)``
replaced by ``AvgPool2d(2)``) is pre-trained with ``fit(..., "vanilla")`` for
``--pre-epochs`` epochs (the ``vanilla`` row), and a copy fine-tuned ``--epochs`` epochs with
each other method at the data's defaults (as ``benchmarks/certify_study.py`` does on
mnist5k). Gradient saliency of the
logit (the data's own explainer), ``k`` = the data's ``default_k`` (50 pixels); the first ``--n``
test images, certified inside the pixel box [0, 1] with ``certified_radius(...,
bounds=ds.bounds)`` (``bound="patterns"`` is the default; a CNN falls back to the interval
bound, as the result's ``params`` say).

Per model: test accuracy (all 1,000 test images), the share of inputs with a positive radius,
the median and quartiles of the certified l_inf radius, CPU seconds (``time.process_time``) of
the certificate for the ``--n`` inputs; and from outside: the ``--preset`` ensemble attacking
the certified inputs at 0.999 x and at 2 x their radius (inputs grouped on a 2^(1/4) grid of
radii, rounded down; the attack keeps the prediction; no top-k set may move at 0.999 x), and
how many inputs have their top-k moved by random noise of l_inf size 1e-6 inside the box (200
draws each): for those the exact radius is at most 1e-6, whatever the method (exact max-pool
ties on the black background: see ``docs/certify.md``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from certify_patterns import attacked_changes  # noqa: E402

from r2et import fit  # noqa: E402
from r2et.certify import certified_radius  # noqa: E402
from r2et.data import load_dataset  # noqa: E402
from r2et.metrics import topk_mask  # noqa: E402
from r2et.models import build_model  # noqa: E402


def moved_by_noise(model, ds, ex, k, x, size=1e-6, draws=200):
    """Inputs whose top-k set changes at some of ``draws`` random points ``x + u``,
    ``u ~ U[0, size]^d`` clipped to the data box (pixels at 0 can only grow)."""
    gen = torch.Generator().manual_seed(0)
    moved = 0
    with torch.no_grad():
        t = model(x).argmax(1)
    s0 = topk_mask(ex.scores(model, x, t), k)
    lo, hi = ds.bounds
    for i in range(len(x)):
        u = torch.rand(draws, *x.shape[1:], generator=gen, dtype=x.dtype) * size
        pts = (x[i] + u).clamp(lo, hi)
        s = topk_mask(ex.scores(model, pts, t[i].expand(draws)), k)
        moved += int((s != s0[i]).any(1).any())
    return moved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--methods", default="vanilla,r2et")
    p.add_argument("--pools", default="max,avg")
    p.add_argument("--pre-epochs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--preset", default="standard")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ds = load_dataset("mnist5k", seed=0)
    k = a.k or ds.default_k
    ex = ds.explainer()
    spec = dict(ds.default_model)
    name = spec.pop("name")
    x = ds.test[0][: a.n]
    print(
        f"mnist5k seed 0, model {name}, k = {k}, {len(x)} test images, {ex.method} saliency, "
        f"pixel box; `{a.preset}` ensemble; one torch thread"
    )
    print(
        "| model | method | test acc | radius > 0 | median radius | quartiles "
        "| CPU s / 100 inputs | moved at 0.999 r | moved at 2 r | moved by 1e-6 noise |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pool in a.pools.split(","):
        torch.manual_seed(0)
        base = build_model(name, list(ds.input_shape), ds.n_classes, **{**spec, "pool": pool})
        t0 = time.process_time()
        fit(base, "vanilla", ds, epochs=a.pre_epochs, seed=0, progress=False)
        pre_s = time.process_time() - t0
        label = f"{name} ({pool}-pool)"
        for method in a.methods.split(","):
            model = base if method == "vanilla" else copy.deepcopy(base)
            t0 = time.process_time()
            if method != "vanilla":
                model = fit(model, method, ds, epochs=a.epochs, seed=0, progress=False).model
            fit_s = pre_s if method == "vanilla" else time.process_time() - t0
            model.eval()
            with torch.no_grad():
                xt, yt = ds.test
                acc = float((model(xt).argmax(1) == yt).double().mean())
            t0 = time.process_time()
            res = certified_radius(model, x, ex, k, bounds=ds.bounds)
            cpu = (time.process_time() - t0) * 100 / len(x)
            r = res.radius.double()
            qs = torch.tensor([0.25, 0.5, 0.75], dtype=r.dtype)
            q1, med, q3 = (float(v) for v in r.quantile(qs))
            inside = attacked_changes(model, ds, ex, k, x, r, 0.999, a.preset)
            outside = attacked_changes(model, ds, ex, k, x, r, 2.0, a.preset)
            noise = moved_by_noise(model, ds, ex, k, x)
            print(
                f"| {label} | {method} | {acc:.3f} | {int((r > 0).sum())} / {len(x)} "
                f"| {med:.2e} | [{q1:.2e}, {q3:.2e}] | {cpu:.1f} "
                f"| {inside[0]} of {inside[1]} | {outside[0]} of {outside[1]} "
                f"| {noise} of {len(x)} |",
                flush=True,
            )
            pos = float(r[r > 0].median()) if bool((r > 0).any()) else 0.0
            print(
                f"  ({label} {method}: bound {res.params['bound']}, network "
                f"{res.params['network']}, training {fit_s:.0f} CPU s, median over inputs "
                f"with radius > 0 {pos:.2e})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
