"""Selection rule and the paper-style results table (``report.md``)."""

from __future__ import annotations

import math
import platform
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from r2et._io import atomic_write_json, atomic_write_text
from r2et.bench.selection import (
    STABILITY,
    mean_std,
    row_verdict,
    rule_of,
    select,
    selection_rule_text,
    verdict_cell,
)
from r2et.verdict import CI_LEVEL, COLLAPSE_DISTINCT_PER_100, COLLAPSE_TOP_SHARE

__all__ = [
    "STABILITY",
    "attack_headers",
    "format_cell",
    "results_data",
    "results_table",
    "rule_of",
    "select",
    "selection_rule_text",
    "settings_table",
    "summary_text",
    "write_report",
]

#: Columns of the table per dataset: (row key, header, format).
TABLE_COLUMNS = [
    ("accuracy", "Test acc", "{:.3f}"),
    ("ensemble_p_at_k_mean", "P@k ensemble", "{:.3f}"),
    ("erattack_p_at_k_mean", "P@k ERAttack-50", "{:.3f}"),
    ("deletion_gain", "Deletion gain", "{:.3f}"),
    ("occlusion_agreement", "Occlusion agr.", "{:.3f}"),
    ("distinct_topk_sets", "Distinct top-k", "{:.0f}"),
]
#: Added after the P@k columns for datasets with a ground-truth explanation (synthetic graphs):
#: precision of the clean top-k against it, and of the ensemble-attacked top-k.
GROUND_TRUTH_COLUMNS = [
    ("ground_truth_precision", "GT precision", "{:.3f}"),
    ("ensemble_ground_truth_precision_adv", "GT prec. attacked", "{:.3f}"),
]
#: Columns where the best (highest) value among admissible methods is bold.
BOLD = (
    "accuracy",
    "ensemble_p_at_k_mean",
    "ground_truth_precision",
    "deletion_gain",
    "occlusion_agreement",
)


def _fmt(m: float, s: float, n: int, fmt: str) -> str:
    if math.isnan(m):
        return "–"
    return f"{fmt.format(m)} ± {fmt.format(s)}" if n > 1 else fmt.format(m)


#: Below the results tables: what the verdict column says.
VERDICT_LEGEND = (
    f"Verdict (per seed, `r2et.verdict`): *collapsed* when at least "
    f"{100 * COLLAPSE_TOP_SHARE:g}% of the evaluated inputs share one top-k set or there are "
    f"fewer than {COLLAPSE_DISTINCT_PER_100:g} distinct top-k sets per 100 inputs (a constant, "
    f"not a stable explanation); *unfaithful* when the deletion gain's {100 * CI_LEVEL:g}% "
    "interval does not lie above 0 (cells stored without it: the gain is not above 0). A high "
    "P@k beside a ⚠ is not a stable explanation."
)


def _vanilla_note(dataset: str, sel: dict[str, Any] | None) -> list[str]:
    """A plain line when vanilla, the rule's reference, does not meet the rule itself."""
    if sel is None or sel["admissible"]:
        return []
    why = "; ".join(sel.get("failed", [])) or "it fails the rule"
    return [
        "",
        f"**Note:** on {dataset}, vanilla (the selection rule's reference) does not meet the "
        f"rule itself ({why}): its explanation is not shown to be faithful. It is reported as "
        "is, marked †; the other methods are compared with it all the same.",
    ]


def attack_headers(rows: list[dict[str, Any]], erattack_steps: int | None = None) -> dict[str, str]:
    """Column headers that name the attack behind each P@k column: ``"P@k ensemble
    (standard)"`` (the rows' ``ensemble_preset``; without the preset when the rows disagree or
    do not say) and ``"P@k ERAttack-50"`` (``erattack_steps``; ``"P@k ERAttack"`` when
    None)."""
    presets = {r.get("ensemble_preset") or r.get("preset") for r in rows} - {None}
    ensemble = f"P@k ensemble ({presets.pop()})" if len(presets) == 1 else "P@k ensemble"
    era = f"P@k ERAttack-{erattack_steps}" if erattack_steps else "P@k ERAttack"
    return {"ensemble_p_at_k_mean": ensemble, "erattack_p_at_k_mean": era}


def results_data(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    methods: list[str] | None = None,
    min_deletion_ratio: float | None = 0.9,
    dataset: str | None = None,
    min_distinct_ratio: float | None = None,
    require_faithful: bool = False,
    erattack_steps: int | None = None,
) -> list[dict[str, Any]]:
    """What :func:`results_table` shows, as data (the HTML report renders the same): one dict
    per dataset, ``{"dataset", "columns": [(key, header, format)], "methods": [{"method",
    "admissible", "cells": {key: (mean, std, n)}, "best": {key: bool}, "verdict", "rows"}],
    "notes": [markdown lines]}``."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio, min_distinct_ratio, require_faithful)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    if dataset is not None:
        datasets = [d for d in datasets if d == dataset]
    present = set(r["method"] for r in rows)
    methods = [m for m in (methods or sorted(present)) if m in present]
    out = []
    for d in datasets:
        mine = [r for r in rows if r["dataset"] == d]
        headers = attack_headers(mine, erattack_steps)
        columns = [(key, headers.get(key, head), fmt) for key, head, fmt in TABLE_COLUMNS]
        if any(r.get("ground_truth_precision") is not None for r in mine):
            columns[3:3] = GROUND_TRUTH_COLUMNS
        cells: dict[tuple[str, str], tuple[float, float, int]] = {}
        for m in methods:
            sel = chosen.get((d, m))
            if sel is None:
                continue
            for key, _, _ in columns:
                vals = [r.get(key) for r in sel["rows"]]
                cells[(m, key)] = (*mean_std(vals), len(vals))
        best = {}
        for key in (b for b in BOLD if any(c[0] == b for c in columns)):
            vals = [
                cells[(m, key)][0]
                for m in methods
                if (m, key) in cells and chosen[(d, m)]["admissible"]
            ]
            vals = [v for v in vals if not math.isnan(v)]
            best[key] = max(vals) if vals else None
        entries = []
        for m in methods:
            sel = chosen.get((d, m))
            if sel is None:
                continue
            mine_cells = {key: cells[(m, key)] for key, _, _ in columns}
            entries.append(
                {
                    "method": m,
                    "admissible": sel["admissible"],
                    "cells": mine_cells,
                    "best": {
                        key: best.get(key) is not None
                        and abs(mine_cells[key][0] - best[key]) < 5e-4
                        for key, _, _ in columns
                    },
                    "verdict": verdict_cell(sel["rows"]),
                    "rows": sel["rows"],
                }
            )
        out.append(
            {
                "dataset": d,
                "columns": columns,
                "methods": entries,
                "notes": _vanilla_note(d, chosen.get((d, "vanilla"))),
            }
        )
    return out


def format_cell(mean: float, std: float, n: int, fmt: str) -> str:
    """``"0.812 ± 0.004"`` (mean ± std over ``n`` seeds), the mean alone for one seed, ``–``
    for none."""
    return _fmt(mean, std, n, fmt)


def results_table(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    methods: list[str] | None = None,
    min_deletion_ratio: float | None = 0.9,
    dataset: str | None = None,
    min_distinct_ratio: float | None = None,
    require_faithful: bool = False,
    erattack_steps: int | None = None,
) -> str:
    """Markdown tables, one per dataset (or only ``dataset``): rows are methods, columns
    accuracy on the whole test split, ensemble P@k (the header names the ensemble's preset),
    the paper's ERAttack P@k (``ERAttack-<erattack_steps>``), deletion gain, occlusion
    agreement and distinct top-k sets (and, for data with a ground-truth explanation, the clean
    and attacked ground-truth precision), mean ± std over seeds of the selected setting, and
    the verdict of its explanation per seed (:func:`~r2et.bench.selection.verdict_cell`:
    ``⚠ collapsed (seed 1)``, ``⚠ unfaithful``, or ``local, faithful``); the best accuracy,
    P@k and faithfulness among methods that meet the selection rule's conditions in bold (a †
    marks a method with no setting meeting them, with a note when that method is vanilla), and
    the verdict's legend (:data:`VERDICT_LEGEND`) below. The numbers are
    :func:`results_data`'s."""
    blocks = []
    for block in results_data(
        rows, max_acc_drop, methods, min_deletion_ratio, dataset, min_distinct_ratio,
        require_faithful, erattack_steps,
    ):  # fmt: skip
        columns = block["columns"]
        header = ["Method", *(h for _, h, _ in columns), "Verdict"]
        lines = [
            f"**{block['dataset']}**",
            "",
            "| " + " | ".join(header) + " |",
            "|---" + "|---:" * (len(header) - 2) + "|---|",
        ]
        for entry in block["methods"]:
            out = [entry["method"] + ("" if entry["admissible"] else " †")]
            for key, _, fmt in columns:
                text = _fmt(*entry["cells"][key], fmt)
                out.append(f"**{text}**" if entry["best"][key] else text)
            out.append(entry["verdict"])
            lines.append("| " + " | ".join(out) + " |")
        lines += _yardsticks(rows, block["dataset"])
        lines += block["notes"]
        blocks.append("\n".join(lines))
    return "\n\n".join([*blocks, VERDICT_LEGEND]) if blocks else ""


def _yardsticks(rows: list[dict[str, Any]], dataset: str) -> list[str]:
    """The line under a dataset's table that puts its numbers beside their yardsticks: the
    accuracy of always predicting the majority class and a random explanation's P@k (k/F),
    means over the dataset's cells that store them (none: no line)."""
    rs = [r for r in rows if r.get("dataset") == dataset]
    majority = mean_std([r.get("majority_rate") for r in rs])[0]
    random_pk = mean_std([r.get("random_p_at_k") for r in rs])[0]
    if math.isnan(majority) and math.isnan(random_pk):
        return []
    parts = [] if math.isnan(majority) else [f"always predicting the majority class {majority:.3f}"]
    if not math.isnan(random_pk):
        parts.append(f"a random explanation's P@k (k/F) {random_pk:.3f}")
    return ["", "Beside: " + "; ".join(parts) + "."]


def settings_table(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    min_deletion_ratio: float | None = 0.9,
    min_distinct_ratio: float | None = None,
    require_faithful: bool = False,
) -> str:
    """Which weight was selected per dataset and method, its validation accuracy, thickness,
    the ensemble attack's budget and box, wall-clock training seconds per epoch and the
    ensemble attack's seconds over the evaluated inputs (means over seeds)."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio, min_distinct_ratio, require_faithful)
    lines = [
        "| Dataset | Method | Selected setting | Val acc | Thickness | eps | box "
        "| Train s/epoch (wall clock) | Ensemble attack s (all evaluated inputs) |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for (d, m), sel in chosen.items():
        name, val = sel["setting"]
        setting = "defaults" if val is None else f"{name}={val:g}"
        rs = sel["rows"]
        va = mean_std([r["val_accuracy"] for r in rs])[0]
        th = mean_std([r.get("thickness") for r in rs])[0]
        sp = mean_std([r.get("train_seconds_per_epoch") for r in rs])[0]
        at = mean_std([r.get("ensemble_seconds") for r in rs])[0]
        box = "yes" if rs[0].get("box", True) else "no"
        lines.append(
            f"| {d} | {m} | {setting} | {va:.3f} | {th:.4g} | {rs[0].get('eps', float('nan')):g} "
            f"| {box} | {sp:.2f} | {at:.2f} |"
        )
    return "\n".join(lines)


#: A pre-trained model this far below the best seed's validation accuracy is flagged.
PRETRAIN_GAP = 0.05


def pretrain_warnings(rows: list[dict[str, Any]], gap: float = PRETRAIN_GAP) -> list[str]:
    """One line per (dataset, seed) whose pre-trained model's validation accuracy lies more
    than ``gap`` below the best seed's of that dataset: fine-tuning from an unconverged model
    mixes recovery with the method's effect (seen on BA-2Motifs, docs/graphs.md)."""
    acc: dict[str, dict[int, float]] = defaultdict(dict)
    for r in rows:
        v = r.get("pretrain_val_accuracy")
        if isinstance(v, (int, float)) and not math.isnan(v):
            acc[r["dataset"]][int(r["seed"])] = float(v)
    out = []
    for d, by_seed in acc.items():
        best = max(by_seed.values())
        for seed, v in sorted(by_seed.items()):
            if v < best - gap:
                out.append(
                    f"dataset {d}, seed {seed}: the pre-trained model reached validation "
                    f"accuracy {v:.3f}, {best - v:.3f} below the best seed ({best:.3f}); its "
                    "cells measure recovery as much as the method"
                )
    return out


def explainer_table(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    min_deletion_ratio: float | None = 0.9,
    min_distinct_ratio: float | None = None,
    main: str = "grad",
    require_faithful: bool = False,
) -> str:
    """Explainer generalisation (``evaluate.explainers``): per dataset and method (selected
    setting), ensemble P@k and deletion gain of the ``main`` explainer (``evaluate.explainer``:
    what was trained and reported) beside each other explainer's, attacked through itself by
    the same ensemble."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio, min_distinct_ratio, require_faithful)
    names = sorted(
        {
            k[2 : -len("_p_at_k")]
            for r in rows
            for k in r
            if k.startswith("x_") and k.endswith("_p_at_k")
        }
    )
    head = " | ".join(f"{n} P@k / del." for n in [main, *names])
    lines = [f"| Dataset | Method | {head} |", "|---|---|" + "---:|" * (1 + len(names))]
    for (d, m), sel in chosen.items():
        cells = []
        for key_p, key_d in [(STABILITY, "deletion_gain")] + [
            (f"x_{n}_p_at_k", f"x_{n}_deletion_gain") for n in names
        ]:
            p_at_k = mean_std([r.get(key_p) for r in sel["rows"]])[0]
            gain = mean_std([r.get(key_d) for r in sel["rows"]])[0]
            cells.append(f"{p_at_k:.3f} / {gain:.3f}")
        lines.append(f"| {d} | {m} | {' | '.join(cells)} |")
    return "\n".join(lines)


def certified_table(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    min_deletion_ratio: float | None = 0.9,
    min_distinct_ratio: float | None = None,
    require_faithful: bool = False,
) -> str:
    """Per dataset, method and certificate (``evaluate.certify``): mean certified radius,
    fraction of inputs with one, and certified P@k (a lower bound) beside the attacked P@k of
    the budget curve (an upper bound) at the radii both have; the truth lies between."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio, min_distinct_ratio, require_faithful)
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
            rad = mean_std([r[f"cert_{name}_radius_mean"] for r in rs])[0]
            frac = mean_std([r[f"cert_{name}_certified_fraction"] for r in rs])[0]
            norm = rs[0][f"cert_{name}_norm"]
            pairs = []
            for key in rs[0][f"cert_{name}_curve"]:
                cert = mean_std([r[f"cert_{name}_curve"][key] for r in rs])[0]
                att = [r.get("curve", {}).get(key) for r in rs] if norm == "linf" else [None]
                att_text = f"{mean_std(att)[0]:.3f}" if None not in att else "–"
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
    rule, groups = ev.get("explainer", "auto"), ev.get("groups", "auto")
    if rule == "auto":
        what = (
            "each dataset's own explanation (gradient x input per attribute on tables with "
            "categorical attributes, else the gradient)"
        )
    else:
        what = f"`{rule}` saliency"
    if groups is True or groups is False:
        what += " ranked per attribute" if groups else " ranked per column"
    return (
        f"Evaluation: first {ev['n']} test inputs (accuracy on the whole test split), {what} "
        "of the logit, k per dataset (in ranked units), l_inf budget eps per dataset, attacks "
        f"{box}, prediction kept. Stability is P@k (top-k overlap before/after) under the "
        f"`{ev.get('preset', 'standard')}` ensemble attack (per input, the lowest P@k over its "
        f"members: APGD on several objectives, scales and surrogate betas, and a gradient-free "
        f"search), with the paper's ERAttack ({ev['steps']} steps) beside it. Deletion gain: "
        "the fall of the predicted class's probability when the top-k units are replaced by "
        "the mean training input (by 0, the unit removed, for data that set a "
        "`deletion_baseline`: graphs' edge and node weights), minus the fall for k random "
        "units. GT precision (data with a known explanation): |top-k ∩ truth| / min(k, "
        "|truth|), clean and under the ensemble attack. Occlusion agreement: P@k "
        "between the explanation's top-k and single-unit occlusion's (4x4-pixel patches for "
        "images of more than 256 pixels). Distinct top-k: how many different top-k sets the "
        "evaluated inputs have."
    )


def _section(shown: bool, title: str, intro: str, table: Callable[[], str]) -> list[str]:
    """The lines of an optional report section (none when not ``shown``)."""
    return [f"## {title}", "", intro, "", table(), ""] if shown else []


def summary_text(rows: list[dict[str, Any]], cfg: Any) -> str:
    """What the command line prints after a run: the configuration's selection rule in words
    and the results tables (with their verdict column) under it."""
    rule = rule_of(cfg)
    return "\n".join(
        [
            selection_rule_text(**rule),
            results_table(
                rows,
                rule["max_acc_drop"],
                cfg.methods,
                rule["min_deletion_ratio"],
                min_distinct_ratio=rule["min_distinct_ratio"],
                require_faithful=rule["require_faithful"],
                erattack_steps=cfg.evaluate.get("steps"),
            ),
        ]
    )


def selection_record(rows: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """The rule and what it selected, JSON-ready (``selection.json`` beside the report): the
    rule's settings and text, and per dataset and method the selected setting, whether it
    meets the rule, the conditions it fails, and each seed's verdict."""
    rule = rule_of(cfg)
    chosen = select(rows, **rule)
    return {
        "rule": rule,
        "rule_text": selection_rule_text(**rule),
        "selected": [
            {
                "dataset": d,
                "method": m,
                "weight_name": sel["setting"][0],
                "weight": sel["setting"][1],
                "admissible": sel["admissible"],
                "failed": sel["failed"],
                "keys": [r.get("key") for r in sel["rows"]],
                "verdicts": {str(r.get("seed")): row_verdict(r) for r in sel["rows"]},
            }
            for (d, m), sel in chosen.items()
        ],
    }


def write_report(out: str | Path, rows: list[dict[str, Any]], cfg: Any) -> str:
    """Write ``report.md`` (the selection rule in words above the tables), ``selection.json``
    (:func:`selection_record`) and the plots for the finished cells; returns the main
    tables."""
    from r2et.bench.plots import plot_caption, write_plots

    out = Path(out)
    rule = rule_of(cfg)
    acc, ratio, local = rule["max_acc_drop"], rule["min_deletion_ratio"], rule["min_distinct_ratio"]
    faithful = rule["require_faithful"]
    main = cfg.evaluate.get("explainer", "auto")
    main = "own" if main == "auto" else main
    table = results_table(
        rows, acc, cfg.methods, ratio, min_distinct_ratio=local, require_faithful=faithful,
        erattack_steps=cfg.evaluate.get("steps"),
    )  # fmt: skip
    plots = write_plots(out, rows, cfg)
    text = [
        "# r2et benchmark report",
        "",
        f"Datasets: {', '.join(cfg.datasets)}; methods: {', '.join(cfg.methods)}; "
        f"seeds: {', '.join(map(str, cfg.seeds))}.",
        evaluation_text(cfg.evaluate),
        "",
        selection_rule_text(**rule),
        "",
        *[f"**Warning:** {w}." for w in pretrain_warnings(rows)],
        table,
        "",
        "## Selected settings and cost",
        "",
        settings_table(rows, acc, ratio, local, faithful),
        "",
        *_section(
            bool(cfg.evaluate.get("certify")),
            "Certified top-k (`r2et.certify`)",
            "Attacked P@k is an upper bound on the worst case, certified P@k a lower bound: the "
            "truth lies between (docs/certify.md).",
            lambda: certified_table(rows, acc, ratio, local, faithful),
        ),
        *_section(
            bool(cfg.evaluate.get("explainers")),
            "Explainer generalisation",
            f"Each selected model (trained on `{main}` saliency) explained by other explainers, "
            "each attacked through itself by the same ensemble: ensemble P@k / deletion gain.",
            lambda: explainer_table(rows, acc, ratio, local, main, faithful),
        ),
        "## Plots",
        "",
        *[f"![{p.stem}](plots/{p.name})\n\n{plot_caption(p)}\n" for p in plots],
        "",
        f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Full rows: "
        "`results.csv`, `results.json`; configuration: `config.json`; the selection rule and "
        "what it selected, with each seed's verdict: `selection.json`.",
        "",
    ]
    atomic_write_json(out / "selection.json", selection_record(rows, cfg))
    atomic_write_text(out / "report.md", "\n".join(text))
    return table
