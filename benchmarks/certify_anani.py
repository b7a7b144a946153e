"""The smoothed certificate in Anani et al.'s setting and reporting (issue 25; docs/certify.md).

    R2ET_DATA=../shared/data python benchmarks/certify_anani.py [--out bench-out/certify-anani]
        [--datasets mnist5k,cifar10-5k] [--methods vanilla,r2et] [--n 100] [--docs docs/certify.md]

Anani et al. ("Pixel-level Certified Explanations via Randomized Smoothing", ICML 2025; their
public code, ``configs/imagenet/imagenet.yaml`` and ``certifier/fast_certify.py``) sparsify an
attribution map to its top K% pixels, draw 100 Gaussian noise samples per image in [0, 1] pixel
space, take each pixel's label (in / out of the top K%) from the first n0 = 10 maps, count it
in the other 90, and certify the pixel when the one-sided binomial test of ``p <= τ = 0.75``
rejects at ``alpha / N`` (alpha = 0.001, N pixels); a certified pixel keeps its label for
every ``‖δ‖₂ < σ Φ⁻¹(τ)``: 0.101, 0.169 and 0.223 for their σ = 0.15, 0.25, 0.33. Their metric
is the share of all pixels certified (labels in and out), the rest abstaining.

r2et's ``certified_radius(..., method="smoothed", n0=10, n=90, alpha=0.001)`` computes the same
statistics (selection by majority of n0 maps, one-sided Clopper-Pearson bound ``p_j`` at
``alpha / F``); ``p_j >= τ`` is exactly their test passing, so
:func:`r2et.certify.smoothed.certified_share` at ``σ Φ⁻¹(τ)`` is their "% certified pixels"
(the script re-derives their decision from the counts with scipy and reports the
disagreements: 0 expected). k is K% of the pixels by their percentile rule
(:func:`~r2et.certify.smoothed.top_fraction_k`).

Models: the dataset's default CNN (``cnn``), pre-trained ``--pre-epochs`` with cross-entropy
(seed 0), a copy fine-tuned ``--ft-epochs`` with each of ``--methods`` (library defaults; r2et
at the dataset's default k). Explanation: logit-gradient saliency (``Explainer("grad")``, |g|
summed over channels) of the true label, the first ``--n`` test images. Settings: K = 50% at
σ = 0.15, 0.25, 0.33, and K = 30%, 10% at σ = 0.15; the noise is seeded (0) so every K at one
σ sees the same noisy images. CPU seconds are ``time.process_time`` of one torch thread.

Results: ``<out>/cells/<dataset>-<method>.json`` per model (atomic; a killed run resumes),
``<out>/results.json`` and ``<out>/tables.md``; ``--docs`` replaces the text between the
``<!-- certify-anani -->`` markers of that file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from scipy.stats import binom, norm

from r2et import Explainer, fit, get_method
from r2et._io import atomic_write_json, atomic_write_text
from r2et.certify import certified_radius
from r2et.certify.smoothed import certified_share, top_fraction_k
from r2et.data import load_dataset
from r2et.models import build_model
from r2et.train import load_run, save_run

#: (σ, K%) pairs: Anani et al.'s three radii at K = 50%, and K = 30%, 10% at the smallest.
SETTINGS = [(0.15, 50), (0.25, 50), (0.33, 50), (0.15, 30), (0.15, 10)]
TAU, ALPHA, N0, N_EST = 0.75, 0.001, 10, 90
MARK = "<!-- certify-anani -->", "<!-- /certify-anani -->"


def trained(out: Path, dataset: str, method: str, a: argparse.Namespace) -> tuple[Any, Any]:
    """(dataset, fine-tuned model), trained once and cached under ``<out>/runs``."""
    ds = load_dataset(dataset, seed=0)
    pre_dir, run_dir = out / "runs" / f"{dataset}-pretrain", out / "runs" / f"{dataset}-{method}"
    if not (pre_dir / "config.json").exists():
        torch.manual_seed(0)
        spec = dict(ds.default_model)
        model = build_model(spec.pop("name"), list(ds.input_shape), ds.n_classes, **spec)
        t0 = time.process_time()
        res = fit(model, "vanilla", ds, epochs=a.pre_epochs, seed=0, progress=False)
        secs = time.process_time() - t0
        save_run(pre_dir, res.model, res.config, {"train_seconds": secs})
    if not (run_dir / "config.json").exists():
        model = load_run(pre_dir).model
        t0 = time.process_time()
        res = fit(model, get_method(method, k=ds.default_k), ds, epochs=a.ft_epochs, seed=0,
                  progress=False)  # fmt: skip
        secs = time.process_time() - t0
        save_run(run_dir, res.model, res.config, {"train_seconds": secs})
    return ds, load_run(run_dir).model.eval()


def run_cell(out: Path, dataset: str, method: str, a: argparse.Namespace) -> dict[str, Any]:
    ds, model = trained(out, dataset, method, a)
    x, y = ds.test[0][: a.n].float(), ds.test[1][: a.n]
    n_feat = x.shape[-2] * x.shape[-1]
    with torch.no_grad():
        acc_all = float((model(ds.test[0].float()).argmax(1) == ds.test[1]).float().mean())
        acc_n = float((model(x).argmax(1) == y).float().mean())
    ex = Explainer("grad")
    rec: dict[str, Any] = {
        "dataset": dataset,
        "method": method,
        "n_images": len(x),
        "image_shape": list(x.shape[1:]),
        "pixels": n_feat,
        "test_accuracy": acc_all,
        "accuracy_on_images": acc_n,
        "settings": [],
    }
    for sigma, pct in SETTINGS:
        k = top_fraction_k(pct / 100, n_feat)
        r_tau = sigma * float(norm.ppf(TAU))
        t0 = time.process_time()
        res = certified_radius(model, x, ex, k, "smoothed", target=y, sigma=sigma, n0=N0,
                               n=N_EST, alpha=ALPHA, batch_size=a.batch_size, seed=0,
                               radii=[r_tau])  # fmt: skip
        secs = time.process_time() - t0
        sh = certified_share(res, [r_tau])
        # their decision from the counts: one-sided binomial test of p <= tau at alpha / F
        est = torch.round(res.membership * N_EST).long()
        hits = torch.where(res.label_in, est, N_EST - est).cpu().numpy()
        passed = torch.from_numpy(binom.sf(hits - 1, N_EST, TAU) <= ALPHA / n_feat)
        ours = (res.feature_radius >= r_tau) & (res.feature_radius > 0)
        rec["settings"].append(
            {
                "sigma": sigma,
                "K_percent": pct,
                "k": k,
                "radius": r_tau,
                "certified": float(sh["certified"][:, 0].mean()),
                "certified_in": float(sh["in"][:, 0].mean()),
                "certified_out": float(sh["out"][:, 0].mean()),
                "abstain": float(sh["abstain"][:, 0].mean()),
                "never": float(sh["never"].mean()),
                "certified_per_image": sh["certified"][:, 0].tolist(),
                "mean_feature_radius": float(res.feature_radius.double().mean()),
                "disagree_with_binomial_test": int((ours.cpu() != passed).sum()),
                "cpu_seconds_per_image": secs / len(x),
            }
        )
        print(f"  {dataset} {method} sigma={sigma} K={pct}%: "
              f"{100 * rec['settings'][-1]['certified']:.1f}% certified, "
              f"{secs / len(x):.2f} CPU s/image", flush=True)  # fmt: skip
    return rec


def tables(cells: list[dict[str, Any]]) -> str:
    lines = [
        f"Generated by `benchmarks/certify_anani.py` ({date.today().isoformat()}); "
        f"{cells[0]['n_images']} test images per dataset, 100 noise samples per image "
        f"(n0 = {N0} + n = {N_EST}), τ = {TAU}, alpha = {ALPHA} (Bonferroni over the pixels), "
        "logit-gradient saliency of the true label. Certified: share of all pixels certified "
        "at radius σ Φ⁻¹(τ) (in + out of the top K%); abstain: the rest, of which "
        '"p ≤ 1/2" abstain at every radius. Mean over images, in %.',
        "",
        "**K = 50% of the pixels, Anani et al.'s three radii**",
        "",
        "| dataset | method | test acc | σ | radius | certified | in | out | abstain "
        "| p ≤ 1/2 | CPU s / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(c: dict[str, Any], s: dict[str, Any], first: str) -> str:
        return (
            f"| {c['dataset']} | {c['method']} | {c['test_accuracy']:.3f} | {first} "
            f"| {s['radius']:.3f} | {100 * s['certified']:.1f} | {100 * s['certified_in']:.1f} "
            f"| {100 * s['certified_out']:.1f} | {100 * s['abstain']:.1f} "
            f"| {100 * s['never']:.1f} | {s['cpu_seconds_per_image']:.2f} |"
        )

    for c in cells:
        for s in c["settings"]:
            if s["K_percent"] == 50:
                lines.append(row(c, s, f"{s['sigma']:.2f}"))
    lines += [
        "",
        "**Radius 0.101 (σ = 0.15), K = 50 / 30 / 10% of the pixels**",
        "",
        "| dataset | method | test acc | K (k pixels) | radius | certified | in | out | abstain "
        "| p ≤ 1/2 | CPU s / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        for s in c["settings"]:
            if s["sigma"] == 0.15:
                lines.append(row(c, s, f"{s['K_percent']}% ({s['k']})"))
    dis = sum(s["disagree_with_binomial_test"] for c in cells for s in c["settings"])
    tot = sum(c["pixels"] * c["n_images"] for c in cells) * len(SETTINGS)
    lines += [
        "",
        f"Pixels where r2et's radius test and Anani et al.'s binomial test (recomputed from "
        f"the counts with scipy) disagree: {dis} of {tot}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench-out/certify-anani")
    p.add_argument("--datasets", default="mnist5k,cifar10-5k")
    p.add_argument("--methods", default="vanilla,r2et")
    p.add_argument("--n", type=int, default=100, help="test images per dataset")
    p.add_argument("--pre-epochs", type=int, default=8)
    p.add_argument("--ft-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1000, help="noisy rows per forward pass")
    p.add_argument("--docs", default=None, help="a markdown file with the certify-anani markers")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    cells = []
    for dataset in a.datasets.split(","):
        for method in a.methods.split(","):
            path = out / "cells" / f"{dataset}-{method}.json"
            if path.exists():
                rec = json.loads(path.read_text())
            else:
                rec = run_cell(out, dataset, method, a)
                atomic_write_json(path, rec)
            cells.append(rec)
    text = tables(cells)
    print(text)
    meta = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "settings": SETTINGS,
        "tau": TAU,
        "alpha": ALPHA,
        "n0": N0,
        "n": N_EST,
        "torch_threads": 1,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_seconds_this_process": time.process_time(),
        "cpu_seconds_certificates": sum(
            s["cpu_seconds_per_image"] * c["n_images"] for c in cells for s in c["settings"]
        ),
        "cpu_seconds_training": {
            f.parent.name: json.loads(f.read_text()).get("train_seconds")
            for f in sorted((out / "runs").glob("*/metrics.json"))
        },
    }
    atomic_write_json(out / "results.json", {"meta": meta, "cells": cells})
    atomic_write_text(out / "tables.md", text)
    if a.docs:
        doc = Path(a.docs).read_text(encoding="utf-8")
        head, sep, rest = doc.partition(MARK[0])
        _, sep2, tail = rest.partition(MARK[1])
        if not (sep and sep2):
            raise SystemExit(f"{a.docs} has no {MARK[0]} ... {MARK[1]} block")
        atomic_write_text(a.docs, f"{head}{MARK[0]}\n{text}{MARK[1]}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
