"""What the top-k of a tabular model says: faithfulness, locality and one-hot columns on Adult.

    R2ET_DATA=../shared/data python benchmarks/faithfulness_adult.py \
        [--runs bench-out/attack-study/runs] [--methods vanilla,r2et,r2et-mm] [--n 300] \
        [--docs docs/faithfulness.md]

For each fine-tuned Adult model (``<runs>/adult-<method>-0``, as trained by
``benchmarks/attack_study.py``) and each explainer — logit gradient (``grad``) and
gradient x input (``grad_x_input``), ranking the 108 encoded columns (k = 8) or the 14
attributes (``groups``, k = 4) — the first ``--n`` test inputs get: the ``fast`` ensemble's
P@k (l_inf 0.3, inside the data box), ``deletion_gain`` and ``occlusion_agreement``
(:func:`r2et.metrics.deletion`, :func:`r2et.metrics.occlusion_agreement`, baseline: the
training mean), ``distinct_topk_sets`` and ``global_topk_p_at_k``
(:func:`r2et.metrics.locality`), and, for column rankings, the share of top-k columns that are
one-hot categories the person does *not* have (value 0). ``--docs`` writes the table between
the ``<!-- faithfulness-adult -->`` markers of that file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from r2et import EnsembleAttack, Explainer, evaluate
from r2et._io import atomic_write_text
from r2et.data import load_dataset
from r2et.metrics import topk_mask
from r2et.train import load_run


def absent_onehot_share(ds: Any, x: torch.Tensor, scores: torch.Tensor, k: int) -> float:
    """Mean share of an input's top-k columns that are one-hot columns whose value is 0."""
    onehot = torch.zeros(x.shape[1], dtype=torch.bool)
    for cols in ds.groups:
        if len(cols) > 1:
            onehot[list(cols)] = True
    top = topk_mask(scores, k)
    absent = onehot & (x == 0)
    return float((top & absent).sum(1).double().mean() / k)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="bench-out/attack-study/runs")
    p.add_argument("--methods", default="vanilla,r2et,r2et-mm")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--docs", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ds = load_dataset("adult", seed=0)
    x, _, _ = ds.subset("test", args.n)
    lines = [
        "| method | explainer | units (k) | P@k fast ensemble (box) | deletion gain"
        " | occlusion agr. | distinct top-k sets | P@k with global top-k"
        " | absent one-hot in top-k |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in args.methods.split(","):
        model = load_run(Path(args.runs) / f"adult-{method}-0").model
        for name in ("grad", "grad_x_input"):
            for groups, k in ((None, 8), (ds.groups, 4)):
                ex = Explainer(name, groups=groups)
                atk = EnsembleAttack(ex, k, 0.3, bounds=ds.bounds, preset="fast")
                res = evaluate(model, ds, ex, k=k, attacks={"fast": atk}, n=args.n)
                f, loc = res["faithfulness"], res["locality"]
                absent = "–"
                if groups is None:
                    absent = f"{absent_onehot_share(ds, x, ex.scores(model, x).detach(), k):.2f}"
                units = f"{'14 attributes' if groups else '108 columns'} ({k})"
                lines.append(
                    f"| {method} | {name} | {units} | {res['attacks']['fast']['p_at_k_mean']:.3f} "
                    f"| {f['deletion_gain']:.3f} | {f['occlusion_agreement']:.3f} "
                    f"| {loc['distinct_topk_sets']} | {loc['global_topk_p_at_k']:.3f} | {absent} |"
                )
                print(lines[-1], flush=True)
    table = "\n".join(lines)
    if args.docs:
        path = Path(args.docs)
        text = path.read_text()
        a, b = "<!-- faithfulness-adult -->", "<!-- /faithfulness-adult -->"
        i, j = text.index(a), text.index(b)
        body = f"{a}\n{table}\n\n(n = {args.n} test inputs, {time.strftime('%Y-%m-%d')})\n{b}"
        atomic_write_text(path, text[:i] + body + text[j + len(b) :])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
