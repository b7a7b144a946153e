"""Re-run the selected settings of a stored paper_cpu run, evaluated under more explainers.

    python benchmarks/explainer_check.py compas --explainers smoothgrad --out sg-compas
        [--rows docs/results] [--seeds 0,1,2] [--n 100]

The settings are the ones ``benchmarks/paper_summary.py`` selects from
``<rows>/paper_cpu_<dataset>.csv`` (plus its ``+<part>.csv``). Each selected (method, weight)
is fine-tuned again from the same pre-trained model with paper_cpu's settings, which is
deterministic on the CPU, and evaluated with ``evaluate.explainers`` set to ``--explainers``:
every other explainer is attacked through itself by the same ensemble, giving
``x_<name>_p_at_k`` and ``x_<name>_deletion_gain``. The gradient P@k of the new rows must match
the stored ones. The script prints the stored and recomputed gradient P@k side by side, so a
mismatch shows. Results go to ``<out>/results.csv`` (an ordinary bench folder; ``--resume``
semantics as ``r2et bench``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_summary import read_rows, selected, stat  # noqa: E402

from r2et.bench.config import load_config  # noqa: E402
from r2et.bench.runner import run_bench  # noqa: E402
from r2et.bench.selection import STABILITY  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--explainers", default="smoothgrad")
    parser.add_argument("--rows", default="docs/results", type=Path)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n", type=int, default=100, help="inputs per other explainer")
    args = parser.parse_args()
    rows = read_rows(args.rows / f"paper_cpu_{args.dataset}.csv")
    for extra in sorted(args.rows.glob(f"paper_cpu_{args.dataset}+*.csv")):
        seen = {r["key"] for r in rows}
        rows += [r for r in read_rows(extra) if r["key"] not in seen]
    chosen, _ = selected(rows, None)
    seeds = [int(s) for s in args.seeds.split(",")]
    explainers = [e for e in args.explainers.split(",") if e]
    cfg = load_config(
        "paper_cpu",
        datasets=[args.dataset],
        methods=list(chosen),
        seeds=seeds,
        threads=1,
        evaluate={"explainers": explainers, "explainer_n": args.n},
    )
    cfg.grid = {m: [s["weight"]] for m, s in chosen.items() if s["weight"] is not None}
    cfg.validate()
    new = run_bench(cfg, args.out, resume=True, progress=True, report=False)
    print(f"| method (weight) | stored grad P@k | recomputed | {' | '.join(explainers)} |")
    for m, s in chosen.items():
        mine = [r for r in new if r["method"] == m]
        stored = [r for r in s["rows"] if r["seed"] in seeds]
        extra = " | ".join(
            f"{stat(mine, f'x_{e}_p_at_k')[0]:.3f} ({stat(mine, f'x_{e}_deletion_gain')[0]:.3f})"
            for e in explainers
        )
        print(
            f"| {m} ({s['weight']}) | {stat(stored, STABILITY)[0]:.3f} "
            f"| {stat(mine, STABILITY)[0]:.3f} | {extra} |"
        )


if __name__ == "__main__":
    main()
