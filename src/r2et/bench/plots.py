"""Benchmark plots (PNG, readable without the code).

Each plot has a builder that returns the matplotlib ``Figure`` (``*_figure``; tests and the
HTML report read or embed it) and a ``plot_*`` function that saves it atomically. How they read
(issue 27): every method has its own colour, marker and line style
(:func:`~r2et.bench.plot_style.method_styles`); an axis showing a ratio (P@k, accuracy, deletion
gain) includes 0; a mean over seeds comes with its spread, min to max over the seeds (a band or
error bars); labels name the attack behind the numbers (the ensemble and its preset) and what a
cost measures.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from r2et.bench.plot_style import (  # noqa: E402
    COLLAPSED_LABEL,
    SPREAD_NOTE,
    ensemble_label,
    legend_handles,
    method_styles,
    panel_title,
    reference_handles,
    reference_line,
    spread,
    zero_based_limits,
)
from r2et.bench.selection import STABILITY, is_collapsed, rule_of, select, setting_of  # noqa: E402

#: One line under each plot of the report (by file stem; ``certified_*`` and ``saliency_*``
#: by prefix): what it shows and which way is better.
PLOT_CAPTIONS = {
    "p_at_k_vs_budget": "P@k of each method's selected setting under the budget-curve ensemble "
    "as the attack budget grows (mean over seeds, band: min–max); higher is more stable.",
    "accuracy_vs_p_at_k": "Test accuracy against P@k under the reported ensemble, each weight "
    "setting a point (mean over seeds, bars: min–max); up and right is better.",
    "stability_vs_faithfulness": "Deletion gain (how much more the prediction falls when the "
    "top-k units are removed than k random ones) against P@k under the reported ensemble, each "
    "weight setting a point; up and right is better, below the dashed line the top-k matter "
    "less than random units.",
    "training_cost": "Wall-clock training seconds per epoch of each method divided by "
    "vanilla's on the same data (log scale, error bars: min–max over seeds and weights); "
    "lower is cheaper.",
    "certified": "Certified P@k (a lower bound, solid) and attacked P@k (an upper bound, "
    "dashed) against the radius; the true worst case lies between.",
    "saliency": "Gradient saliency of a few test images, clean and after the ensemble attack, "
    "the top-k pixels outlined, one row per method.",
}


def plot_caption(path: str | Path) -> str:
    """The caption of a plot file of :func:`write_plots` (:data:`PLOT_CAPTIONS`); ``""`` for
    an unknown one."""
    stem = Path(path).stem
    return PLOT_CAPTIONS.get(stem) or PLOT_CAPTIONS.get(stem.split("_", 1)[0], "")


def _methods(rows: list[dict[str, Any]], order: list[str] | None) -> list[str]:
    """Methods present in ``rows``, in the configuration's order (then any others)."""
    present = list(dict.fromkeys(r["method"] for r in rows))
    ordered = [m for m in (order or []) if m in present]
    return ordered + [m for m in present if m not in ordered]


def _panels(n: int) -> tuple[Any, Any]:
    """A row of ``n`` dataset panels."""
    return plt.subplots(1, n, figsize=(4.4 * n, 3.6), squeeze=False, layout="constrained")


def _decorate(fig: Any, axes: Any, title: str, handles: list[Any] | None = None) -> Any:
    """One legend for all panels (``handles``, else the first panel's) and a title."""
    if handles is None:
        handles, _ = axes[0][0].get_legend_handles_labels()
    fig.legend(handles=handles, fontsize=8, loc="outside right center")
    fig.suptitle(title, fontsize=10)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def budget_curves_figure(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    order: list[str] | None = None,
    min_deletion_ratio: float | None = 0.9,
    preset: str = "fast",
    min_distinct_ratio: float | None = None,
    require_faithful: bool = False,
) -> Any:
    """The figure of :func:`plot_budget_curves`."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio, min_distinct_ratio, require_faithful)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = _methods(rows, order)
    styles = method_styles(methods)
    fig, axes = _panels(len(datasets))
    shown: set[str] = set()
    any_collapsed = banded = False
    for ax, d in zip(axes[0], datasets):
        for m in methods:
            sel = chosen.get((d, m))
            if sel is None:
                continue
            acc: dict[float, list[float]] = defaultdict(list)
            for r in sel["rows"]:
                for eps, p in (r.get("curve") or {}).items():
                    acc[float(eps)].append(p)
            if not acc:
                continue
            xs = sorted(acc)
            stats = [spread(acc[e]) for e in xs]
            st = styles[m]
            collapsed = any(is_collapsed(r) for r in sel["rows"])
            face = "none" if collapsed else st.color
            ax.plot([0.0, *xs], [1.0, *(s[0] for s in stats)], marker=st.marker,
                    linestyle=st.linestyle, label=m, color=st.color, mfc=face, ms=6,
                    alpha=0.9)  # fmt: skip
            if any(s[2] > s[1] for s in stats):  # seeds that differ
                lows, highs = [1.0, *(s[1] for s in stats)], [1.0, *(s[2] for s in stats)]
                ax.fill_between([0.0, *xs], lows, highs, color=st.color, alpha=0.15, lw=0)
                banded = True
            shown.add(m)
            any_collapsed = any_collapsed or collapsed
        ax.set_title(panel_title(rows, d), fontsize=9)
        ax.set_xlabel("attack budget eps (l_inf)")
        ax.set_ylabel(f"P@k under the {preset} ensemble")
        ax.set_xlim(left=0.0)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    title = "Top-k stability versus attack budget (higher is more stable)"
    if banded:
        title += f"\nshaded bands: {SPREAD_NOTE}"
    if any_collapsed:
        title += f"\nhollow: {COLLAPSED_LABEL} (a constant explanation, not a stable one)"
    return _decorate(fig, axes, title, legend_handles(styles, shown, any_collapsed, line=True))


def plot_budget_curves(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    path: Path,
    order: list[str] | None = None,
    min_deletion_ratio: float | None = 0.9,
    preset: str = "fast",
    min_distinct_ratio: float | None = None,
    require_faithful: bool = False,
) -> Path:
    """Ensemble-attack P@k (the ``budget_preset``) versus attack budget eps, one panel per
    dataset, one line per method (selected setting, mean over seeds, a band from the lowest to
    the highest seed where there are several; y from 0); hollow markers where the selected
    setting's explanation is collapsed on some seed
    (:func:`~r2et.bench.selection.is_collapsed`: its stability is that of a constant)."""
    fig = budget_curves_figure(
        rows, max_acc_drop, order, min_deletion_ratio, preset, min_distinct_ratio,
        require_faithful,
    )  # fmt: skip
    return _save(fig, path)


def certified_curves_figure(
    rows: list[dict[str, Any]], order: list[str] | None = None, name: str | None = None
) -> Any:
    """The figure of :func:`plot_certified_curves`."""
    if name is None:
        keys = [k for r in rows for k in r if k.startswith("cert_") and k.endswith("_curve")]
        name = keys[0][len("cert_") : -len("_curve")]
    col, norm_col = f"cert_{name}_curve", f"cert_{name}_norm"
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = _methods(rows, order)
    styles = method_styles(methods)
    fig, axes = _panels(len(datasets))
    norm = next((r.get(norm_col) for r in rows if r.get(norm_col)), "linf")
    for ax, d in zip(axes[0], datasets):
        for m in methods:
            sel = [r for r in rows if r["dataset"] == d and r["method"] == m]
            for key, style, label in ((col, "-", m), ("curve", "--", None)):
                if key == "curve" and norm != "linf":
                    continue
                acc: dict[float, list[float]] = defaultdict(list)
                for r in sel:
                    for eps, p in (r.get(key) or {}).items():
                        acc[float(eps)].append(p)
                if acc:
                    xs = sorted(acc)
                    ys = [spread(acc[e])[0] for e in xs]
                    ax.plot(xs, ys, style, marker=styles[m].marker, ms=4,
                            color=styles[m].color, label=label)  # fmt: skip
        ax.set_title(panel_title(rows, d), fontsize=9)
        ax.set_xlabel(f"radius ({norm})")
        ax.set_ylabel("P@k: certified (solid) / attacked (dashed)")
        ax.set_xlim(left=0.0)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    return _decorate(fig, axes, f"Certified top-k P@k ({name}) versus radius (higher is better)")


def plot_certified_curves(
    rows: list[dict[str, Any]],
    path: Path,
    order: list[str] | None = None,
    name: str | None = None,
) -> Path:
    """Certified P@k (a lower bound, solid) against radius, one panel per dataset, one colour
    and marker per method (every row's mean over seeds and weights of the method), with the
    attacked P@k of the budget curve (an upper bound, dashed) where the norms agree: the true
    worst-case P@k lies between. Reads the ``cert_<name>_curve`` columns (the first
    certificate when ``name`` is None)."""
    return _save(certified_curves_figure(rows, order, name), path)


def _scatter_figure(
    rows: list[dict[str, Any]],
    order: list[str] | None,
    y_key: str,
    y_label: str,
    title: str,
    y_top: float | None = None,
    zero_line: bool = False,
    majority: bool = False,
) -> Any:
    """Each weight setting (dataset, method, weight): mean ensemble P@k over its seeds (x, on
    [0, 1]) against the mean of ``y_key`` (y, from 0, up to ``y_top``), error bars from the
    lowest to the highest seed in both directions where there are several seeds; one panel per
    dataset, one marker per method; a setting whose explanation is collapsed on some seed
    (:func:`~r2et.bench.selection.is_collapsed`) drawn hollow, with a legend entry
    :data:`COLLAPSED_LABEL`; a dashed line at y = 0 when ``zero_line``; dotted reference lines
    at a random explanation's P@k (k/F) and, with ``majority``, at the majority-class rate,
    where the rows carry ``random_p_at_k`` / ``majority_rate``."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = _methods(rows, order)
    styles = method_styles(methods)
    fig, axes = _panels(len(datasets))
    shown: set[str] = set()
    any_collapsed = any_spread = any_major = any_random = False
    for ax, d in zip(axes[0], datasets):
        mine = [r for r in rows if r["dataset"] == d]
        ys_all: list[float] = []
        for m in methods:
            settings: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for r in mine:
                if r["method"] == m and r.get(y_key) is not None:
                    settings[setting_of(r)].append(r)
            points: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            st = styles[m]
            for group in settings.values():
                mx, lx, hx, nx = spread(r.get(STABILITY) for r in group)
                my, ly, hy, ny = spread(r.get(y_key) for r in group)
                if nx == 0 or ny == 0:
                    continue
                ys_all += [ly, hy]
                if hx > lx or hy > ly:  # seeds that differ
                    ax.errorbar(mx, my, xerr=[[mx - lx], [hx - mx]], yerr=[[my - ly], [hy - my]],
                                fmt="none", ecolor=st.color, elinewidth=0.9, capsize=2,
                                alpha=0.7)  # fmt: skip
                    any_spread = True
                points[any(is_collapsed(r) for r in group)].append((mx, my))
            for hollow, pts in points.items():
                if not pts:
                    continue
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=st.marker,
                           facecolors="none" if hollow else st.color, edgecolors=st.color,
                           linewidths=1.2, s=34, alpha=0.85, zorder=3)  # fmt: skip
                shown.add(m)
                any_collapsed = any_collapsed or hollow
        if zero_line:
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        any_random = reference_line(ax, mine, "random_p_at_k", vertical=True) or any_random
        if majority:
            any_major = reference_line(ax, mine, "majority_rate", vertical=False) or any_major
        ax.set_title(panel_title(rows, d), fontsize=9)
        ax.set_xlabel(f"P@k under {ensemble_label(mine)}\n(higher is more stable)")
        ax.set_ylabel(y_label)
        ax.set_xlim(0.0, 1.02)
        ax.set_ylim(*zero_based_limits(ys_all, top=y_top))
        ax.grid(alpha=0.3)
    if any_spread:
        title += f"\nerror bars: {SPREAD_NOTE}"
    if any_collapsed:
        title += f"\nhollow: {COLLAPSED_LABEL} (a constant explanation, not a stable one)"
    extra = reference_handles(any_major, any_random)
    return _decorate(fig, axes, title, legend_handles(styles, shown, any_collapsed, False, extra))


def accuracy_vs_patk_figure(rows: list[dict[str, Any]], order: list[str] | None = None) -> Any:
    """The figure of :func:`plot_accuracy_vs_patk`."""
    return _scatter_figure(
        rows, order, "accuracy", "test accuracy (higher is better)",
        "Accuracy versus explanation stability (each weight setting, mean over seeds)",
        y_top=1.02, majority=True,
    )  # fmt: skip


def plot_accuracy_vs_patk(
    rows: list[dict[str, Any]], path: Path, order: list[str] | None = None
) -> Path:
    """Each weight setting: test accuracy against ensemble P@k (both axes from 0), one panel
    per dataset (:func:`_scatter_figure`)."""
    return _save(accuracy_vs_patk_figure(rows, order), path)


def stability_vs_faithfulness_figure(
    rows: list[dict[str, Any]], order: list[str] | None = None
) -> Any:
    """The figure of :func:`plot_stability_vs_faithfulness`."""
    return _scatter_figure(
        rows, order, "deletion_gain",
        "deletion gain: top-k minus random units\n(higher is more faithful)",
        "Stability versus faithfulness (each weight setting, mean over seeds; up and right "
        "is better)",
        zero_line=True,
    )  # fmt: skip


def plot_stability_vs_faithfulness(
    rows: list[dict[str, Any]], path: Path, order: list[str] | None = None
) -> Path:
    """Each weight setting: deletion gain (faithfulness; the y axis includes 0 and starts there
    unless a gain is negative) against ensemble P@k (stability): a method is only useful up
    and to the right; stability bought by an explanation that no longer says why this input
    got this prediction sits to the right and down (below the dashed line at 0: the top-k
    units matter less than random ones), and a collapsed one is drawn hollow."""
    return _save(stability_vs_faithfulness_figure(rows, order), path)


MIN_TIMED_SECONDS = 1.0
"""Vanilla fine-tuning shorter than this (seconds, all epochs) is timing noise: not plotted."""

NICE_RATIOS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def _mean_cost(rows: list[dict[str, Any]], dataset: str, method: str) -> float:
    return spread(
        r.get("train_seconds_per_epoch")
        for r in rows
        if r["dataset"] == dataset and r["method"] == method
    )[0]


def _cost_ratios(rows: list[dict[str, Any]], dataset: str, method: str) -> list[float]:
    """Each row's training seconds per epoch divided by vanilla's mean on ``dataset``."""
    ref = _mean_cost(rows, dataset, "vanilla")
    vals = [
        r.get("train_seconds_per_epoch")
        for r in rows
        if r["dataset"] == dataset and r["method"] == method
    ]
    if not ref > 0:
        return []
    return [v / ref for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]


def training_cost_figure(
    rows: list[dict[str, Any]], order: list[str] | None = None, epochs: int | None = None
) -> Any | None:
    """The figure of :func:`plot_training_cost` (None when no dataset is timed)."""
    from matplotlib.ticker import FixedLocator, NullLocator

    all_datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    runs = max(1, int(epochs or 1))
    datasets = [
        d for d in all_datasets if _mean_cost(rows, d, "vanilla") * runs >= MIN_TIMED_SECONDS
    ]
    if not datasets:
        return None
    methods = _methods(rows, order)
    styles = method_styles(methods)
    fig, ax = plt.subplots(
        figsize=(min(14.0, 3.0 + 1.8 * len(datasets)), 4.0), layout="constrained"
    )
    width = 0.8 / max(1, len(methods))
    shown: list[float] = []
    spread_drawn = False
    for j, m in enumerate(methods):
        stats = [spread(_cost_ratios(rows, d, m)) for d in datasets]
        means = [s[0] for s in stats]
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(datasets))]
        st = styles[m]
        ax.bar(xs, means, width=width, label=m, color=st.color, hatch=st.hatch,
                      edgecolor="white", linewidth=0.4)  # fmt: skip
        for x, (mean, lo, hi, n) in zip(xs, stats):
            if n > 1 and hi > lo:
                ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], fmt="none",
                            ecolor="black", elinewidth=0.8, capsize=2)  # fmt: skip
                spread_drawn = True
                shown += [lo, hi]
            if mean == mean:  # the ratio above the bar and its error bar
                ax.text(x, max(mean, hi) * 1.04, f"{mean:.1f}×", ha="center", va="bottom",
                        fontsize=7)  # fmt: skip
        shown += [v for v in means if v == v and v > 0]
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_yscale("log")
    shown = [v for v in shown if v > 0]
    lo, hi = min(shown + [1.0]), max(shown + [1.0])
    ticks = [t for t in NICE_RATIOS if lo / 2.5 <= t <= hi * 2.5]
    ax.set_ylim(min(ticks[0], lo / 1.5), max(ticks[-1], hi * 1.6))
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_yticklabels([f"{t:g}×" for t in ticks])
    ax.set_ylabel("training seconds per epoch (wall clock)\n÷ vanilla's on the same data")
    left_out = [d for d in all_datasets if d not in datasets]
    title = "Training cost per method, relative to vanilla (lower is cheaper)"
    if spread_drawn:
        title += f"\nerror bars: {SPREAD_NOTE} and weights"
    if left_out:
        title += f"\nnot shown (vanilla trains < {MIN_TIMED_SECONDS:g} s: noise): " + ", ".join(
            left_out
        )
    ax.set_title(title, fontsize=10)
    fig.legend(fontsize=8, loc="outside right center")
    return fig


def plot_training_cost(
    rows: list[dict[str, Any]],
    path: Path,
    order: list[str] | None = None,
    epochs: int | None = None,
) -> Path | None:
    """Wall-clock training seconds per epoch of each method relative to vanilla's, per
    dataset: bars (mean over the method's rows, one hatch per method) on a log axis with
    plain ratio ticks (``1×, 2×, 5×``), each bar's ratio written on it and, where there are
    several rows (seeds, weights), an error bar from the lowest to the highest.

    A dataset whose vanilla fine-tuning took less than :data:`MIN_TIMED_SECONDS` in total
    (``epochs`` × seconds per epoch; per epoch when ``epochs`` is None) is left out and named
    in the title: its ratios would be timing noise. Returns None (no plot) when no dataset
    is left.
    """
    fig = training_cost_figure(rows, order, epochs)
    return None if fig is None else _save(fig, path)


def saliency_panel_figure(panel: dict[str, Any]) -> Any:
    """The figure of :func:`plot_saliency_panel`."""
    from r2et.metrics import topk_mask

    meta, x = panel["meta"], panel["x"]
    k, eps, methods = int(meta["k"]), float(meta["eps"]), list(meta["methods"])
    n, (h, w) = len(x), x.shape[-2:]
    fig, axes = plt.subplots(
        1 + len(methods),
        2 * n,
        figsize=(1.75 * 2 * n + 1.4, 1.85 * (1 + len(methods))),
        squeeze=False,
        layout="constrained",
    )
    for i in range(n):
        img = x[i].permute(1, 2, 0).squeeze(-1).numpy()
        axes[0][2 * i].imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[0][2 * i].set_title(f"test input {i}", fontsize=8)
        axes[0][2 * i + 1].axis("off")
    axes[0][0].set_ylabel("input", fontsize=9)
    image = None
    for row, method in enumerate(methods, start=1):
        for i in range(n):
            for c, maps in enumerate((panel["clean"], panel["adv"])):
                scores = maps[row - 1, i]
                ax = axes[row][2 * i + c]
                s = scores.view(h, w)
                image = ax.imshow(
                    (s / s.max().clamp_min(1e-12)).numpy(), cmap="magma", vmin=0, vmax=1
                )
                mask = topk_mask(scores[None], k)[0].view(h, w).float().numpy()
                ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.7)
                p = float(panel["p_at_k"][row - 1, i])
                ax.set_title("clean" if c == 0 else f"attacked, P@{k}={p:.2f}", fontsize=7)
        acc = meta["accuracy"][row - 1]
        acc_text = "n/a" if acc is None else f"{acc:.2f}"
        axes[row][0].set_ylabel(f"{method}\nacc {acc_text}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes[1:, :].ravel().tolist(), shrink=0.5, label="saliency / map max")
    grey = eps * 255
    budget = f"{round(grey)}/255" if abs(grey - round(grey)) < 1e-6 else f"{eps:g}"
    box = "inside the data box" if meta.get("box", True) else "no data box"
    fig.suptitle(
        f"{meta['dataset']}: gradient saliency before/after the {meta['preset']} ensemble "
        f"attack (l_inf eps={budget}, {box}, top-{k} outlined)",
        fontsize=10,
    )
    return fig


def plot_saliency_panel(panel: dict[str, Any], path: Path) -> Path:
    """A stored saliency panel (:func:`r2et.bench.panels.load_saliency_panel`): the test
    inputs (top row) and, for every method (one row each: its selected setting, labelled with
    the method and its test accuracy), the gradient saliency before and after the ensemble
    attack (a column pair per input), each map scaled to its own maximum with one colour bar,
    the top-k pixels outlined and the attacked P@k above the map. Reads only the stored
    tensors: rendering never trains or attacks."""
    return _save(saliency_panel_figure(panel), path)


def write_plots(
    out: Path, rows: list[dict[str, Any]], cfg: Any, plots_dir: Path | None = None
) -> list[Path]:
    """All plots of a benchmark folder ``out``, from its stored results only (``rows`` and the
    saliency panels the runner stored), written to ``plots_dir`` (default ``out/plots``);
    returns their paths."""
    if not rows:
        return []
    plots = Path(out) / "plots" if plots_dir is None else Path(plots_dir)
    rule = rule_of(cfg)
    paths = [
        plot_budget_curves(
            rows,
            rule["max_acc_drop"],
            plots / "p_at_k_vs_budget.png",
            cfg.methods,
            rule["min_deletion_ratio"],
            cfg.evaluate.get("budget_preset", "fast"),
            rule["min_distinct_ratio"],
            rule["require_faithful"],
        ),
        plot_accuracy_vs_patk(rows, plots / "accuracy_vs_p_at_k.png", cfg.methods),
        plot_stability_vs_faithfulness(rows, plots / "stability_vs_faithfulness.png", cfg.methods),
    ]
    if any(r["method"] == "vanilla" for r in rows):
        epochs = int(cfg.finetune.get("epochs", 1) or 0)
        cost = plot_training_cost(rows, plots / "training_cost.png", cfg.methods, epochs)
        if cost is not None:
            paths.append(cost)
    for name in cfg.evaluate.get("certify") or {}:
        if any(f"cert_{name}_curve" in r for r in rows):
            path = plots / f"certified_{name}.png"
            paths.append(plot_certified_curves(rows, path, cfg.methods, name))
    from r2et.bench.panels import load_saliency_panel

    for d in dict.fromkeys(r["dataset"] for r in rows if r.get("modality") == "image"):
        panel = load_saliency_panel(out, d)  # stored by the runner; None when absent
        if panel is not None:
            paths.append(plot_saliency_panel(panel, plots / f"saliency_{d}.png"))
    return paths
