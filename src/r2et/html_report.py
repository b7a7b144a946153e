"""Single-file HTML reports a person can read (issue 27): one for a run folder, one for a
benchmark folder.

* :func:`write_run_report` — a run folder (``config.json``, ``metrics.json``,
  ``evaluation_*.json``, ``model.safetensors``; :mod:`r2et.runs`): what was trained, the
  training curve, each stored evaluation with its verdict, and the saliency of a few test
  inputs drawn (images: heat maps; tables: bars; :func:`r2et.plotting.plot_explanation`). The
  run is loaded with :func:`r2et.runs.load_run` without ``trust_factory``, so nothing outside
  ``r2et`` and ``torch`` is imported; a run that cannot be loaded that way (a user factory, a
  weights-only run) or whose data is not at hand gets its report without the pictures, saying
  why.
* :func:`write_bench_report_html` — a benchmark folder (``config.json``, ``results.json``; the
  output of ``r2et bench``): the report of :func:`r2et.bench.report.write_report` (selection
  rule, results tables with the verdict column, settings and cost) as HTML, each seed's verdict
  in words, and every plot of :func:`r2et.bench.plots.write_plots`, drawn again from the stored
  rows.

Both are self-contained (tables, plots embedded as base64 PNG, no outside file or script),
explain every metric in one line with the direction that is better (:data:`METRIC_HELP`), put
accuracy beside the majority-class rate and P@k beside a random explanation's k/F, escape every
text they include (:func:`html.escape`) and are written atomically. Nothing is trained or
attacked.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import tempfile
from pathlib import Path
from typing import Any

from r2et._io import atomic_write_text, read_json
from r2et._version import __version__
from r2et.verdict import METRIC_HELP

__all__ = [
    "METRIC_HELP",
    "bench_report_html",
    "run_report_html",
    "write_bench_report_html",
    "write_run_report",
]


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .55em;vertical-align:top}
th{background:#f2f2f2;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:.5em .8em;border-left:4px solid #2a7;background:#eef8f1;margin:.6em 0}
.verdict.flag{border-color:#c33;background:#fbeeee}
figure{margin:1em 0} figcaption{font-size:.9em;color:#444}
img{max-width:100%} .note{color:#555;font-size:.92em} code{background:#f4f4f4;padding:0 .2em}
"""


class _Html(str):
    """Text that is already HTML (built here from escaped parts): not escaped again."""


def _e(value: Any) -> _Html:
    """``value`` as escaped HTML text (an :class:`_Html` value as it is)."""
    return value if isinstance(value, _Html) else _Html(html.escape(str(value), quote=True))


def _md(text: str) -> _Html:
    """Escaped ``text`` with the report's inline markdown as tags: ``**b**``, ``*i*``,
    ```code```."""
    out = html.escape(text, quote=True)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return _Html(out)


def _num(value: Any, digits: int = 3) -> str:
    """A number for a table (``–`` for None, NaN or text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    if isinstance(value, int):
        return str(value)
    if value != 0 and abs(value) < 10 ** (1 - digits):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def _table(header: list[Any], rows: list[list[Any]]) -> _Html:
    """An HTML table; every cell escaped (unless it is :class:`_Html`), numbers right-aligned."""

    def cell(v: Any, tag: str) -> str:
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        text = _num(v) if number else _e(v)
        attr = ' class="num"' if number else ""
        return f"<{tag}{attr}>{text}</{tag}>"

    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(v, "td") for v in r) + "</tr>" for r in rows)
    return _Html(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _markdown_table(text: str) -> _Html:
    """The markdown tables of :mod:`r2et.bench.report` (``| a | b |`` lines) as HTML tables;
    other lines as paragraphs (inline markdown kept)."""
    parts: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            parts.append(
                _table([_md(c) for c in table[0]], [[_md(c) for c in r] for r in table[2:]])
            )
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.strip():
            parts.append(f"<p>{_md(line)}</p>")
    flush()
    return _Html("\n".join(parts))


def _png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _img(png: bytes, alt: str, caption: str = "") -> _Html:
    """A figure with the PNG embedded as base64 and an escaped caption."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return _Html(f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">{cap}</figure>')


def _verdict_box(verdict: dict[str, Any] | None) -> _Html:
    """The verdict's sentence (:func:`r2et.verdict.explanation_verdict`), flagged in red."""
    if not verdict:
        return _Html('<p class="note">No verdict stored.</p>')
    flags = verdict.get("flags") or []
    head = "⚠ " + ", ".join(flags) if flags else "local and faithful"
    cls = "verdict flag" if flags else "verdict"
    return _Html(
        f'<div class="{cls}"><strong>Verdict: {_e(head)}.</strong> {_e(verdict.get("text", ""))}'
        "</div>"
    )


def _guide(keys: list[str]) -> _Html:
    """The table of what each metric means and which way is better (:data:`METRIC_HELP`)."""
    rows = [list(METRIC_HELP[k]) for k in keys if k in METRIC_HELP]
    return _table(["Metric", "What it means", "Better"], rows)


def _page(title: str, parts: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{_e(title)}</h1>\n" + "\n".join(parts) + f'\n<p class="note">Written by r2et '
        f"{_e(__version__)} from stored files only; nothing was trained or attacked.</p>"
        "\n</body></html>\n"
    )


# ------------------------------------------------------------------------------- run folder
def _run_summary(config: dict[str, Any], metrics: dict[str, Any]) -> _Html:
    data = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    method = config.get("method") if isinstance(config.get("method"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    facts = [
        ["dataset", f"{data.get('name', config.get('dataset', '?'))} ({data.get('modality', '?')}"
         f"; train/val/test {data.get('n_train', '?')}/{data.get('n_val', '?')}/"
         f"{data.get('n_test', '?')}; data seed {config.get('data_seed', '?')})"],
        ["method", f"{method.get('name', '?')} {method.get('hyperparameters', {})}"],
        ["k (ranked units)", method.get("k", "–")],
        ["explainer", method.get("explainer", "the dataset's")],
        ["model", {k: v for k, v in model.items() if k not in ("input_shape",)}],
        ["training", f"{config.get('epochs', '?')} epochs, lr {config.get('lr', '?')}, batch "
         f"{config.get('batch_size', '?')}, seed {config.get('seed', '?')}"],
        ["validation accuracy (best epoch)", metrics.get("val_accuracy", "–")],
        ["best epoch", metrics.get("best_epoch", "–")],
        ["training seconds per epoch (wall clock)", metrics.get("seconds_per_epoch", "–")],
        ["weights SHA-256", str(config.get("weights_sha256", "–"))[:16] + "…"],
        ["versions", config.get("versions", "–")],
    ]  # fmt: skip
    return _table(["", "value"], facts)


def _history_png(history: list[dict[str, Any]]) -> bytes | None:
    """Validation accuracy (from 0) and training loss per epoch."""
    import matplotlib.pyplot as plt

    epochs = [h.get("epoch") for h in history]
    if not history or None in epochs:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 2.8), layout="constrained")
    a1.plot(epochs, [h.get("val_accuracy", math.nan) for h in history], marker="o")
    a1.set_ylim(0, 1.02)
    a1.set_ylabel("validation accuracy (higher is better)")
    a2.plot(epochs, [h.get("train_loss", math.nan) for h in history], marker="s", color="C1")
    a2.set_ylim(bottom=0)
    a2.set_ylabel("training loss (lower is better)")
    for ax in (a1, a2):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle("Training, per epoch")
    return _png(fig)


def _attack_png(ev: dict[str, Any]) -> bytes | None:
    """P@k under each stored attack (bars from 0 to 1, std as error bar) with a random
    explanation's k/F as a dotted line."""
    import matplotlib.pyplot as plt

    attacks = ev.get("attacks") or {}
    if not attacks:
        return None
    names = list(attacks)
    means = [attacks[a].get("p_at_k_mean") or 0.0 for a in names]
    stds = [attacks[a].get("p_at_k_std") or 0.0 for a in names]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 3.0), layout="constrained")
    ax.bar(range(len(names)), means, yerr=stds, capsize=3, color="C0")
    ax.set_xticks(range(len(names)), [_attack_name(a, attacks[a]) for a in names], fontsize=8)
    rand = ev.get("random_p_at_k")
    if isinstance(rand, (int, float)):
        ax.axhline(rand, ls=":", color="black", label="random explanation (k/F)")
        ax.legend(fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"P@{ev.get('k', 'k')} (higher is more stable)")
    ax.set_title("Top-k stability under each attack (error bars: std over inputs)", fontsize=9)
    return _png(fig)


def _attack_name(name: str, vals: dict[str, Any]) -> str:
    """``ensemble (standard)``, ``erattack (50 steps)``: the attack behind the numbers."""
    if vals.get("preset"):
        return f"{name} ({vals['preset']})"
    return f"{name} ({vals['steps']} steps)" if vals.get("steps") else name


def _evaluation_section(path: Path, ev: dict[str, Any], refs: dict[str, float]) -> list[str]:
    k = ev.get("k", "k")
    major = ev.get("majority_rate", refs.get("majority_rate"))
    rand = ev.get("random_p_at_k", refs.get("random_p_at_k"))
    help_ = {key: v[1:] for key, v in METRIC_HELP.items()}
    rows: list[list[Any]] = [
        ["accuracy (whole split)", ev.get("accuracy"),
         _beside("majority class", ev.get("accuracy"), major), *help_["accuracy"]],
    ]  # fmt: skip
    for name, vals in (ev.get("attacks") or {}).items():
        where = f"eps {vals.get('eps', '?')}, {'inside' if vals.get('box') else 'no'} data box"
        rows.append(
            [f"P@{k} under {_attack_name(name, vals)}, {where}", vals.get("p_at_k_mean"),
             _beside("random explanation k/F", vals.get("p_at_k_mean"), rand), *help_["p_at_k"]]
        )  # fmt: skip
        rows.append([f"Kendall under {name}", vals.get("kendall_mean"), "1 = same order",
                     *help_["kendall"]])  # fmt: skip
        if "seconds" in vals:
            rows.append([f"{name}: seconds", vals["seconds"], "", *help_["seconds"]])
    faith = ev.get("faithfulness") or {}
    ci = faith.get("deletion_gain_ci")
    ci_text = f"95% interval [{_num(ci[0])}, {_num(ci[1])}]" if ci else "0 = random units"
    rows += [
        ["deletion gain", faith.get("deletion_gain"), ci_text, *help_["deletion_gain"]],
        [
            "occlusion agreement",
            faith.get("occlusion_agreement"),
            "",
            *help_["occlusion_agreement"],
        ],
    ]
    loc = ev.get("locality") or {}
    rows += [
        ["distinct top-k sets", loc.get("distinct_topk_sets"), f"of {ev.get('n', '?')} inputs",
         *help_["distinct_topk_sets"]],
        ["share with the most common top-k", loc.get("top_share"), "", *help_["top_share"]],
        ["P@k with the global top-k", loc.get("global_topk_p_at_k"), "",
         *help_["global_topk_p_at_k"]],
    ]  # fmt: skip
    if isinstance(ev.get("thickness"), dict):
        rows.append(["thickness", ev["thickness"].get("mean"),
                     f"radius {ev['thickness'].get('radius')}", *help_["thickness"]])  # fmt: skip
    verdict = ev.get("verdict") or _verdict_of(ev)
    parts = [
        f"<h3>{_e(path.name)}</h3>",
        f"<p>{_e(ev.get('split', 'test'))} split, explanations of the first {_e(ev.get('n', '?'))} "
        f"inputs, top-{_e(k)} units; explainer {_e(ev.get('explainer', 'as trained'))}.</p>",
        _verdict_box(verdict),
        _table(["Metric", "Value", "Beside it", "What it means", "Better"], rows),
    ]
    png = _attack_png({**ev, "random_p_at_k": rand})
    if png:
        parts.append(_img(png, "P@k under each attack", "P@k under each stored attack."))
    return parts


def _beside(name: str, value: Any, ref: Any) -> str:
    """``"majority class: 0.628"``, with a warning when ``value`` is not above ``ref``."""
    text = f"{name}: {_num(ref)}"
    numbers = all(isinstance(v, (int, float)) for v in (value, ref))
    return text + (" ⚠ not above it" if numbers and value <= ref else "")


def _verdict_of(ev: dict[str, Any]) -> dict[str, Any] | None:
    """The verdict of an evaluation stored before ``evaluate`` returned one."""
    from r2et.verdict import explanation_verdict

    loc, faith = ev.get("locality") or {}, ev.get("faithfulness") or {}
    if not loc and not faith:
        return None
    return explanation_verdict(
        loc.get("top_share"), loc.get("distinct_per_100"), faith.get("deletion_gain_ci"),
        faith.get("deletion_gain"),
    )  # fmt: skip


def _examples(run_dir: Path, n: int, split: str) -> tuple[list[str], dict[str, float]]:
    """The saliency of the first ``n`` inputs of ``split`` drawn, and the references the data
    gives (``majority_rate``, ``random_p_at_k``); a note instead when the run or its data
    cannot be loaded without trusting code."""
    import torch

    from r2et._kwargs import take_rows
    from r2et.data import load_run_dataset
    from r2et.describe import class_name, unit_labels
    from r2et.explain import as_explainer
    from r2et.plotting import plot_explanation
    from r2et.runs import load_run

    try:
        run = load_run(run_dir)  # trust_factory=False: imports nothing outside r2et and torch
        ds = load_run_dataset(run.config)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
        return [f'<p class="note">Saliency not drawn: {_e(err)}</p>'], {}
    method = run.config.get("method") if isinstance(run.config.get("method"), dict) else {}
    trained = method.get("explainer")
    options = dict(trained) if isinstance(trained, dict) else dict(ds.default_explainer or {})
    ex = as_explainer({"method": "grad", **options, "output": "logit"})
    k = method.get("k") if isinstance(method.get("k"), int) else ds.default_k
    x, y, kw = ds.split(split)
    n = max(0, min(int(n), len(x)))
    refs = {"majority_rate": float(torch.bincount(y).max()) / max(1, len(y))}
    if n == 0:
        return [], refs
    xb, kwb = x[:n], take_rows(kw, slice(0, n), len(x))
    scores = ex.scores(run.model, xb, **kwb).detach()
    refs["random_p_at_k"] = k / scores.shape[1]
    with torch.no_grad():
        pred = run.model(xb, **kwb).argmax(1)
    groups = ex.config().get("groups")
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            title = (f"{split}[{i}]: label {class_name(ds, int(y[i]))}, "
                     f"predicted {class_name(ds, int(pred[i]))}")  # fmt: skip
            mask = kwb["mask"][i] if isinstance(kwb.get("mask"), torch.Tensor) else None
            path = Path(tmp) / f"example{i}.png"
            plot_explanation(ds, xb[i], scores[i], k, path, title=title, mask=mask, groups=groups)
            parts.append(_img(path.read_bytes(), title, f"{title}: saliency, top-{k} marked."))
            if ds.modality == "tabular":
                labels = unit_labels(ds, xb[i], groups)
                order = scores[i].argsort(descending=True).tolist()[:k]
                top = [[r, labels[j], float(scores[i, j])] for r, j in enumerate(order, 1)]
                parts.append(_table(["rank", "unit (this row's value)", "saliency"], top))
    return parts, refs


def run_report_html(run_dir: str | Path, n_examples: int = 3, split: str = "test") -> str:
    """The HTML text of a run folder's report (see the module docstring): its configuration,
    training curve, every ``evaluation_*.json`` (metrics beside their references, each with
    what it means, the verdict, a P@k chart) and the saliency of the first ``n_examples``
    inputs of ``split``. Raises ``FileNotFoundError`` for a folder without ``config.json``."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{run_dir / 'config.json'} is not a run configuration")
    metrics_path = run_dir / "metrics.json"
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    metrics = metrics if isinstance(metrics, dict) else {}
    examples, refs = _examples(run_dir, n_examples, split)
    parts = ["<h2>Run</h2>", _run_summary(config, metrics)]
    history = metrics.get("history")
    png = _history_png(history) if isinstance(history, list) else None
    if png:
        parts.append(_img(png, "training curve", "Validation accuracy and loss per epoch."))
    parts.append("<h2>Evaluations</h2>")
    found = sorted(run_dir.glob("evaluation_*.json"))
    for path in found:
        try:
            ev = read_json(path)
        except (ValueError, OSError) as err:
            parts.append(f'<p class="note">{_e(path.name)} not read: {_e(err)}</p>')
            continue
        if isinstance(ev, dict):
            parts += _evaluation_section(path, ev, refs)
    if not found:
        parts.append(
            '<p class="note">No evaluation stored: <code>r2et evaluate RUN</code> attacks the '
            "run's explanations and stores <code>evaluation_test.json</code>.</p>"
        )
    parts += [f"<h2>Saliency of {_e(split)} inputs</h2>", *examples]
    parts += ["<h2>What the numbers mean</h2>", _guide(list(METRIC_HELP))]
    return _page(f"r2et run report: {run_dir.resolve().name}", parts)


def write_run_report(
    run_dir: str | Path, out: str | Path | None = None, n_examples: int = 3, split: str = "test"
) -> Path:
    """Write :func:`run_report_html` of ``run_dir`` to ``out`` (default
    ``run_dir/report.html``) atomically; returns the path."""
    out = Path(run_dir) / "report.html" if out is None else Path(out)
    atomic_write_text(out, run_report_html(run_dir, n_examples, split))
    return out


# ---------------------------------------------------------------------------- bench folder
def _dataset_refs(name: str, rows: list[dict[str, Any]], cfg: Any) -> dict[str, float]:
    """``majority_rate`` and ``random_p_at_k`` of dataset ``name``: the rows' own (means over
    them), else computed from the dataset when it is at hand without a download (image and
    table data: F counts the ranked units, attributes when the bench ranked them)."""
    out: dict[str, float] = {}
    for key in ("majority_rate", "random_p_at_k"):
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if vals:
            out[key] = sum(vals) / len(vals)
    if len(out) == 2 or not rows:
        return out
    try:
        import torch

        from r2et.data import load_dataset

        load = cfg.datasets_options.get(name, {}).get("load", {})
        ds = load_dataset(name, download=False, seed=int(rows[0].get("seed", 0)), **load)
        y = ds.split("test")[1]
        out.setdefault("majority_rate", float(torch.bincount(y).max()) / max(1, len(y)))
        groups = cfg.evaluate.get("groups", "auto")
        if groups == "auto":
            groups = bool((ds.default_explainer or {}).get("groups"))
        if ds.modality == "image":
            units = int(ds.input_shape[-1] * ds.input_shape[-2])
        elif ds.modality == "tabular":
            units = len(ds.groups) if groups and ds.groups else int(ds.input_shape[0])
        else:
            return out
        k = rows[0].get("k")
        if isinstance(k, (int, float)):
            out.setdefault("random_p_at_k", float(k) / units)
    except (ValueError, FileNotFoundError, OSError, RuntimeError, KeyError, TypeError):
        pass
    return out


def _results_html(rows: list[dict[str, Any]], cfg: Any) -> list[str]:
    from r2et.bench.report import format_cell, results_data
    from r2et.bench.selection import rule_of

    parts = []
    blocks = results_data(rows, methods=cfg.methods, erattack_steps=cfg.evaluate.get("steps"),
                          **rule_of(cfg))  # fmt: skip
    for block in blocks:
        d = block["dataset"]
        refs = _dataset_refs(d, [r for r in rows if r["dataset"] == d], cfg)
        header: list[Any] = ["Method"]
        for key, head, _ in block["columns"]:
            header.append(head)
            if key == "accuracy":
                header.append("Majority class")
            elif key == "ensemble_p_at_k_mean":
                header.append("Random k/F")
        header.append("Verdict")
        table = []
        for entry in block["methods"]:
            line: list[Any] = [entry["method"] + ("" if entry["admissible"] else " †")]
            for key, _, fmt in block["columns"]:
                text = _e(format_cell(*entry["cells"][key], fmt))
                line.append(_Html(f"<strong>{text}</strong>") if entry["best"][key] else text)
                if key == "accuracy":
                    line.append(_num(refs.get("majority_rate")))
                elif key == "ensemble_p_at_k_mean":
                    line.append(_num(refs.get("random_p_at_k")))
            flagged = entry["verdict"].startswith("⚠")
            style = ' style="color:#b22"' if flagged else ""
            line.append(_Html(f"<span{style}>{_e(entry['verdict'])}</span>"))
            table.append(line)
        parts += [f"<h3>{_e(d)}</h3>", _table(header, table)]
        parts += [f"<p>{_md(n)}</p>" for n in block["notes"] if n.strip()]
    return parts


def _verdicts_html(rows: list[dict[str, Any]], cfg: Any) -> _Html:
    """Each seed's verdict in words, for the selected setting of every dataset and method."""
    from r2et.bench.selection import row_verdict, rule_of, select

    table = []
    for (d, m), sel in select(rows, **rule_of(cfg)).items():
        name, val = sel["setting"]
        setting = "defaults" if val is None else f"{name}={val:g}"
        for r in sel["rows"]:
            v = row_verdict(r)
            flags = ", ".join(v["flags"]) or "–"
            table.append([d, m, setting, r.get("seed", "?"), flags, v["text"]])
    return _table(["Dataset", "Method", "Setting", "Seed", "Flags", "Verdict"], table)


def bench_report_html(bench_dir: str | Path) -> str:
    """The HTML text of a benchmark folder's report (see the module docstring), from its
    ``config.json`` and ``results.json`` (and stored saliency panels). Raises
    ``FileNotFoundError`` when either file is missing, ``ValueError`` when one is invalid."""
    from r2et.bench.config import BenchConfig
    from r2et.bench.plots import plot_caption, write_plots
    from r2et.bench.report import (
        VERDICT_LEGEND,
        certified_table,
        evaluation_text,
        explainer_table,
        pretrain_warnings,
        settings_table,
    )
    from r2et.bench.selection import rule_of, selection_rule_text

    bench_dir = Path(bench_dir)
    cfg = BenchConfig.from_dict(read_json(bench_dir / "config.json"))
    rows = read_json(bench_dir / "results.json")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{bench_dir / 'results.json'} must hold a list of result rows")
    rule = rule_of(cfg)
    args = (rows, rule["max_acc_drop"], rule["min_deletion_ratio"], rule["min_distinct_ratio"])
    parts = [
        f"<p>Datasets: {_e(', '.join(cfg.datasets))}; methods: {_e(', '.join(cfg.methods))}; "
        f"seeds: {_e(', '.join(map(str, cfg.seeds)))}; {len(rows)} finished cells.</p>",
        f"<p>{_md(evaluation_text(cfg.evaluate))}</p>",
        f"<p>{_md(selection_rule_text(**rule))}</p>",
        *[f"<p><strong>Warning:</strong> {_e(w)}.</p>" for w in pretrain_warnings(rows)],
        "<h2>Results (selected setting of each method, mean ± std over seeds)</h2>",
        *_results_html(rows, cfg),
        f"<p>{_md(VERDICT_LEGEND)}</p>",
        "<h2>Each seed's verdict</h2>",
        _verdicts_html(rows, cfg),
        "<h2>Selected settings and cost</h2>",
        _markdown_table(settings_table(*args, require_faithful=rule["require_faithful"])),
    ]
    main = cfg.evaluate.get("explainer", "auto")
    if cfg.evaluate.get("certify"):
        parts += ["<h2>Certified top-k</h2>",
                  _markdown_table(certified_table(*args, rule["require_faithful"]))]  # fmt: skip
    if cfg.evaluate.get("explainers"):
        table = explainer_table(*args, "own" if main == "auto" else main, rule["require_faithful"])
        parts += ["<h2>Explainer generalisation</h2>", _markdown_table(table)]
    parts += [
        "<h2>What the columns mean</h2>",
        _guide(["accuracy", "majority_rate", "p_at_k", "random_p_at_k", "deletion_gain",
                "occlusion_agreement", "distinct_topk_sets", "ground_truth_precision",
                "thickness"]),
        "<h2>Plots</h2>",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_plots(bench_dir, rows, cfg, plots_dir=Path(tmp)):
            parts.append(_img(path.read_bytes(), path.stem, plot_caption(path)))
    return _page(f"r2et benchmark report: {bench_dir.resolve().name}", parts)


def write_bench_report_html(bench_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write :func:`bench_report_html` of ``bench_dir`` to ``out`` (default
    ``bench_dir/report.html``) atomically; returns the path."""
    out = Path(bench_dir) / "report.html" if out is None else Path(out)
    atomic_write_text(out, bench_report_html(bench_dir))
    return out
