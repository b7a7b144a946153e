"""Benchmark plots (PNG, readable without the code)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from r2et.bench.selection import is_collapsed, rule_of, select  # noqa: E402

#: Legend label of the hollow markers: cells whose explanation is collapsed (r2et.verdict).
COLLAPSED_LABEL = "collapsed top-k"


def _methods(rows: list[dict[str, Any]], order: list[str] | None) -> list[str]:
    """Methods present in ``rows``, in the configuration's order (then any others)."""
    present = list(dict.fromkeys(r["method"] for r in rows))
    ordered = [m for m in (order or []) if m in present]
    return ordered + [m for m in present if m not in ordered]


def _colors(methods: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _panels(n: int) -> tuple[Any, Any]:
    """A row of ``n`` dataset panels."""
    return plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, layout="constrained")


def _legend(colors: dict[str, Any], shown: set[str], collapsed: bool, line: bool) -> list[Any]:
    """Legend handles: a filled marker per method in ``shown`` (with a line when ``line``), and
    a hollow one labelled :data:`COLLAPSED_LABEL` when some point is ``collapsed``."""
    from matplotlib.lines import Line2D

    style = "-" if line else "none"
    handles = [
        Line2D([], [], color=c, marker="o", linestyle=style, label=m)
        for m, c in colors.items()
        if m in shown
    ]
    if collapsed:
        handles.append(
            Line2D([], [], color="grey", marker="o", mfc="none", linestyle="none",
                   label=COLLAPSED_LABEL)
        )  # fmt: skip
    return handles


def _finish(fig: Any, axes: Any, title: str, path: Path, handles: list[Any] | None = None) -> Path:
    """One legend for all panels (``handles``, else the first panel's), a title, and an
    atomic save."""
    if handles is None:
        handles, _ = axes[0][0].get_legend_handles_labels()
    fig.legend(handles=handles, fontsize=8, loc="outside right center")
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


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
    dataset, one line per method (selected setting, mean over seeds); hollow markers where the
    selected setting's explanation is collapsed on some seed
    (:func:`~r2et.bench.selection.is_collapsed`: its stability is that of a constant)."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio, min_distinct_ratio, require_faithful)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = _methods(rows, order)
    colors = _colors(methods)
    fig, axes = _panels(len(datasets))
    shown: set[str] = set()
    any_collapsed = False
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
            ys = [sum(acc[e]) / len(acc[e]) for e in xs]
            collapsed = any(is_collapsed(r) for r in sel["rows"])
            face = "none" if collapsed else colors[m]
            ax.plot([0.0, *xs], [1.0, *ys], marker="o", label=m, color=colors[m], mfc=face)
            shown.add(m)
            any_collapsed = any_collapsed or collapsed
        ax.set_title(d)
        ax.set_xlabel("attack budget eps (l_inf)")
        ax.set_ylabel(f"P@k under the {preset} ensemble")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    title = "Top-k stability versus attack budget (higher is more stable)"
    if any_collapsed:
        title += f"\nhollow: {COLLAPSED_LABEL} (a constant explanation, not a stable one)"
    return _finish(fig, axes, title, path, _legend(colors, shown, any_collapsed, line=True))


def plot_certified_curves(
    rows: list[dict[str, Any]],
    path: Path,
    order: list[str] | None = None,
    name: str | None = None,
) -> Path:
    """Certified P@k (a lower bound, solid) against radius, one panel per dataset, one colour
    per method (every row's mean over seeds and weights of the method), with the attacked P@k
    of the budget curve (an upper bound, dashed) where the norms agree: the true worst-case
    P@k lies between. Reads the ``cert_<name>_curve`` columns (the first certificate when
    ``name`` is None)."""
    if name is None:
        keys = [k for r in rows for k in r if k.startswith("cert_") and k.endswith("_curve")]
        name = keys[0][len("cert_") : -len("_curve")]
    col, norm_col = f"cert_{name}_curve", f"cert_{name}_norm"
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = _methods(rows, order)
    colors = _colors(methods)
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
                    ys = [sum(acc[e]) / len(acc[e]) for e in xs]
                    ax.plot(xs, ys, style, marker="o", ms=3, color=colors[m], label=label)
        ax.set_title(d)
        ax.set_xlabel(f"radius ({norm})")
        ax.set_ylabel("P@k: certified (solid) / attacked (dashed)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, f"Certified top-k P@k ({name}) versus radius", path)


def _scatter(
    rows: list[dict[str, Any]],
    path: Path,
    order: list[str] | None,
    y_key: str,
    y_label: str,
    title: str,
    y_max: float | None = None,
    zero_line: bool = False,
) -> Path:
    """Every cell: ensemble P@k (x, on [0, 1]) against ``y_key`` (y, capped at ``y_max``), one
    panel per dataset; a cell whose explanation is collapsed
    (:func:`~r2et.bench.selection.is_collapsed`) drawn hollow, with a legend entry
    :data:`COLLAPSED_LABEL`; a dashed line at y = 0 when ``zero_line``."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = _methods(rows, order)
    colors = _colors(methods)
    fig, axes = _panels(len(datasets))
    shown: set[str] = set()
    any_collapsed = False
    for ax, d in zip(axes[0], datasets):
        for m in methods:
            pts = [
                r
                for r in rows
                if r["dataset"] == d and r["method"] == m and r.get(y_key) is not None
            ]
            for hollow in (False, True):
                group = [r for r in pts if is_collapsed(r) == hollow]
                if not group:
                    continue
                ax.scatter(
                    [r.get("ensemble_p_at_k_mean", float("nan")) for r in group],
                    [r[y_key] for r in group],
                    facecolors="none" if hollow else colors[m],
                    edgecolors=colors[m],
                    linewidths=1.2,
                    s=28,
                    alpha=0.85,
                )
                shown.add(m)
                any_collapsed = any_collapsed or hollow
        if zero_line:
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_title(d)
        ax.set_xlabel("P@k under the ensemble attack")
        ax.set_ylabel(y_label)
        ax.set_xlim(-0.02, 1.02)
        if y_max is not None:
            ax.set_ylim(top=y_max)
        ax.grid(alpha=0.3)
    if any_collapsed:
        title += f"\nhollow: {COLLAPSED_LABEL} (a constant explanation, not a stable one)"
    return _finish(fig, axes, title, path, _legend(colors, shown, any_collapsed, line=False))


def plot_accuracy_vs_patk(
    rows: list[dict[str, Any]], path: Path, order: list[str] | None = None
) -> Path:
    """Every cell: test accuracy against ensemble P@k, one panel per dataset."""
    return _scatter(
        rows, path, order, "accuracy", "test accuracy",
        "Accuracy versus explanation stability (every grid cell)", y_max=1.005,
    )  # fmt: skip


def plot_stability_vs_faithfulness(
    rows: list[dict[str, Any]], path: Path, order: list[str] | None = None
) -> Path:
    """Every cell: deletion gain (faithfulness) against ensemble P@k (stability): a method is
    only useful up and to the right; stability bought by an explanation that no longer says
    why this input got this prediction sits to the right and down (below the dashed line at 0:
    the top-k units matter less than random ones), and a collapsed one is drawn hollow."""
    return _scatter(
        rows, path, order, "deletion_gain",
        "deletion gain (top-k minus random units)",
        "Stability versus faithfulness (every grid cell; up and right is better)",
        zero_line=True,
    )  # fmt: skip


MIN_TIMED_SECONDS = 1.0
"""Vanilla fine-tuning shorter than this (seconds, all epochs) is timing noise: not plotted."""

NICE_RATIOS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def _mean_cost(rows: list[dict[str, Any]], dataset: str, method: str) -> float:
    v = [
        r["train_seconds_per_epoch"]
        for r in rows
        if r["dataset"] == dataset and r["method"] == method
        and isinstance(r.get("train_seconds_per_epoch"), (int, float))
    ]  # fmt: skip
    return sum(v) / len(v) if v else float("nan")


def plot_training_cost(
    rows: list[dict[str, Any]],
    path: Path,
    order: list[str] | None = None,
    epochs: int | None = None,
) -> Path | None:
    """Training seconds per epoch of each method relative to vanilla, per dataset: bars on a
    log axis with plain ratio ticks (``1×, 2×, 5×``) and each bar's ratio written on it.

    A dataset whose vanilla fine-tuning took less than :data:`MIN_TIMED_SECONDS` in total
    (``epochs`` × seconds per epoch; per epoch when ``epochs`` is None) is left out and named
    in the title: its ratios would be timing noise. Returns None (no plot) when no dataset
    is left.
    """
    from matplotlib.ticker import FixedLocator, NullLocator

    all_datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    runs = max(1, int(epochs or 1))
    datasets = [
        d for d in all_datasets if _mean_cost(rows, d, "vanilla") * runs >= MIN_TIMED_SECONDS
    ]
    if not datasets:
        return None
    methods = _methods(rows, order)
    colors = _colors(methods)
    fig, ax = plt.subplots(
        figsize=(min(14.0, 3.0 + 1.8 * len(datasets)), 3.8), layout="constrained"
    )
    width = 0.8 / max(1, len(methods))
    shown: list[float] = []
    for j, m in enumerate(methods):
        ratios = [_mean_cost(rows, d, m) / _mean_cost(rows, d, "vanilla") for d in datasets]
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(datasets))]
        bars = ax.bar(xs, ratios, width=width, label=m, color=colors[m])
        labels = [f"{r:.1f}×" if r == r else "" for r in ratios]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
        shown += [r for r in ratios if r == r and r > 0]
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_yscale("log")
    lo, hi = min(shown + [1.0]), max(shown + [1.0])
    ticks = [t for t in NICE_RATIOS if lo / 2.5 <= t <= hi * 2.5]
    ax.set_ylim(min(ticks[0], lo / 1.5), max(ticks[-1], hi * 1.6))
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_yticklabels([f"{t:g}×" for t in ticks])
    ax.set_ylabel("seconds per epoch, relative to vanilla")
    left_out = [d for d in all_datasets if d not in datasets]
    title = "Training cost per method (lower is cheaper)"
    if left_out:
        title += f"\nnot shown (vanilla trains < {MIN_TIMED_SECONDS:g} s: noise): " + ", ".join(
            left_out
        )
    ax.set_title(title, fontsize=10)
    fig.legend(fontsize=8, loc="outside right center")
    return _save(fig, path)


def plot_saliency_panel(panel: dict[str, Any], path: Path) -> Path:
    """A stored saliency panel (:func:`r2et.bench.panels.load_saliency_panel`): the test
    inputs (top row) and, for every method (one row each: its selected setting, labelled with
    the method and its test accuracy), the gradient saliency before and after the ensemble
    attack (a column pair per input), each map scaled to its own maximum with one colour bar,
    the top-k pixels outlined and the attacked P@k above the map. Reads only the stored
    tensors: rendering never trains or attacks."""
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
    return _save(fig, path)


def write_plots(out: Path, rows: list[dict[str, Any]], cfg: Any) -> list[Path]:
    """All plots of a benchmark folder, from its stored results only (``rows`` and the saliency
    panels the runner stored); returns their paths."""
    if not rows:
        return []
    plots = out / "plots"
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
