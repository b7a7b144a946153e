"""Tables of the graph study (docs/graphs.md) from finished bench folders.

For every dataset, method and weight: the mean (± std over seeds) of test accuracy, validation
accuracy, ensemble P@k, ERAttack-50 P@k, ground-truth precision (clean and ensemble-attacked),
deletion gain and thickness, with the vanilla row first and the difference of P@k and accuracy
to vanilla. Writes ``OUT.csv`` and ``OUT.md``.

    python benchmarks/graphs_tables.py bench-graphs/results.csv docs/results/graphs_ba2motifs
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

COLUMNS = [
    ("accuracy", "test acc"),
    ("val_accuracy", "val acc"),
    ("ensemble_p_at_k_mean", "P@k ensemble"),
    ("erattack_p_at_k_mean", "P@k ERAttack-50"),
    ("ground_truth_precision", "GT prec."),
    ("ensemble_ground_truth_precision_adv", "GT prec. attacked"),
    ("deletion_gain", "deletion gain"),
    ("thickness", "thickness"),
]


def _num(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _mean_std(vals: list[float]) -> tuple[float, float]:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    m = sum(vals) / len(vals)
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, s


def summarise(rows: list[dict[str, str]]) -> list[dict[str, object]]:
    """One entry per (dataset, method, weight): means and stds over seeds, and the
    differences of mean P@k and accuracy to vanilla's of the same dataset."""
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["method"], r.get("weight", ""))].append(r)
    out = []
    for (dataset, method, weight), rs in groups.items():
        entry: dict[str, object] = {
            "dataset": dataset,
            "method": method,
            "weight": weight,
            "seeds": len(rs),
        }
        for key, _ in COLUMNS:
            m, s = _mean_std([_num(r.get(key)) for r in rs])
            entry[key], entry[f"{key}_std"] = m, s
        out.append(entry)
    for e in out:
        van = next(v for v in out if v["dataset"] == e["dataset"] and v["method"] == "vanilla")
        e["d_p_at_k"] = e["ensemble_p_at_k_mean"] - van["ensemble_p_at_k_mean"]
        e["d_val_acc"] = e["val_accuracy"] - van["val_accuracy"]
        e["d_acc"] = e["accuracy"] - van["accuracy"]
    order = {"vanilla": 0, "at": 1, "r2et": 2, "r2et-mm": 3, "r2et-noh": 4}
    out.sort(key=lambda e: (e["dataset"], order.get(e["method"], 9), _num(e["weight"])))
    return out


def markdown(entries: list[dict[str, object]]) -> str:
    """A markdown table per dataset: mean ± std over seeds."""
    blocks = []
    for dataset in dict.fromkeys(e["dataset"] for e in entries):
        head = ["method", "weight", *(h for _, h in COLUMNS), "Δ P@k", "Δ val acc"]
        lines = [f"**{dataset}**", "", "| " + " | ".join(head) + " |"]
        lines.append("|---|---" + "|---:" * (len(head) - 2) + "|")
        for e in entries:
            if e["dataset"] != dataset:
                continue
            cells = [str(e["method"]), str(e["weight"] or "–")]
            for key, _ in COLUMNS:
                m, s = e[key], e[f"{key}_std"]
                cells.append("–" if math.isnan(m) else f"{m:.3f} ± {s:.3f}")
            cells += [f"{e['d_p_at_k']:+.3f}", f"{e['d_val_acc']:+.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results.csv of one or more bench folders")
    ap.add_argument("out", help="output path without suffix (writes .csv and .md)")
    args = ap.parse_args()
    rows: list[dict[str, str]] = []
    for path in args.results:
        with open(path, newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    entries = summarise(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(entries[0]))
        w.writeheader()
        w.writerows(entries)
    out.with_suffix(".md").write_text(markdown(entries), encoding="utf-8")
    print(markdown(entries))


if __name__ == "__main__":
    main()
