"""Selection rule and the paper-style results table (``report.md``)."""

from __future__ import annotations

import math
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from r2et._io import atomic_write_text

#: Columns of the table per dataset: (row key, header, format).
TABLE_COLUMNS = [
    ("accuracy", "Test acc", "{:.3f}"),
    ("ensemble_p_at_k_mean", "P@k ensemble", "{:.3f}"),
    ("erattack_p_at_k_mean", "P@k ERAttack-50", "{:.3f}"),
    ("deletion_gain", "Deletion gain", "{:.3f}"),
    ("occlusion_agreement", "Occlusion agr.", "{:.3f}"),
    ("distinct_topk_sets", "Distinct top-k", "{:.0f}"),
]
#: Columns where the best (highest) value among admissible methods is bold.
BOLD = ("accuracy", "ensemble_p_at_k_mean", "deletion_gain", "occlusion_agreement")
STABILITY = "ensemble_p_at_k_mean"


def selection_rule_text(max_acc_drop: float, min_deletion_ratio: float | None = 0.9) -> str:
    """The selection rule, in words, as printed in the report."""
    faith = (
        ""
        if min_deletion_ratio is None
        else f" and whose mean deletion gain is at least {min_deletion_ratio:g} times vanilla's "
        f"(vanilla's minus {1 - min_deletion_ratio:g} times its size, when vanilla's is negative)"
    )
    return (
        "Selection rule: for each dataset and method, among its weight settings whose mean "
        f"validation accuracy is at most {100 * max_acc_drop:g} points below vanilla's{faith}, "
        "the setting with the highest mean ensemble-attack P@k on the evaluated test inputs "
        "(over seeds) is reported; a method with no such setting reports its most accurate "
        "one, marked with †."
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
    rows: list[dict[str, Any]], max_acc_drop: float, min_deletion_ratio: float | None = 0.9
) -> dict[tuple[str, str], dict[str, Any]]:
    """Apply the selection rule (:func:`selection_rule_text`). Returns ``{(dataset, method):
    {"rows": [...per seed], "setting": (weight_name, weight), "admissible": bool}}``."""
    by: dict[tuple[str, str], dict[tuple[Any, Any], list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        by[(r["dataset"], r["method"])][_setting(r)].append(r)
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for (dataset, method), settings in by.items():
        van = [r for rs in by.get((dataset, "vanilla"), {}).values() for r in rs]
        ref_acc = _mean_std([r["val_accuracy"] for r in van])[0]
        ref_del = _mean_std([r.get("deletion_gain") for r in van])[0]
        scored = []
        for setting, rs in settings.items():
            acc = _mean_std([r["val_accuracy"] for r in rs])[0]
            patk = _mean_std([r.get(STABILITY) for r in rs])[0]
            gain = _mean_std([r.get("deletion_gain") for r in rs])[0]
            ok = math.isnan(ref_acc) or acc >= ref_acc - max_acc_drop - 1e-12
            if min_deletion_ratio is not None and not math.isnan(ref_del):
                # ratio * ref for a positive reference, ref - (1 - ratio)|ref| in general, so
                # that vanilla stays admissible against itself when its gain is negative
                floor = ref_del - (1.0 - min_deletion_ratio) * abs(ref_del)
                ok = ok and not math.isnan(gain) and gain >= floor - 1e-12
            scored.append((ok, -1.0 if math.isnan(patk) else patk, acc, setting, rs))
        admissible = [s for s in scored if s[0]]
        if admissible:
            best = max(admissible, key=lambda s: (s[1], s[2]))
        else:
            best = max(scored, key=lambda s: s[2])
        chosen[(dataset, method)] = {"rows": best[4], "setting": best[3], "admissible": best[0]}
    return chosen


def _fmt(m: float, s: float, n: int, fmt: str) -> str:
    if math.isnan(m):
        return "–"
    return f"{fmt.format(m)} ± {fmt.format(s)}" if n > 1 else fmt.format(m)


def results_table(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    methods: list[str] | None = None,
    min_deletion_ratio: float | None = 0.9,
    dataset: str | None = None,
) -> str:
    """Markdown tables, one per dataset (or only ``dataset``): rows are methods, columns
    accuracy on the whole test split, ensemble P@k, the paper's ERAttack P@k, deletion gain,
    occlusion agreement and distinct top-k sets, mean ± std over seeds of the selected setting;
    the best accuracy, P@k and faithfulness among methods that meet the selection rule's
    conditions in bold (a † marks a method with no setting meeting them)."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    if dataset is not None:
        datasets = [d for d in datasets if d == dataset]
    present = set(r["method"] for r in rows)
    methods = [m for m in (methods or sorted(present)) if m in present]
    blocks = []
    for d in datasets:
        cells: dict[tuple[str, str], tuple[float, float, int]] = {}
        for m in methods:
            sel = chosen.get((d, m))
            if sel is None:
                continue
            for key, _, _ in TABLE_COLUMNS:
                vals = [r.get(key) for r in sel["rows"]]
                cells[(m, key)] = (*_mean_std(vals), len(vals))
        best = {}
        for key in BOLD:
            vals = [
                cells[(m, key)][0]
                for m in methods
                if (m, key) in cells and chosen[(d, m)]["admissible"]
            ]
            vals = [v for v in vals if not math.isnan(v)]
            best[key] = max(vals) if vals else None
        header = ["Method", *(h for _, h, _ in TABLE_COLUMNS)]
        lines = [
            f"**{d}**",
            "",
            "| " + " | ".join(header) + " |",
            "|---" + "|---:" * (len(header) - 1) + "|",
        ]
        for m in methods:
            sel = chosen.get((d, m))
            if sel is None:
                continue
            out = [m + ("" if sel["admissible"] else " †")]
            for key, _, fmt in TABLE_COLUMNS:
                mean, std, n = cells[(m, key)]
                text = _fmt(mean, std, n, fmt)
                if key in BOLD and best[key] is not None and abs(mean - best[key]) < 5e-4:
                    text = f"**{text}**"
                out.append(text)
            lines.append("| " + " | ".join(out) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def settings_table(
    rows: list[dict[str, Any]], max_acc_drop: float, min_deletion_ratio: float | None = 0.9
) -> str:
    """Which weight was selected per dataset and method, its validation accuracy, thickness,
    the ensemble attack's budget and box, cost per epoch and attack seconds."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio)
    lines = [
        "| Dataset | Method | Selected setting | Val acc | Thickness | eps | box | s/epoch "
        "| Ensemble s |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for (d, m), sel in chosen.items():
        name, val = sel["setting"]
        setting = "defaults" if val is None else f"{name}={val:g}"
        rs = sel["rows"]
        va = _mean_std([r["val_accuracy"] for r in rs])[0]
        th = _mean_std([r.get("thickness") for r in rs])[0]
        sp = _mean_std([r.get("train_seconds_per_epoch") for r in rs])[0]
        at = _mean_std([r.get("ensemble_seconds") for r in rs])[0]
        box = "yes" if rs[0].get("box", True) else "no"
        lines.append(
            f"| {d} | {m} | {setting} | {va:.3f} | {th:.4g} | {rs[0].get('eps', float('nan')):g} "
            f"| {box} | {sp:.2f} | {at:.2f} |"
        )
    return "\n".join(lines)


def certified_table(
    rows: list[dict[str, Any]], max_acc_drop: float, min_deletion_ratio: float | None = 0.9
) -> str:
    """Per dataset, method and certificate (``evaluate.certify``): mean certified radius,
    fraction of inputs with one, and certified P@k (a lower bound) beside the attacked P@k of
    the budget curve (an upper bound) at the radii both have; the truth lies between."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio)
    names = sorted(
        {k[5:-6] for r in rows for k in r if k.startswith("cert_") and k.endswith("_curve")}
    )
    lines = [
        "| Dataset | Method | Certificate | norm | mean radius | certified fraction "
        "| certified / attacked P@k at radius |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for (d, m), sel in chosen.items():
        for name in names:
            rs = [r for r in sel["rows"] if f"cert_{name}_curve" in r]
            if not rs:
                continue
            rad = _mean_std([r[f"cert_{name}_radius_mean"] for r in rs])[0]
            frac = _mean_std([r[f"cert_{name}_certified_fraction"] for r in rs])[0]
            norm = rs[0][f"cert_{name}_norm"]
            pairs = []
            for key in rs[0][f"cert_{name}_curve"]:
                cert = _mean_std([r[f"cert_{name}_curve"][key] for r in rs])[0]
                att = [r.get("curve", {}).get(key) for r in rs] if norm == "linf" else [None]
                att_text = f"{_mean_std(att)[0]:.3f}" if None not in att else "–"
                pairs.append(f"{key}: {cert:.3f} / {att_text}")
            lines.append(
                f"| {d} | {m} | {name} | {norm} | {rad:.4g} | {frac:.2f} | {'; '.join(pairs)} |"
            )
    return "\n".join(lines)


def evaluation_text(ev: dict[str, Any]) -> str:
    """How the reported numbers were measured, in words."""
    box = (
        "inside the data box (the training range of every feature; [0, 1] for images)"
        if ev.get("box", True)
        else "without a data box (only the eps-ball)"
    )
    return (
        f"Evaluation: first {ev['n']} test inputs (accuracy on the whole test split), gradient "
        "(logit) saliency, k per dataset, l_inf budget eps per dataset, attacks "
        f"{box}, prediction kept. Stability is P@k (top-k overlap before/after) under the "
        f"`{ev.get('preset', 'standard')}` ensemble attack (per input, the lowest P@k over its "
        f"members: APGD on several objectives, scales and surrogate betas, and a gradient-free "
        f"search), with the paper's ERAttack ({ev['steps']} steps) beside it. Deletion gain: "
        "the fall of the predicted class's probability when the top-k units are replaced by "
        "the mean training input, minus the fall for k random units. Occlusion agreement: P@k "
        "between the explanation's top-k and single-unit occlusion's (4x4-pixel patches for "
        "images of more than 256 pixels). Distinct top-k: how many different top-k sets the "
        "evaluated inputs have."
    )


def write_report(out: str | Path, rows: list[dict[str, Any]], cfg: Any) -> str:
    """Write ``report.md`` and the plots for the finished cells; returns the main tables."""
    from r2et.bench.plots import write_plots

    out = Path(out)
    ratio = getattr(cfg, "min_deletion_ratio", 0.9)
    table = results_table(rows, cfg.max_acc_drop, cfg.methods, ratio)
    plots = write_plots(out, rows, cfg)
    text = [
        "# r2et benchmark report",
        "",
        f"Datasets: {', '.join(cfg.datasets)}; methods: {', '.join(cfg.methods)}; "
        f"seeds: {', '.join(map(str, cfg.seeds))}.",
        evaluation_text(cfg.evaluate),
        "",
        selection_rule_text(cfg.max_acc_drop, ratio),
        "",
        table,
        "",
        "## Selected settings and cost",
        "",
        settings_table(rows, cfg.max_acc_drop, ratio),
        "",
        *(
            [
                "## Certified top-k (`r2et.certify`)",
                "",
                "Attacked P@k is an upper bound on the worst case, certified P@k a lower bound: "
                "the truth lies between (docs/certify.md).",
                "",
                certified_table(rows, cfg.max_acc_drop, ratio),
                "",
            ]
            if cfg.evaluate.get("certify")
            else []
        ),
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
