"""Issue 25: how far each input's certified radius is from the truth, bracketed from above.

    R2ET_DATA=../shared/data python benchmarks/certify_radius_bracket.py [--n 100] [--k 4]
        [--methods vanilla,r2et-paper,r2et] [--preset standard] [--seed 0]

The recipe of ``certify_patterns.py`` (COMPAS, ``--seed``, vanilla pre-trained 5 epochs, a copy
fine-tuned 3 epochs with each method, the data's explanation and ``k``, the first ``--n`` test
rows inside the data box). Per input, two radii bracket the true one ``r*`` (the largest l_inf
radius whose whole ball keeps the top-k set and the class):

* below, the certified radius ``r_c`` (``certified_radius``, ``bound="patterns"``): ``r_c <= r*``;
* above, the attack radius ``r_a``: the smallest budget of a geometric grid (ratio 2^(1/8),
  from ``r_c``'s smallest value up to 1) at which the ``--preset`` ensemble changes the
  input's top-k set; the point it returns lies in the ball, so ``r* <= r_a`` (inputs never
  moved up to 1 count as 1).

The ratio ``r_a / r_c`` is an upper bound on what any tighter certificate could still add to
that input; the medians of ``r_a`` are upper bounds on the medians any sound certificate can
reach, model by model. Beside them, each model's test accuracy, distinct top-k sets and
deletion gain (unattacked): a large radius is worth little for a collapsed or unfaithful
explanation. Prints a markdown table; one torch thread; CPU seconds per model.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from r2et import EnsembleAttack
from r2et.certify import certified_radius
from r2et.metrics import topk_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from certify_patterns import explanation_columns, finetuned, pretrained_compas  # noqa: E402


def attack_radius(model, ds, ex, k, x, start: float, preset: str, step: float = 2 ** (1 / 8)):
    """Per row, the smallest ``eps = start · step^j <= 1`` at which the ensemble changes the
    row's top-k set (prediction kept); rows never changed get ``inf``. Only rows not yet
    changed are attacked at the next budget."""
    out = torch.full((len(x),), math.inf, dtype=torch.float64)
    eps = start
    while eps <= 1.0 and bool(torch.isinf(out).any()):
        rows = torch.isinf(out).nonzero().squeeze(1)
        res = EnsembleAttack(ex, k, eps, bounds=ds.bounds, preset=preset, seed=0)(model, x[rows])
        moved = (topk_mask(res.scores_clean, k) != topk_mask(res.scores_adv, k)).any(1)
        out[rows[moved]] = eps
        eps *= step
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--methods", default="vanilla,r2et-paper,r2et")
    p.add_argument("--preset", default="standard")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ds, base = pretrained_compas(a.seed)
    k = a.k or ds.default_k
    ex = ds.explainer()
    x = ds.test[0][: a.n]
    print(
        f"COMPAS seed {a.seed}, k = {k}, {len(x)} test rows, {ex.method} per attribute, data "
        f"box; attack radius: `{a.preset}` ensemble on a 2^(1/8) grid"
    )
    print(
        "| model | test acc | distinct top-k / n | deletion gain [95% CI] "
        "| median certified r_c | median attack r_a | median r_a / r_c "
        "| quartiles of r_a / r_c | rows r_a <= 2 r_c | CPU s (certify, attack) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method in a.methods.split(","):
        model = finetuned(base, method, ds, a.seed)
        t0 = time.process_time()
        rc = certified_radius(model, x, ex, k, bounds=ds.bounds).radius.double()
        t1 = time.process_time()
        start = float(rc[rc > 0].min()) if bool((rc > 0).any()) else 1e-4
        ra = attack_radius(model, ds, ex, k, x, start, a.preset).clamp_max(1.0)
        t2 = time.process_time()
        if bool((ra < rc).any()):  # the certificate would be unsound: say so loudly
            raise SystemExit(f"{method}: attack radius below the certified one on rows "
                             f"{(ra < rc).nonzero().flatten().tolist()}")  # fmt: skip
        ratio = ra / rc.clamp_min(1e-12)
        q1, q3 = (float(v) for v in ratio.quantile(torch.tensor([0.25, 0.75], dtype=ratio.dtype)))
        print(
            f"| {method} | {explanation_columns(model, ds, ex, k, len(x), a.seed)} "
            f"| {rc.median():.4f} | {ra.median():.4f} | {ratio.median():.2f} "
            f"| [{q1:.2f}, {q3:.2f}] | {int((ra <= 2 * rc).sum())} of {len(x)} "
            f"| {t1 - t0:.0f}, {t2 - t1:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
