"""benchmarks/paper_summary.py: the issue-10 goal check and the partial-seed selection, on
hand-built rows whose answers are known."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_summary.py"


@pytest.fixture(scope="module")
def ps():
    spec = importlib.util.spec_from_file_location("paper_summary", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method, weight, seed, p, *, acc=0.85, val=0.86, gain=0.05, cost=1.0, distinct=30):
    return {
        "dataset": "d",
        "method": method,
        "weight_name": None if weight is None else "lam",
        "weight": weight,
        "seed": seed,
        "key": f"d__{method}__{weight}__seed{seed}",
        "accuracy": acc,
        "val_accuracy": val,
        "ensemble_p_at_k_mean": p,
        "erattack_p_at_k_mean": p,
        "mse_p_at_k_mean": p,
        "deletion_gain": gain,
        "occlusion_agreement": 0.5,
        "distinct_topk_sets": distinct,
        "train_seconds_per_epoch": cost,
    }


def _grid(seeds, r2et_cost=2.0, r2et_gain=0.05):
    rows = []
    for s in seeds:
        rows += [
            _row("vanilla", None, s, 0.4),
            _row("at", 0.1, s, 0.7, cost=20.0),
            _row("r2et", 0.1, s, 0.8, cost=r2et_cost, gain=r2et_gain),
            _row("r2et", 1.0, s, 0.95, val=0.80),  # too inaccurate: never selected
        ]
    return rows


def test_goal_is_met_only_when_every_condition_holds(ps):
    sel, note = ps.selected(_grid([0, 1, 2]), None)
    assert note == "" and sel["r2et"]["weight"] == 0.1
    ok, why = ps.goal_check(sel)
    assert ok and "r2et (0.800" in why
    too_slow, _ = ps.selected(_grid([0, 1, 2], r2et_cost=5.0), None)  # 1/4 of AT's cost
    ok, why = ps.goal_check(too_slow)
    assert not ok and "0.25 of AT's s/epoch" in why
    unfaithful, _ = ps.selected(_grid([0, 1, 2], r2et_gain=0.01), None)  # 0.2 of vanilla's
    ok, why = ps.goal_check(unfaithful)
    assert not ok and "no setting meets the selection rule" in why


def test_a_grid_complete_on_one_seed_is_selected_there(ps):
    rows = _grid([0]) + [r for r in _grid([1, 2]) if r["weight"] in (None, 0.1)]
    assert ps.complete_seeds(rows) == [0]
    sel, note = ps.selected(rows, None)
    assert "seed(s) 0" in note
    assert len(sel["r2et"]["rows"]) == 3  # the selected setting over every seed that has it


def test_rows_round_trip_through_a_results_csv(ps, tmp_path):
    rows = _grid([0])
    path = tmp_path / "paper_cpu_d.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    back = ps.read_rows(path)
    assert [r["key"] for r in back] == [r["key"] for r in rows]
    assert back[0]["weight"] is None and back[1]["weight"] == 0.1 and back[1]["seed"] == 0
