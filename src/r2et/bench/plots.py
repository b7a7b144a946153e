"""Benchmark plots (PNG, readable without the code)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from r2et.bench.report import select  # noqa: E402

R2ET_FAMILY = ("r2et", "r2et-mm", "r2et-noh", "r2et-mm-noh")


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


def _finish(fig: Any, axes: Any, title: str, path: Path) -> Path:
    """One legend for all panels (from the first), a title, and an atomic save."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside right center")
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
) -> Path:
    """Ensemble-attack P@k (the ``budget_preset``) versus attack budget eps, one panel per
    dataset, one line per method (selected setting, mean over seeds)."""
    chosen = select(rows, max_acc_drop, min_deletion_ratio)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = _methods(rows, order)
    colors = _colors(methods)
    fig, axes = _panels(len(datasets))
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
            ax.plot([0.0, *xs], [1.0, *ys], marker="o", label=m, color=colors[m])
        ax.set_title(d)
        ax.set_xlabel("attack budget eps (l_inf)")
        ax.set_ylabel(f"P@k under the {preset} ensemble")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, "Top-k stability versus attack budget (higher is more stable)", path)


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
) -> Path:
    """Every cell: ensemble P@k (x) against ``y_key`` (y), one panel per dataset."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = _methods(rows, order)
    colors = _colors(methods)
    fig, axes = _panels(len(datasets))
    for ax, d in zip(axes[0], datasets):
        for m in methods:
            pts = [
                r
                for r in rows
                if r["dataset"] == d and r["method"] == m and r.get(y_key) is not None
            ]
            if pts:
                ax.scatter(
                    [r.get("ensemble_p_at_k_mean", float("nan")) for r in pts],
                    [r[y_key] for r in pts],
                    label=m,
                    color=colors[m],
                    s=28,
                    alpha=0.85,
                )
        ax.set_title(d)
        ax.set_xlabel("P@k under the ensemble attack")
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, title, path)


def plot_accuracy_vs_patk(
    rows: list[dict[str, Any]], path: Path, order: list[str] | None = None
) -> Path:
    """Every cell: test accuracy against ensemble P@k, one panel per dataset."""
    return _scatter(
        rows, path, order, "accuracy", "test accuracy",
        "Accuracy versus explanation stability (every grid cell)",
    )  # fmt: skip


def plot_stability_vs_faithfulness(
    rows: list[dict[str, Any]], path: Path, order: list[str] | None = None
) -> Path:
    """Every cell: deletion gain (faithfulness) against ensemble P@k (stability): a method is
    only useful up and to the right; stability bought by an explanation that no longer says
    why this input got this prediction sits to the right and down."""
    return _scatter(
        rows, path, order, "deletion_gain",
        "deletion gain (top-k minus random units)",
        "Stability versus faithfulness (every grid cell; up and right is better)",
    )  # fmt: skip


def plot_training_cost(
    rows: list[dict[str, Any]], path: Path, order: list[str] | None = None
) -> Path:
    """Training seconds per epoch of each method relative to vanilla, per dataset."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = _methods(rows, order)
    colors = _colors(methods)
    fig, ax = plt.subplots(
        figsize=(min(14.0, 3.0 + 1.8 * len(datasets)), 3.6), layout="constrained"
    )
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        ratios = []
        for d in datasets:

            def mean_cost(method: str, d: str = d) -> float:
                v = [
                    r["train_seconds_per_epoch"]
                    for r in rows
                    if r["dataset"] == d and r["method"] == method
                ]
                return sum(v) / len(v) if v else float("nan")

            ratios.append(mean_cost(m) / mean_cost("vanilla"))
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(datasets))]
        ax.bar(xs, ratios, width=width, label=m, color=colors[m])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per epoch / vanilla (log)")
    ax.set_title("Training cost per method (lower is cheaper)")
    fig.legend(fontsize=8, loc="outside right center")
    return _save(fig, path)


def plot_saliency_panel(
    out: Path,
    rows: list[dict[str, Any]],
    cfg: Any,
    dataset: str,
    path: Path,
    n_images: int = 3,
    preset: str = "fast",
    device: str | torch.device | None = None,
) -> Path | None:
    """For an image dataset: the first ``n_images`` test inputs (top row) and, for every
    method (one row each: its selected setting, first seed with a saved model, labelled with
    the method and its test accuracy), the gradient saliency before and after the ``preset``
    :class:`~r2et.EnsembleAttack` (a column pair per input), each map scaled to its own
    maximum with one colour bar, the top-k pixels outlined and the attacked P@k above the
    map. None when no model of ``dataset`` was saved."""
    from r2et.attacks import EnsembleAttack
    from r2et.bench.runner import _dataset_settings, _load
    from r2et.explain import Explainer
    from r2et.metrics import topk_mask
    from r2et.train import load_run

    dev = torch.device(device) if device is not None else torch.device("cpu")
    chosen = select(rows, cfg.max_acc_drop, cfg.min_deletion_ratio)
    models = []
    for m in _methods(rows, cfg.methods):
        sel = chosen.get((dataset, m))
        for r in sorted(sel["rows"] if sel else [], key=lambda r: r["seed"]):
            folder = out / "models" / r["key"]
            if (folder / "model.safetensors").is_file():
                models.append((m, load_run(folder, device=dev).model.eval(), r))
                break
    if not models:
        return None
    seed = models[0][2]["seed"]
    ds = _load(dataset, seed, cfg.to_dict())
    k, eps, _ = _dataset_settings(cfg.to_dict(), ds)
    x = ds.test[0][:n_images].to(dev)
    n, (h, w) = len(x), x.shape[-2:]
    bounds = ds.bounds if cfg.evaluate.get("box", True) else None
    ex = Explainer("grad")
    fig, axes = plt.subplots(
        1 + len(models),
        2 * n,
        figsize=(1.75 * 2 * n + 1.4, 1.85 * (1 + len(models))),
        squeeze=False,
        layout="constrained",
    )
    for i in range(n):
        img = x[i].permute(1, 2, 0).squeeze(-1).cpu().numpy()
        axes[0][2 * i].imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[0][2 * i].set_title(f"test input {i}", fontsize=8)
        axes[0][2 * i + 1].axis("off")
    axes[0][0].set_ylabel("input", fontsize=9)
    image = None
    for row, (method, model, r) in enumerate(models, start=1):
        res = EnsembleAttack(ex, k, eps, bounds=bounds, preset=preset, seed=seed)(model, x)
        for i in range(n):
            for c, scores in enumerate((res.scores_clean[i], res.scores_adv[i])):
                ax = axes[row][2 * i + c]
                s = scores.detach().view(h, w).cpu()
                image = ax.imshow(
                    (s / s.max().clamp_min(1e-12)).numpy(), cmap="magma", vmin=0, vmax=1
                )
                mask = topk_mask(scores[None], k)[0].view(h, w).float().cpu().numpy()
                ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.7)
                title = "clean" if c == 0 else f"attacked, P@{k}={res.p_at_k[i].item():.2f}"
                ax.set_title(title, fontsize=7)
        axes[row][0].set_ylabel(f"{method}\nacc {r.get('accuracy', float('nan')):.2f}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes[1:, :].ravel().tolist(), shrink=0.5, label="saliency / map max")
    grey = eps * 255
    budget = f"{round(grey)}/255" if abs(grey - round(grey)) < 1e-6 else f"{eps:g}"
    fig.suptitle(
        f"{dataset}: gradient saliency before/after the {preset} ensemble attack "
        f"(l_inf eps={budget}, top-{k} outlined)",
        fontsize=10,
    )
    return _save(fig, path)


def write_plots(out: Path, rows: list[dict[str, Any]], cfg: Any) -> list[Path]:
    """All plots of a benchmark folder; returns their paths."""
    if not rows:
        return []
    plots = out / "plots"
    paths = [
        plot_budget_curves(
            rows,
            cfg.max_acc_drop,
            plots / "p_at_k_vs_budget.png",
            cfg.methods,
            cfg.min_deletion_ratio,
            cfg.evaluate.get("budget_preset", "fast"),
        ),
        plot_accuracy_vs_patk(rows, plots / "accuracy_vs_p_at_k.png", cfg.methods),
        plot_stability_vs_faithfulness(rows, plots / "stability_vs_faithfulness.png", cfg.methods),
    ]
    if any(r["method"] == "vanilla" for r in rows):
        paths.append(plot_training_cost(rows, plots / "training_cost.png", cfg.methods))
    for name in cfg.evaluate.get("certify") or {}:
        if any(f"cert_{name}_curve" in r for r in rows):
            path = plots / f"certified_{name}.png"
            paths.append(plot_certified_curves(rows, path, cfg.methods, name))
    images = dict.fromkeys(r["dataset"] for r in rows if r.get("modality") == "image")
    for d in images if cfg.save_models else ():
        p = plot_saliency_panel(out, rows, cfg, d, plots / f"saliency_{d}.png")
        if p is not None:
            paths.append(p)
    return paths
