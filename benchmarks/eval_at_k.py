"""Re-evaluate the fine-tuned models of a benchmark folder at another k.

    python benchmarks/eval_at_k.py bench-out/cifar10 --k 20 --n 30 --out docs/results/x.json

Models are trained once, at the run's k; this script asks how stable and faithful their
explanations are when a user looks at a different number of top features. For every saved
model (``models/<key>``, or only ``--seeds``) it runs :func:`r2et.evaluate` on the first
``--n`` test inputs with the run's ensemble preset, eps and data box, at ``--k``, and prints a
markdown table (mean ± std over seeds) of test accuracy, ensemble P@k, deletion gain and
occlusion agreement. ``--out`` also writes the per-model rows as JSON (atomically).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from r2et.attacks import EnsembleAttack
from r2et.bench.config import BenchConfig, dataset_settings, load_bench_dataset
from r2et.evaluation import evaluate
from r2et.explain import Explainer
from r2et.train import load_run

COLUMNS = (
    ("accuracy", "Test acc"),
    ("p_at_k", "P@k ensemble"),
    ("deletion_gain", "Deletion gain"),
    ("occlusion_agreement", "Occlusion agr."),
)


def _mean_std(vals: list[float]) -> str:
    m = sum(vals) / len(vals)
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return f"{m:.3f} ± {s:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="benchmark output folder (config.json, models/)")
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--n", type=int, default=None, help="test inputs (default: the run's n)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: all)")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    cfg = BenchConfig.from_dict(json.loads((args.run / "config.json").read_text()))
    seeds = None if args.seeds is None else {int(s) for s in args.seeds.split(",")}
    n = args.n or int(cfg.evaluate["n"])
    preset = cfg.evaluate.get("preset", "standard")
    ex = Explainer("grad")
    rows = []
    for folder in sorted((args.run / "models").iterdir()):
        cell = json.loads((args.run / "cells" / f"{folder.name}.json").read_text())
        if seeds is not None and cell["seed"] not in seeds:
            continue
        if args.methods is not None and cell["method"] not in args.methods.split(","):
            continue
        model = load_run(folder).model.eval()
        ds = load_bench_dataset(cell["dataset"], cell["seed"], cfg)
        _, eps, _ = dataset_settings(cfg, ds)
        bounds = ds.bounds if cfg.evaluate.get("box", True) else None
        atk = EnsembleAttack(ex, args.k, eps, bounds=bounds, preset=preset, seed=cell["seed"])
        m = evaluate(model, ds, ex, k=args.k, attacks={"ensemble": atk}, n=n, seed=cell["seed"])
        row = {
            "dataset": cell["dataset"],
            "method": cell["method"],
            "seed": cell["seed"],
            "k": args.k,
            "n": n,
            "eps": eps,
            "preset": preset,
            "accuracy": m["accuracy"],
            "p_at_k": m["attacks"]["ensemble"]["p_at_k_mean"],
            "deletion_gain": m["faithfulness"]["deletion_gain"],
            "occlusion_agreement": m["faithfulness"].get("occlusion_agreement", float("nan")),
            "seconds": m["attacks"]["ensemble"]["seconds"],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    by = defaultdict(list)
    for r in rows:
        by[(r["dataset"], r["method"])].append(r)
    order = {m: i for i, m in enumerate(cfg.methods)}
    print(f"\n| Method | {' | '.join(h for _, h in COLUMNS)} |")
    print("|---|" + "---:|" * len(COLUMNS))
    for (_, method), rs in sorted(by.items(), key=lambda kv: order.get(kv[0][1], 99)):
        cells = " | ".join(_mean_std([r[c] for r in rs]) for c, _ in COLUMNS)
        print(f"| {method} | {cells} |")
    if args.out is not None:
        from r2et._io import atomic_write_json

        atomic_write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
