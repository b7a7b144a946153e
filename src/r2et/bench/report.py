"""Selection rule and the paper-style results table (``report.md``)."""

from __future__ import annotations

import math
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from r2et._io import atomic_write_text

#: Columns of the main table per dataset: (row key, header).
TABLE_COLUMNS = [
    ("accuracy", "Acc"),
    ("erattack_p_at_k_mean", "P@k ERAttack"),
    ("mse_p_at_k_mean", "P@k MSE"),
]


def selection_rule_text(max_acc_drop: float) -> str:
    """The selection rule, in words, as printed in the report."""
    return (
        "Selection rule: for each dataset and method, among its weight settings whose mean "
        f"validation accuracy is at most {100 * max_acc_drop:g} points below vanilla's, the "
        "setting with the highest mean ERAttack P@k (over seeds) is reported; a method with no "
        "such setting reports its most accurate one, marked with †."
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return m, math.sqrt(var)


def _setting(row: dict[str, Any]) -> tuple[Any, Any]:
    return row.get("weight_name"), row.get("weight")


def select(
    rows: list[dict[str, Any]], max_acc_drop: float
) -> dict[tuple[str, str], dict[str, Any]]:
    """Apply the selection rule. Returns ``{(dataset, method): {"rows": [...per seed],
    "setting": (weight_name, weight), "admissible": bool}}``."""
    by: dict[tuple[str, str], dict[tuple[Any, Any], list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        by[(r["dataset"], r["method"])][_setting(r)].append(r)
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for (dataset, method), settings in by.items():
        van = by.get((dataset, "vanilla"))
        ref = _mean_std([r["val_accuracy"] for rs in (van or {}).values() for r in rs])[0]
        scored = []
        for setting, rs in settings.items():
            acc = _mean_std([r["val_accuracy"] for r in rs])[0]
            patk = _mean_std([r.get("erattack_p_at_k_mean") for r in rs])[0]
            ok = math.isnan(ref) or acc >= ref - max_acc_drop - 1e-12
            scored.append((ok, patk, acc, setting, rs))
        admissible = [s for s in scored if s[0]]
        if admissible:
            best = max(admissible, key=lambda s: (s[1], s[2]))
        else:
            best = max(scored, key=lambda s: s[2])
        chosen[(dataset, method)] = {"rows": best[4], "setting": best[3], "admissible": best[0]}
    return chosen


def _fmt(m: float, s: float, n: int) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.3f} ± {s:.3f}" if n > 1 else f"{m:.3f}"


def results_table(
    rows: list[dict[str, Any]], max_acc_drop: float, methods: list[str] | None = None
) -> str:
    """Markdown table: rows are methods, columns dataset × (accuracy, P@k under each attack),
    mean ± std over seeds of the selected setting; the best value per column among methods that
    meet the accuracy budget in bold (a † marks a method with no setting inside the budget)."""
    chosen = select(rows, max_acc_drop)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    present = set(r["method"] for r in rows)
    methods = [m for m in (methods or sorted(present)) if m in present]
    header = ["Method"] + [f"{d} {h}" for d in datasets for _, h in TABLE_COLUMNS]
    cells: dict[tuple[str, str, str], tuple[float, float, int]] = {}
    for d in datasets:
        for m in methods:
            sel = chosen.get((d, m))
            if sel is None:
                continue
            for key, _ in TABLE_COLUMNS:
                vals = [r.get(key) for r in sel["rows"]]
                cells[(d, m, key)] = (*_mean_std(vals), len(vals))
    best = {}
    for d in datasets:
        for key, _ in TABLE_COLUMNS:
            vals = [
                cells[(d, m, key)][0]
                for m in methods
                if (d, m, key) in cells and chosen[(d, m)]["admissible"]
            ]
            vals = [v for v in vals if not math.isnan(v)]
            best[(d, key)] = max(vals) if vals else None
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in methods:
        out = [m]
        for d in datasets:
            sel = chosen.get((d, m))
            for key, _ in TABLE_COLUMNS:
                if (d, m, key) not in cells:
                    out.append("–")
                    continue
                mean, std, n = cells[(d, m, key)]
                text = _fmt(mean, std, n)
                if best[(d, key)] is not None and abs(mean - best[(d, key)]) < 5e-4:
                    text = f"**{text}**"
                if key == "accuracy" and sel is not None and not sel["admissible"]:
                    text += " †"
                out.append(text)
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def settings_table(rows: list[dict[str, Any]], max_acc_drop: float) -> str:
    """Which weight was selected per dataset and method, and the cost per epoch."""
    chosen = select(rows, max_acc_drop)
    lines = [
        "| Dataset | Method | Selected setting | Val acc | Thickness | s/epoch | Attack s |",
        "|---|---|---|---|---|---|---|",
    ]
    for (d, m), sel in chosen.items():
        name, val = sel["setting"]
        setting = "defaults" if val is None else f"{name}={val:g}"
        rs = sel["rows"]
        va = _mean_std([r["val_accuracy"] for r in rs])[0]
        th = _mean_std([r.get("thickness") for r in rs])[0]
        sp = _mean_std([r.get("train_seconds_per_epoch") for r in rs])[0]
        at = _mean_std([r.get("erattack_seconds") for r in rs])[0]
        lines.append(f"| {d} | {m} | {setting} | {va:.3f} | {th:.4g} | {sp:.2f} | {at:.2f} |")
    return "\n".join(lines)


def write_report(out: str | Path, rows: list[dict[str, Any]], cfg: Any) -> str:
    """Write ``report.md`` and the plots for the finished cells; returns the main table."""
    from r2et.bench.plots import write_plots

    out = Path(out)
    table = results_table(rows, cfg.max_acc_drop, cfg.methods)
    plots = write_plots(out, rows, cfg)
    ev = cfg.evaluate
    text = [
        "# r2et benchmark report",
        "",
        f"Datasets: {', '.join(cfg.datasets)}; methods: {', '.join(cfg.methods)}; "
        f"seeds: {', '.join(map(str, cfg.seeds))}.",
        f"Evaluation: first {ev['n']} test inputs, gradient (logit) saliency, k per dataset, "
        f"ERAttack and MSEAttack with {ev['steps']} l_inf steps at the dataset's eps; "
        "P@k = top-k overlap before/after the attack, prediction kept.",
        "",
        selection_rule_text(cfg.max_acc_drop),
        "",
        table,
        "",
        "## Selected settings and cost",
        "",
        settings_table(rows, cfg.max_acc_drop),
        "",
        "## Plots",
        "",
        *[f"![{p.stem}](plots/{p.name})" for p in plots],
        "",
        f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Full rows: "
        "`results.csv`, `results.json`; configuration: `config.json`.",
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(text))
    return table
