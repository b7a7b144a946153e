"""The bench's plots read as a person wants them (issue 27): ratio axes from 0, a marker and a
line style per method, labels that name the attack (the ensemble and its preset) and what a
cost measures, and the spread over seeds. Every figure is drawn from hand-built rows whose
answers are known and read back from the matplotlib objects: nothing is trained."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.container import BarContainer

from r2et.bench import plots
from r2et.bench.config import BenchConfig
from r2et.bench.plot_style import (
    COLLAPSED_LABEL,
    MAJORITY_LABEL,
    RANDOM_LABEL,
    method_styles,
    spread,
    zero_based_limits,
)
from r2et.bench.report import attack_headers, results_table, write_report

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["vanilla", "r2et", "r2et-mm"]


def _row(dataset: str, method: str, seed: int, patk: float, **kw: Any) -> dict[str, Any]:
    row = {
        "dataset": dataset,
        "method": method,
        "weight_name": None if method == "vanilla" else "lam",
        "weight": None if method == "vanilla" else 0.1,
        "seed": seed,
        "key": f"{dataset}__{method}__seed{seed}",
        "k": 4,
        "eps": 0.3,
        "modality": "tabular",
        "val_accuracy": 0.9,
        "accuracy": 0.9,
        "ensemble_p_at_k_mean": patk,
        "ensemble_preset": "standard",
        "erattack_p_at_k_mean": patk + 0.1,
        "deletion_gain": 0.05,
        "deletion_gain_ci_low": 0.02,
        "deletion_gain_ci_high": 0.08,
        "occlusion_agreement": 0.5,
        "distinct_topk_sets": 60,
        "top_share": 0.05,
        "distinct_per_100": 60.0,
        "n_eval": 100,
        "train_seconds_per_epoch": 2.0,
        "curve": {"0.15": 0.8, "0.3": patk},
    }
    row.update(kw)
    return row


def _rows() -> list[dict[str, Any]]:
    """Two datasets, three seeds. r2et and r2et-mm have the very same numbers (their lines
    coincide), r2et's P@k at the full budget spreads over 0.6-0.8 across seeds and its cost is
    3-5x vanilla's."""
    rows = []
    for d in ("a", "b"):
        for s, p in enumerate((0.6, 0.7, 0.8)):
            rows.append(_row(d, "vanilla", s, 0.4, train_seconds_per_epoch=2.0))
            for m in ("r2et", "r2et-mm"):
                rows.append(_row(d, m, s, p, curve={"0.15": 0.9, "0.3": p},
                                 train_seconds_per_epoch=2.0 * (3 + s)))  # fmt: skip
    return rows


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _legend(fig: Any) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_helpers() -> None:
    assert spread([1, None, float("nan"), 3, "x"]) == (2.0, 1.0, 3.0, 2)
    assert spread([])[3] == 0
    assert zero_based_limits([0.2, 0.5], top=1.02) == (0.0, 1.02)
    lo, hi = zero_based_limits([-0.02, 0.05])
    assert lo < -0.02 and hi > 0.05  # a negative gain is never cut off; 0 stays inside
    styles = method_styles(["a", "b", "c", "d", "e"])
    assert len({(s.marker, s.linestyle) for s in styles.values()}) == 5
    assert len({s.marker for s in styles.values()}) == 5


def test_budget_curves_start_at_zero_tell_methods_apart_and_show_spread() -> None:
    fig = plots.budget_curves_figure(_rows(), 0.05, ORDER, preset="fast")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0 and ax.get_xlim()[0] == 0
    assert ax.get_ylabel() == "P@k under the fast ensemble"
    assert ax.get_title() == "a (k=4, eps=0.3)"
    assert _legend(fig) == ORDER
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    r2et, mm = lines["r2et"], lines["r2et-mm"]
    assert list(r2et.get_ydata()) == list(mm.get_ydata())  # the same numbers...
    assert r2et.get_marker() != mm.get_marker()  # ...drawn so that neither hides the other
    assert r2et.get_linestyle() != mm.get_linestyle()
    assert r2et.get_ydata()[-1] == pytest.approx(0.7)  # the mean over seeds
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # r2et and r2et-mm spread over seeds; vanilla's seeds agree
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(0.6) and max(ys) == pytest.approx(1.0)
    assert "min–max over seeds" in fig._suptitle.get_text()


def test_stability_vs_faithfulness_axes_labels_and_error_bars() -> None:
    rows = _rows()
    fig = plots.stability_vs_faithfulness_figure(rows, ORDER)
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0  # every gain >= 0: the y axis starts at 0
    assert ax.get_xlim() == (0.0, 1.02)
    assert "P@k under the standard ensemble" in ax.get_xlabel()
    assert "deletion gain" in ax.get_ylabel() and "higher" in ax.get_ylabel()
    assert _legend(fig) == ORDER
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len({c.get_paths()[0].vertices.tobytes() for c in dots}) == 3  # a marker per method
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert bars, "several seeds that differ must get error bars"
    points = [c.get_offsets()[0] for c in dots]
    assert any(tuple(p) == pytest.approx((0.7, 0.05)) for p in points)  # mean of 3 seeds
    assert "min–max over seeds" in fig._suptitle.get_text()
    # a negative gain: the axis goes below 0 and keeps 0 in view
    rows[0]["deletion_gain"] = -0.03
    ax = plots.stability_vs_faithfulness_figure(rows, ORDER).axes[0]
    assert ax.get_ylim()[0] < -0.03 < 0 < ax.get_ylim()[1]


def test_accuracy_plot_from_zero_with_reference_lines_and_collapsed_hollow() -> None:
    rows = _rows()
    fig = plots.accuracy_vs_patk_figure(rows, ORDER)
    assert fig.axes[0].get_ylim() == (0.0, 1.02)
    assert MAJORITY_LABEL not in _legend(fig)  # rows without the reference: no line
    for r in rows:
        r.update(majority_rate=0.6, random_p_at_k=0.25)
    rows[3].update(top_share=0.9, distinct_per_100=2.0)  # r2et seed 1 on "a": collapsed
    fig = plots.accuracy_vs_patk_figure(rows, ORDER)
    assert _legend(fig) == [*ORDER, COLLAPSED_LABEL, MAJORITY_LABEL, RANDOM_LABEL]
    ax = fig.axes[0]
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == 2
    assert [tuple(dotted[0].get_xdata()), tuple(dotted[1].get_ydata())] == [(0.25,) * 2, (0.6,) * 2]
    assert COLLAPSED_LABEL in fig._suptitle.get_text()


def test_training_cost_says_what_it_measures_and_shows_spread() -> None:
    fig = plots.training_cost_figure(_rows(), ORDER, epochs=5)
    ax = fig.axes[0]
    assert "seconds per epoch" in ax.get_ylabel() and "wall clock" in ax.get_ylabel()
    assert "vanilla" in ax.get_ylabel()
    bars = {p.get_label(): p for p in ax.containers if isinstance(p, BarContainer)}
    assert set(bars) == set(ORDER)
    assert bars["r2et"].patches[0].get_height() == pytest.approx(4.0)  # (3 + 4 + 5) / 3
    assert bars["r2et"].patches[0].get_hatch() != bars["r2et-mm"].patches[0].get_hatch()
    assert any(isinstance(c, LineCollection) for c in ax.collections)  # 3x-5x error bars
    assert "4.0×" in [t.get_text() for t in ax.texts]
    assert "min–max" in ax.get_title()


def test_certified_curves_start_at_zero() -> None:
    rows = [
        {**r, "cert_det_curve": {"0.1": 0.5, "0.3": 0.2}, "cert_det_norm": "linf"} for r in _rows()
    ]
    fig = plots.certified_curves_figure(rows, ORDER, "det")
    assert fig.axes[0].get_ylim()[0] == 0 and fig.axes[0].get_xlim()[0] == 0
    markers = {ln.get_marker() for ln in fig.axes[0].get_lines()}
    assert len(markers) == 3


def test_report_tables_name_the_attack_and_plots_have_captions(tmp_path: Path) -> None:
    rows = _rows()
    assert attack_headers(rows, 50) == {
        "ensemble_p_at_k_mean": "P@k ensemble (standard)",
        "erattack_p_at_k_mean": "P@k ERAttack-50",
    }
    table = results_table(rows, 0.05, ORDER, erattack_steps=20)
    assert "| P@k ensemble (standard) | P@k ERAttack-20 |" in table
    assert "ERAttack-50" not in table
    mixed = rows + [_row("a", "vanilla", 9, 0.4, ensemble_preset="fast")]
    assert attack_headers(mixed)["ensemble_p_at_k_mean"] == "P@k ensemble"
    cfg = BenchConfig(datasets=["adult", "compas"], methods=ORDER, seeds=[0, 1, 2])
    for r in rows:
        r["dataset"] = {"a": "adult", "b": "compas"}[r["dataset"]]
    write_report(tmp_path, rows, cfg)
    report = (tmp_path / "report.md").read_text()
    assert "P@k ensemble (standard)" in report and "P@k ERAttack-50" in report
    assert plots.PLOT_CAPTIONS["stability_vs_faithfulness"] in report
    assert "Train s/epoch (wall clock)" in report
    assert plots.plot_caption("certified_det.png") == plots.PLOT_CAPTIONS["certified"]
    made = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert made == sorted(
        ["p_at_k_vs_budget.png", "accuracy_vs_p_at_k.png", "stability_vs_faithfulness.png",
         "training_cost.png"]
    )  # fmt: skip
    elsewhere = plots.write_plots(tmp_path, rows, cfg, plots_dir=tmp_path / "other")
    assert [p.parent for p in elsewhere] == [tmp_path / "other"] * 4


def _script(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # a dataclass of the script looks its module up
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_cost_vs_stability_plot_of_the_docs(tmp_path: Path) -> None:
    ps = _script("paper_summary")
    per_dataset = {}
    for d in ("compas", "adult"):
        sel = {}
        for m in ("vanilla", "at", "r2et", "r2et-noh"):
            rs = [r for r in _rows() if r["dataset"] == "a" and r["method"] == "vanilla"]
            rs = [{**r, "method": m} for r in rs]
            if m != "vanilla":
                for i, r in enumerate(rs):
                    r.update(ensemble_p_at_k_mean=0.5 + 0.1 * i, train_seconds_per_epoch=4.0 + i)
            sel[m] = {"rows": rs, "weight": None, "admissible": m != "at"}
        per_dataset[d] = sel
    fig = ps.plot(per_dataset, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.02)
    assert "wall clock" in ax.get_xlabel() and "vanilla" in ax.get_xlabel()
    assert "standard ensemble" in ax.get_ylabel()
    labels = _legend(fig)
    assert labels[:4] == ["vanilla", "at", "r2et", "r2et-noh"]
    assert labels[-1].startswith("hollow")
    assert "min–max over seeds" in fig._suptitle.get_text()
    caps = [c for c in ax.containers if hasattr(c, "has_xerr")]
    r2et = next(c for c in caps if c.get_label() == "r2et")
    assert r2et.has_xerr and r2et.has_yerr


def test_docs_figures_are_drawn_from_the_stored_rows(tmp_path: Path) -> None:
    figures = _script("figures")
    rows_dir = ROOT / "docs" / "results"
    for name in ("cifar10_resnet9_stability_vs_faithfulness", "paper_cpu_cost_vs_stability"):
        path = figures.render(name, rows_dir, tmp_path)
        assert path.read_bytes()[:4] == b"\x89PNG"
        assert (rows_dir / f"{name}.png").is_file()  # the shipped figure exists too


def test_report_table_puts_the_yardsticks_beside_the_numbers() -> None:
    rows = [_row("adult", m, s, 0.5, majority_rate=0.7 + 0.01 * s, random_p_at_k=4 / 11)
            for m in ORDER for s in (0, 1)]  # fmt: skip
    text = results_table(rows, 0.02, methods=ORDER)
    # means over the dataset's cells, computed by hand: (0.70 + 0.71) / 2, 4/11
    assert "Beside: always predicting the majority class 0.705; a random explanation's " \
        "P@k (k/F) 0.364." in text  # fmt: skip
    bare = [_row("adult", m, 0, 0.5) for m in ORDER]  # cells stored before the yardsticks
    assert "Beside:" not in results_table(bare, 0.02, methods=ORDER)
