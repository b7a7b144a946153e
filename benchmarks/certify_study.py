"""Certified versus attacked top-k stability, soundness checks and cost (``docs/certify.md``).

    R2ET_DATA=../shared/data python benchmarks/certify_study.py [--out bench-out/certify-study]
        [--datasets adult,compas,mnist5k] [--methods vanilla,at,r2et,r2et-cert] [--seeds 0,1]
        [--n 200] [--docs docs/certify.md]

For every cell (dataset, training method, seed) the script pre-trains an MLP with plain
cross-entropy (``hidden=[64, 64]`` on the tabular data, ``[128, 128]`` on mnist5k's flattened
pixels: the deterministic certificate needs a ReLU MLP), fine-tunes a copy with the method
(default hyperparameters; on mnist5k the l_inf scales ``at_eps``, ``h`` = 0.1 and
``cert_eps`` = 0.01), and on the first ``--n`` test inputs (mnist5k: ``--n-images``) measures:

* **deterministic** (l_inf, inside the data box): the certified radius of the logit-gradient
  top-k (``ds.default_k``) and the certified P@k lower bound at the radii ``RADII``, beside the
  P@k the ``standard`` :class:`~r2et.EnsembleAttack` reaches at the same radii (an upper bound
  of the worst case); the truth lies between.
* **smoothed** (l2): the randomized-smoothing certificate of the top-k membership under
  ``N(0, σ²)`` (σ = ``SIGMA``; n0 = 64 selection and n = ``--n-smooth`` estimation samples,
  alpha = 0.001): the fraction of inputs whose whole smoothed top-k is certified, the mean
  radius, the certified P@k lower bound at ``SMOOTH_RADII``.
* **soundness**: (a) per input and radius, certified P@k <= attacked P@k (the attack keeps the
  prediction; the certificate covers every point of the ball); (b) inputs grouped by certified
  radius (rounded down to a 2^(1/4) grid) are attacked at that radius: the top-k must never
  move; at 10x the radius the attack should move some (power); (c) for up to ``--n-check``
  inputs with a certified smoothed top-k, the ``fast`` ensemble in l2 on a SmoothGrad surrogate
  (σ, 16 samples) at the radius, then the membership at the attacked point from 2,000 fresh
  samples: a certified feature whose label flips significantly (z > 3.9) is a violation; at 4x
  the radius, flips are counted (power).
* **cost**: seconds of each certificate and of the attack, scaled to 1,000 inputs (one torch
  thread on the shared 2-core machine).

Each cell is written atomically to ``<out>/cells/<cell>.json`` (models in ``<out>/runs/``); a
killed run resumes. ``--docs`` writes the tables between the ``<!-- certify-study -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from r2et import EnsembleAttack, Explainer, build_model, get_method
from r2et._io import atomic_write_json, atomic_write_text
from r2et.certify import certified_radius
from r2et.data import load_dataset
from r2et.metrics import precision_at_k, topk_mask
from r2et.train import fit, load_run, save_run

RADII = {"tabular": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3], "image": [0.001, 0.003, 0.01, 0.03, 0.1]}
SIGMA = {"tabular": 0.1, "image": 0.1}
SMOOTH_RADII = [0.01, 0.03, 0.1, 0.2]
HIDDEN = {"tabular": [64, 64], "image": [128, 128]}
EPOCHS = {"adult": (5, 3), "compas": (5, 3), "mnist5k": (6, 2)}
IMAGE_HP = {"at": {"at_eps": 0.1}, "r2et": {"h": 0.1}, "r2et-cert": {"cert_eps": 0.01}}


def trained(out: Path, dataset: str, method: str, seed: int) -> tuple[Any, Any, float]:
    """(dataset, fine-tuned model, fine-tuning seconds), trained once and cached."""
    ds = load_dataset(dataset, seed=seed)
    pre_dir = out / "runs" / f"{dataset}-pretrain-{seed}"
    run_dir = out / "runs" / f"{dataset}-{method}-{seed}"
    pre_ep, ft_ep = EPOCHS[dataset]
    if not (pre_dir / "config.json").exists():
        torch.manual_seed(seed)
        model = build_model("mlp", list(ds.input_shape), ds.n_classes, hidden=HIDDEN[ds.modality])
        res = fit(model, "vanilla", ds, epochs=pre_ep, seed=seed, progress=False)
        save_run(pre_dir, res.model, res.config, {"val_accuracy": res.best_val_accuracy})
    seconds = 0.0
    if not (run_dir / "config.json").exists():
        model = load_run(pre_dir).model
        hp = IMAGE_HP.get(method, {}) if ds.modality == "image" else {}
        t0 = time.process_time()
        res = fit(model, get_method(method, k=ds.default_k, **hp), ds, epochs=ft_ep, seed=seed,
                  progress=False)  # fmt: skip
        seconds = time.process_time() - t0
        save_run(run_dir, res.model, res.config, {"finetune_seconds": seconds})
    else:
        seconds = json.loads((run_dir / "metrics.json").read_text()).get("finetune_seconds", 0.0)
    return ds, load_run(run_dir).model.eval(), seconds


def _bins(radius: torch.Tensor) -> dict[float, torch.Tensor]:
    """Inputs grouped by their radius rounded down to the grid 2^(j/4)."""
    out: dict[float, list[int]] = {}
    for i, r in enumerate(radius.tolist()):
        if r > 0:
            q = 2.0 ** (math.floor(4 * math.log2(r)) / 4)
            out.setdefault(min(q, r), []).append(i)
    return {q: torch.tensor(ix) for q, ix in out.items()}


def _membership(model, x, ex, k, sigma, n, seed) -> torch.Tensor:
    """Membership counts of the top-k under n fresh noise draws, (N, F)."""
    gen = torch.Generator().manual_seed(seed)
    counts = None
    for lo in range(0, n, 250):
        reps = min(250, n - lo)
        z = x.unsqueeze(0) + sigma * torch.randn(reps, *x.shape, generator=gen, dtype=x.dtype)
        s = ex.scores(model, z.reshape(-1, *x.shape[1:]))
        m = topk_mask(s, k).view(reps, x.shape[0], -1).sum(0)
        counts = m if counts is None else counts + m
    return counts


def run_cell(
    out: Path, dataset: str, method: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    cell = f"{dataset}-{method}-{seed}"
    ds, model, ft_seconds = trained(out, dataset, method, seed)
    image = ds.modality == "image"
    n = args.n_images if image else args.n
    x = ds.test[0][:n].float()
    k = ds.default_k
    ex = Explainer("grad")
    rec: dict[str, Any] = {"cell": cell, "dataset": dataset, "method": method, "seed": seed}
    with torch.no_grad():
        rec["accuracy"] = float((model(ds.test[0]).argmax(1) == ds.test[1]).float().mean())
    s0 = ex.scores(model, x)
    rec["distinct_topk"] = len({tuple(sorted(r)) for r in s0.topk(k, 1).indices.tolist()})
    rec["n"] = n
    rec["finetune_seconds"] = ft_seconds
    radii = RADII[ds.modality]

    # deterministic certificate and the ensemble at the same radii
    t0 = time.process_time()
    det = certified_radius(model, x, ex, k, radii=radii, bounds=ds.bounds, max_radius=1.0)
    rec["det_seconds"] = time.process_time() - t0
    rec["det_radius"] = det.radius.tolist()
    rec["det_curve"] = det.p_at_k.mean(0).tolist()
    rec["radii"] = radii
    attacked, atk_seconds, viol_grid = [], 0.0, 0
    for j, r in enumerate(radii):
        t0 = time.process_time()
        res = EnsembleAttack(ex, k, r, bounds=ds.bounds, preset=args.preset, seed=seed)(model, x)
        atk_seconds += time.process_time() - t0
        attacked.append(float(res.p_at_k.mean()))
        viol_grid += int((det.p_at_k[:, j] > res.p_at_k.double() + 1e-9).sum())
    rec["attacked_curve"] = attacked
    rec["attack_seconds_per_radius"] = atk_seconds / len(radii)
    rec["det_violations_grid"] = viol_grid
    viol_r, broken_far, attacked_at_r = 0, 0, 0
    for q, idx in _bins(det.radius).items():
        xb = x[idx]
        p = EnsembleAttack(ex, k, q, bounds=ds.bounds, preset=args.preset, seed=seed)(model, xb)
        viol_r += int((p.p_at_k < 1).sum())
        attacked_at_r += len(idx)
        far = EnsembleAttack(ex, k, 10 * q, bounds=ds.bounds, preset="fast", seed=seed)(model, xb)
        broken_far += int((far.p_at_k < 1).sum())
    rec["det_attacked_at_radius"] = attacked_at_r
    rec["det_violations_at_radius"] = viol_r
    rec["det_broken_at_10x"] = broken_far

    # smoothed certificate
    sigma = SIGMA[ds.modality]
    t0 = time.process_time()
    sm = certified_radius(model, x, ex, k, "smoothed", sigma=sigma, n0=64, n=args.n_smooth,
                          alpha=0.001, radii=SMOOTH_RADII, seed=seed)  # fmt: skip
    rec["smooth_seconds"] = time.process_time() - t0
    rec["smooth_sigma"] = sigma
    rec["smooth_n"] = args.n_smooth
    rec["smooth_radius"] = sm.radius.tolist()
    rec["smooth_curve"] = sm.p_at_k.mean(0).tolist()
    rec["smooth_radii"] = SMOOTH_RADII
    rec["smooth_vs_plain_p_at_k"] = float(
        precision_at_k(sm.membership.double(), s0.double(), k).mean()
    )
    rows = torch.nonzero(sm.radius > 0).flatten()[: args.n_check]
    surrogate = Explainer("smoothgrad", sigma=sigma, sigma_mode="absolute", n_samples=16, seed=0)
    n_fresh, z = 2000, 3.9
    tol = z * (0.25 / n_fresh) ** 0.5
    viol_s, flipped_far = 0, 0
    for i in rows.tolist():
        xi = x[i : i + 1]
        for scale in (1.0, 4.0):
            r = float(sm.radius[i]) * scale
            atk = EnsembleAttack(surrogate, k, r, norm="l2", preset="fast", seed=seed + i)
            x_adv = atk(model, xi).x_adv
            m = _membership(model, x_adv, ex, k, sigma, n_fresh, seed=1000 + i)[0] / n_fresh
            lab = sm.label_in[i]
            wrong = torch.where(lab, m < 0.5 - tol, m > 0.5 + tol)
            if scale == 1.0:
                viol_s += int(wrong.any())
            else:
                flipped_far += int(wrong.any())
    rec["smooth_checked"] = len(rows)
    rec["smooth_violations"] = viol_s
    rec["smooth_flipped_at_4x"] = flipped_far
    return rec


def _mean(vals: list[float]) -> float:
    return sum(vals) / len(vals) if vals else float("nan")


def _group(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault((r["dataset"], r["method"]), []).append(r)
    return out


def tables(records: list[dict[str, Any]]) -> str:
    groups = _group(records)
    lines = []
    by_ds: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    for (d, m), rs in groups.items():
        by_ds.setdefault(d, []).append((m, rs))
    lines.append("### Deterministic certificate (l_inf, inside the data box) vs the ensemble\n")
    lines.append(
        "Cells: certified P@k (lower bound) / attacked P@k (`standard` ensemble, upper bound), "
        "mean over inputs and seeds.\n"
    )
    for d, items in by_ds.items():
        radii = items[0][1][0]["radii"]
        head = "| method | seeds | n | acc | distinct top-k | median radius | mean radius | "
        head += " | ".join(f"r = {r:g}" for r in radii) + " |"
        lines += [f"\n**{d}**\n", head, "|" + "---|" * (7 + len(radii))]
        for m, rs in items:
            rad = torch.tensor([v for r in rs for v in r["det_radius"]])
            cells = [
                f"{_mean([r['det_curve'][j] for r in rs]):.3f} / "
                f"{_mean([r['attacked_curve'][j] for r in rs]):.3f}"
                for j in range(len(radii))
            ]
            lines.append(
                f"| {m} | {len(rs)} | {rs[0]['n']} | {_mean([r['accuracy'] for r in rs]):.3f} | "
                f"{_mean([r['distinct_topk'] for r in rs]):.0f} | {float(rad.median()):.4f} | "
                f"{float(rad.mean()):.4f} | " + " | ".join(cells) + " |"
            )
    lines.append("\n### Smoothed certificate (l2, randomized smoothing of the top-k membership)\n")
    lines.append(
        "Whole set: fraction of inputs whose whole smoothed top-k is certified; radius: mean "
        "over inputs (0 where not certified); then the certified P@k lower bound at each l2 "
        "radius; agreement: mean P@k between the smoothed top-k and the plain saliency top-k.\n"
    )
    radii = records[0]["smooth_radii"]
    head = "| dataset | method | σ | n | whole set | mean radius | "
    head += " | ".join(f"r = {r:g}" for r in radii) + " | agreement |"
    lines += [head, "|" + "---|" * (7 + len(radii))]
    for (d, m), rs in groups.items():
        rad = torch.tensor([v for r in rs for v in r["smooth_radius"]])
        curve = " | ".join(
            f"{_mean([r['smooth_curve'][j] for r in rs]):.3f}" for j in range(len(radii))
        )
        lines.append(
            f"| {d} | {m} | {rs[0]['smooth_sigma']:g} | {rs[0]['smooth_n']} | "
            f"{float((rad > 0).double().mean()):.2f} | {float(rad.mean()):.3f} | {curve} | "
            f"{_mean([r['smooth_vs_plain_p_at_k'] for r in rs]):.3f} |"
        )
    lines.append("\n### Soundness (counts summed over seeds)\n")
    lines.append(
        "| dataset | method | inputs x radii: certified > attacked | attacked at their radius | "
        "moved there | moved at 10x | smoothed checked | label flips inside | flips at 4x |"
    )
    lines.append("|" + "---|" * 9)
    for (d, m), rs in groups.items():
        keys = ("det_violations_grid", "det_attacked_at_radius", "det_violations_at_radius",
                "det_broken_at_10x", "smooth_checked", "smooth_violations",
                "smooth_flipped_at_4x")  # fmt: skip
        s = {key: sum(r[key] for r in rs) for key in keys}
        total = sum(r["n"] * len(r["radii"]) for r in rs)
        lines.append(
            f"| {d} | {m} | {s['det_violations_grid']} of {total} | "
            f"{s['det_attacked_at_radius']} | {s['det_violations_at_radius']} | "
            f"{s['det_broken_at_10x']} | {s['smooth_checked']} | {s['smooth_violations']} | "
            f"{s['smooth_flipped_at_4x']} |"
        )
    lines.append("\n### Cost per 1,000 inputs (CPU seconds, one torch thread, from the cells)\n")
    lines.append(
        "| dataset | method | deterministic | smoothed (n0 + n samples) | ensemble `standard`, "
        "one radius | fine-tuning (s, whole run) |"
    )
    lines.append("|---|---|---|---|---|---|")
    for (d, m), rs in groups.items():
        per = 1000 / rs[0]["n"]
        lines.append(
            f"| {d} | {m} | {per * _mean([r['det_seconds'] for r in rs]):.1f} | "
            f"{per * _mean([r['smooth_seconds'] for r in rs]):.1f} | "
            f"{per * _mean([r['attack_seconds_per_radius'] for r in rs]):.1f} | "
            f"{_mean([r['finetune_seconds'] for r in rs]):.1f} |"
        )
    return "\n".join(lines) + "\n"


def timing(out: Path, datasets: list[str], threads: int = 2, n: int = 1000) -> str:
    """Wall-clock seconds for 1,000 inputs with ``threads`` torch threads (the vanilla model
    of seed 0): both certificates and, for scale, one radius of the ``standard`` ensemble."""
    torch.set_num_threads(threads)
    lines = [
        f"\n### Cost per 1,000 inputs, {threads} torch thread(s) (wall-clock seconds)\n",
        "| dataset | model | deterministic (20 bisection steps + 6 radii) | smoothed "
        "(n0 = 64, n = 1,000) | ensemble `standard`, one radius |",
        "|---|---|---|---|---|",
    ]
    for d in datasets:
        ds, model, _ = trained(out, d, "vanilla", 0)
        x, ex, k = ds.test[0][:n].float(), Explainer("grad"), ds.default_k
        rad = RADII[ds.modality]
        t0 = time.perf_counter()
        certified_radius(model, x, ex, k, radii=rad, bounds=ds.bounds)
        t1 = time.perf_counter()
        certified_radius(model, x, ex, k, "smoothed", sigma=SIGMA[ds.modality], n=1000)
        t2 = time.perf_counter()
        EnsembleAttack(ex, k, rad[2], bounds=ds.bounds, preset="standard")(model, x)
        t3 = time.perf_counter()
        hidden = "x".join(map(str, HIDDEN[ds.modality]))
        lines.append(
            f"| {d} | MLP {hidden}, {x[0].numel()} inputs | {t1 - t0:.1f} | {t2 - t1:.1f} | "
            f"{t3 - t2:.1f} |"
        )
        print(lines[-1], flush=True)
    torch.set_num_threads(1)
    return "\n".join(lines) + "\n"


def write_docs(path: Path, text: str, n_cells: int) -> None:
    """Replace the text between the ``<!-- certify-study -->`` markers of ``path``."""
    start_m, end_m = "<!-- certify-study -->", "<!-- /certify-study -->"
    body = (
        f"{start_m}\nGenerated by `benchmarks/certify_study.py` on {n_cells} cells "
        f"({time.strftime('%Y-%m-%d')}).\n\n{text}{end_m}"
    )
    doc = path.read_text() if path.exists() else f"{start_m}\n{end_m}\n"
    start, end = doc.index(start_m), doc.index(end_m)
    atomic_write_text(path, doc[:start] + body + doc[end + len(end_m) :])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench-out/certify-study")
    p.add_argument("--datasets", default="adult,compas,mnist5k")
    p.add_argument("--methods", default="vanilla,at,r2et,r2et-cert")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--n-smooth", type=int, default=1000)
    p.add_argument("--n-check", type=int, default=10)
    p.add_argument("--preset", default="standard")
    p.add_argument("--docs", default=None)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--timing", default=None, help="datasets to time 1,000 inputs on")
    p.add_argument("--timing-threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("R2ET_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    out = Path(args.out)
    records = []
    for d in args.datasets.split(","):
        for m in args.methods.split(","):
            for s in args.seeds.split(","):
                cell = f"{d}-{m}-{s}"
                f = out / "cells" / f"{cell}.json"
                if not f.exists() and not args.report_only:
                    print(f"{cell}: training and certifying", flush=True)
                    t0 = time.time()
                    atomic_write_json(f, run_cell(out, d, m, int(s), args))
                    print(f"{cell}: {time.time() - t0:.0f}s", flush=True)
                if f.exists():
                    records.append(json.loads(f.read_text()))
    if not records:
        print("no finished cells", file=sys.stderr)
        return 1
    text = tables(records)
    timing_file = out / "timing.md"
    if args.timing:
        atomic_write_text(
            timing_file, timing(out, args.timing.split(","), threads=args.timing_threads)
        )
    if timing_file.exists():
        text += timing_file.read_text()
    atomic_write_text(out / "tables.md", text)
    print(text)
    if args.docs:
        write_docs(Path(args.docs), text, len(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
