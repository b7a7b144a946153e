"""Every figure of the docs, drawn again from the stored rows beside it.

    python benchmarks/figures.py [NAME ...|--all] [--rows docs/results] [--out docs/results]
    python benchmarks/figures.py --list

Each figure is a registered function (:data:`FIGURES`, name -> :class:`Figure`) that reads only
stored rows (the CSV/JSON files under ``--rows``, by default ``docs/results``) and writes
``<out>/<name>.png``; nothing is trained or attacked. The drawing itself is the library's or the
script's that made the figure first (:mod:`r2et.bench.plots`, ``benchmarks/paper_summary.py``),
so a figure here is the figure the bench or the summary draws from the same rows. Every PNG is
written whole to a temporary name and then renamed over the old one. The docs page that shows a
figure names the command and its rows on the line under it.

A figure whose rows are not stored (``--list`` says which) is skipped by ``--all`` with the
reason and the command that stores them; naming it explicitly is an error (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paper_summary  # benchmarks/paper_summary.py: its tables and plot, from the same rows

ROOT = Path(__file__).resolve().parents[1]


class MissingRows(Exception):
    """The stored rows a figure needs are not there (the message says how to store them)."""


@dataclass(frozen=True)
class Figure:
    """A docs figure: ``draw(rows_dir, png_path)`` reads ``sources`` (relative to the rows
    folder; ``*`` patterns allowed) and writes the PNG."""

    name: str
    sources: tuple[str, ...]
    draw: Callable[[Path, Path], None]
    summary: str


FIGURES: dict[str, Figure] = {}


def figure(name: str, *sources: str) -> Callable[[Callable[[Path, Path], None]], Any]:
    """Register ``fn(rows_dir, png_path)`` as the figure ``name`` drawn from ``sources``."""

    def add(fn: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        summary = " ".join((fn.__doc__ or "").split("\n\n")[0].split())
        FIGURES[name] = Figure(name, tuple(sources), fn, summary)
        return fn

    return add


def _need(path: Path, how: str) -> Path:
    if not path.is_file():
        raise MissingRows(f"{path} is not stored ({how})")
    return path


def _bench_methods(config: str) -> list[str]:
    """The ``methods`` of a bench TOML under ``benchmarks/`` (the plots' legend order; each
    method keeps its colour, marker and line style). Rows stored before the paper's R2ET was
    renamed ``r2et-paper`` call it ``r2et``: that name takes its place in the order."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    with (ROOT / "benchmarks" / config).open("rb") as fh:
        methods = list(tomllib.load(fh)["methods"])
    if "r2et-paper" in methods and "r2et" not in methods:
        methods.insert(methods.index("r2et-paper"), "r2et")
    return methods


# --- issue 10: R2ET's variants against AT (docs/results.md) --------------------------------


def _cost_vs_stability(prefix: str) -> Callable[[Path, Path], None]:
    def draw(rows_dir: Path, path: Path) -> None:
        per_dataset, _ = paper_summary.load_selections(rows_dir, prefix)
        if not per_dataset:
            raise MissingRows(
                f"no {prefix}_<dataset>.csv under {rows_dir} (the results.csv of "
                f"`r2et bench` with that configuration, one per dataset)"
            )
        paper_summary.plot(per_dataset, path)

    draw.__doc__ = (
        f"Training cost versus ensemble P@k of each method's selected setting, per dataset "
        f"({prefix} runs; the plot of benchmarks/paper_summary.py --prefix {prefix})."
    )
    return draw


for _prefix in ("paper_cpu", "paper_gxi", "paper_groups"):
    figure(f"{_prefix}_cost_vs_stability", f"{_prefix}_*.csv")(_cost_vs_stability(_prefix))


# --- CIFAR-10, ResNet9 on one H200 (docs/results.md) ---------------------------------------

RESNET9_ROWS = "cifar10_resnet9_h200.csv"
RESNET9_CURVES = "cifar10_resnet9_budget.json"


def _resnet9_rows(rows_dir: Path) -> list[dict[str, Any]]:
    path = _need(rows_dir / RESNET9_ROWS, "results.csv of benchmarks/cifar10_resnet9.toml")
    return paper_summary.read_rows(path)


@figure("cifar10_resnet9_p_at_k_vs_budget", RESNET9_ROWS, RESNET9_CURVES)
def resnet9_budget(rows_dir: Path, path: Path) -> None:
    """P@100 under the fast ensemble versus the l_inf budget, selected setting of every method
    (r2et.bench.plots.plot_budget_curves, the bench's rule with max_acc_drop 0.02)."""
    from r2et.bench.plots import plot_budget_curves

    rows = _resnet9_rows(rows_dir)
    stored = json.loads(_need(rows_dir / RESNET9_CURVES, "see its 'source'").read_text())
    curves = stored["curves"]
    missing = sorted({r["method"] for r in rows} - set(curves))
    if missing:
        raise MissingRows(f"{RESNET9_CURVES} has no curve for {', '.join(missing)}")
    for r in rows:  # each seed's row carries the stored mean curve: the plotted mean is it
        r["curve"] = {str(eps): p for eps, p in zip(stored["eps"], curves[r["method"]])}
    plot_budget_curves(rows, 0.02, path, _bench_methods("cifar10_resnet9.toml"), preset="fast")


@figure("cifar10_resnet9_stability_vs_faithfulness", RESNET9_ROWS)
def resnet9_faithfulness(rows_dir: Path, path: Path) -> None:
    """Deletion gain against ensemble P@100, every cell of the ResNet9 study
    (r2et.bench.plots.plot_stability_vs_faithfulness)."""
    from r2et.bench.plots import plot_stability_vs_faithfulness

    rows = _resnet9_rows(rows_dir)
    plot_stability_vs_faithfulness(rows, path, _bench_methods("cifar10_resnet9.toml"))


# --- CIFAR-10, small CNN: saliency maps (docs/results.md) -----------------------------------

SALIENCY_DATASET = "cifar10-5k"


@figure("cifar10_saliency", f"panels/saliency_{SALIENCY_DATASET}.json")
def cifar10_saliency(rows_dir: Path, path: Path) -> None:
    """Clean and attacked gradient saliency of every method, from a stored saliency panel
    (r2et.bench.plots.plot_saliency_panel)."""
    from r2et.bench.panels import load_saliency_panel
    from r2et.bench.plots import plot_saliency_panel

    panel = load_saliency_panel(rows_dir, SALIENCY_DATASET)
    if panel is None:
        raise MissingRows(
            f"no valid stored panel {rows_dir}/panels/saliency_{SALIENCY_DATASET}.* (store it "
            "with `python benchmarks/saliency_figure.py BENCH_FOLDER --store "
            f"{rows_dir}` on the models of `r2et bench benchmarks/cifar10.toml`)"
        )
    plot_saliency_panel(panel, path)


# --- runner ---------------------------------------------------------------------------------


def render(name: str, rows_dir: Path, out: Path) -> Path:
    """Draw the figure ``name`` from ``rows_dir`` into ``out/<name>.png`` atomically."""
    fig = FIGURES[name]
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{name}.png"
    tmp = out / f".{name}.tmp.{os.getpid()}.png"
    try:
        fig.draw(rows_dir, tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME", help="figures to draw (see --list)")
    ap.add_argument("--all", action="store_true", help="every figure whose rows are stored")
    ap.add_argument("--list", action="store_true", help="list the figures and their rows")
    ap.add_argument("--rows", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--out", type=Path, default=None, help="default: the --rows folder")
    args = ap.parse_args(argv)
    if args.list:
        for fig in FIGURES.values():
            print(f"{fig.name}: {fig.summary}\n    rows: {', '.join(fig.sources)}")
        return 0
    unknown = [n for n in args.names if n not in FIGURES]
    if unknown or not (args.names or args.all) or (args.names and args.all):
        why = f"unknown figure(s) {', '.join(unknown)}; " if unknown else ""
        print(f"{why}name figures or pass --all (one of: {', '.join(FIGURES)})", file=sys.stderr)
        return 2
    out = args.out or args.rows
    status = 0
    for name in args.names or list(FIGURES):
        try:
            print(f"wrote {render(name, args.rows, out)}")
        except MissingRows as exc:
            print(f"{'skipped' if args.all else 'cannot draw'} {name}: {exc}", file=sys.stderr)
            status = status if args.all else 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
