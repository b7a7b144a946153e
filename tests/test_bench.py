"""Benchmark grid: end to end, resume after a kill, Ray executor, selection rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import requires_data

from r2et.bench import BenchConfig, ResultStore, grid_cells, load_config, run_bench
from r2et.bench.report import results_table, select, selection_rule_text

TOML = """
datasets = ["breast-cancer"]
methods = ["vanilla", "r2et-noh"]
seeds = [0, 1]
threads = 1
max_acc_drop = 0.05

[pretrain]
epochs = 3
batch_size = 64

[finetune]
epochs = 1
batch_size = 64

[evaluate]
n = 40
steps = 5
preset = "fast"
budgets = [0.5, 1.0]
thickness_samples = 2
thickness_steps = 2
"""


@pytest.fixture(scope="module")
def toml_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "grid.toml"
    path.write_text(TOML)
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, toml_path):
    """The 2 x 2 grid (2 methods x 2 seeds) run uninterrupted, in process."""
    out = tmp_path_factory.mktemp("bench") / "full"
    cfg = load_config(toml_path)
    rows = run_bench(cfg, out, progress=False)
    return cfg, out, rows


def test_grid_runs_end_to_end_and_writes_all_outputs(full_run):
    cfg, out, rows = full_run
    assert len(rows) == 4 == len(grid_cells(cfg))
    for name in ("results.csv", "results.json", "report.md", "config.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "cells").glob("*.json"))) == 4
    assert len(list((out / "pretrain").iterdir())) == 2  # one per seed
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    expected = ["accuracy_vs_p_at_k.png", "p_at_k_vs_budget.png", "stability_vs_faithfulness.png"]
    # the cost plot only where vanilla's fine-tuning was long enough to time
    from r2et.bench.plots import MIN_TIMED_SECONDS

    vanilla = [r["train_seconds_per_epoch"] for r in rows if r["method"] == "vanilla"]
    timed = sum(vanilla) / len(vanilla) * cfg.finetune["epochs"] >= MIN_TIMED_SECONDS
    assert plots == sorted(expected + (["training_cost.png"] if timed else []))
    for p in (out / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "Selection rule" in report and "| vanilla |" in report and "| r2et-noh |" in report
    assert "deletion gain is at least 0.9 times vanilla's" in report
    assert "inside the data box" in report and "`fast` ensemble" in report
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    for col in (
        "dataset",
        "method",
        "seed",
        "accuracy",
        "val_accuracy",
        "ensemble_p_at_k_mean",
        "erattack_p_at_k_mean",
        "mse_p_at_k_mean",
        "deletion_gain",
        "occlusion_agreement",
        "distinct_topk_sets",
        "global_topk_p_at_k",
        "thickness",
        "train_seconds_per_epoch",
        "box",
    ):
        assert col in header
    for r in rows:
        assert 0.5 < r["accuracy"] <= 1 and 0 <= r["erattack_p_at_k_mean"] <= 1
        assert r["ensemble_p_at_k_mean"] <= r["erattack_p_at_k_mean"] + 0.05
        assert r["n_test"] == 113 and r["n_eval"] == 40  # accuracy on the whole test split
        assert r["box"] is True and r["preset"] == "fast"
        assert set(r["curve"]) == {f"{0.5 * r['eps']:g}", f"{r['eps']:g}"}
    saved = json.loads((out / "config.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["finetune"]["epochs"] == 1


def test_existing_folder_needs_resume(full_run):
    cfg, out, _ = full_run
    with pytest.raises(ValueError, match="--resume"):
        run_bench(cfg, out, progress=False)
    changed = BenchConfig.from_dict({**cfg.to_dict(), "finetune": {"epochs": 2}})
    with pytest.raises(ValueError, match="finetune"):
        run_bench(changed, out, resume=True, progress=False)


def test_kill_then_resume_recomputes_nothing_and_matches(full_run, toml_path, tmp_path):
    cfg, _, rows = full_run
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "r2et.cli",
        "bench",
        str(toml_path),
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cells = out / "cells"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if cells.is_dir() and any(cells.glob("*.json")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.read_bytes() for p in cells.glob("*.json")}
    assert 1 <= len(finished) < 4, "the kill must land after the first cell and before the last"
    stamps = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    # no half-written files are left behind as results
    assert all(json.loads(b) for b in finished.values())
    res = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    for name, data in finished.items():
        assert (cells / name).read_bytes() == data
        assert (cells / name).stat().st_mtime_ns == stamps[name]
    resumed = ResultStore(out).rows()
    assert results_table(resumed, cfg.max_acc_drop) == results_table(rows, cfg.max_acc_drop)


def test_ray_executor_matches_local(full_run, tmp_path, monkeypatch):
    """The Ray executor gives the rows of the in-process run. Ray starts its workers at nice
    15: on a machine busy with ordinary (nice 0) processes they got a few percent of a core,
    so importing torch took minutes and could outlast Ray's wall-clock limits (60 s for a
    worker to register, then it is killed). Here the workers run at the test's own priority
    with a registration limit no load reaches, on a new local cluster (never one that
    ``RAY_ADDRESS`` or ``ray start`` left), so the outcome does not depend on timing."""
    ray = pytest.importorskip("ray")
    cfg, _, rows = full_run
    monkeypatch.setenv("RAY_worker_niceness", "0")  # read by the raylet ray.init starts
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _system_config={"worker_register_timeout_seconds": 3600},
    )
    try:
        ray_rows = run_bench(
            cfg, tmp_path / "ray", executor="ray", workers=2, progress=False, report=False
        )
    finally:
        ray.shutdown()
    assert len(ray_rows) == len(rows)
    for a, b in zip(rows, ray_rows):
        assert a["key"] == b["key"]
        for col in ("accuracy", "val_accuracy", "ensemble_p_at_k_mean", "deletion_gain"):
            assert a[col] == pytest.approx(b[col], abs=1e-6), (a["key"], col)


def test_process_executor_matches_local(full_run, tmp_path):
    """Two spawned worker processes give the rows of the in-process run."""
    cfg, _, rows = full_run
    out = tmp_path / "pool"
    pool_rows = run_bench(cfg, out, executor="process", workers=2, progress=False, report=False)
    assert [r["key"] for r in pool_rows] == [r["key"] for r in rows]
    for a, b in zip(rows, pool_rows):
        for col in ("accuracy", "val_accuracy", "ensemble_p_at_k_mean", "deletion_gain"):
            assert a[col] == pytest.approx(b[col], abs=1e-6), (a["key"], col)
    assert len(list((out / "cells").glob("*.json"))) == len(rows)
    with pytest.raises(ValueError, match="workers"):
        run_bench(cfg, tmp_path / "bad", executor="process", workers=0, progress=False)


def _row(dataset, method, weight, seed, val, patk, gain=0.1, distinct=10):
    return {
        "dataset": dataset,
        "method": method,
        "weight_name": None if weight is None else "lam",
        "weight": weight,
        "seed": seed,
        "val_accuracy": val,
        "accuracy": val,
        "ensemble_p_at_k_mean": patk,
        "erattack_p_at_k_mean": patk,
        "deletion_gain": gain,
        "occlusion_agreement": 0.5,
        "distinct_topk_sets": distinct,
    }


def test_selection_rule_prefers_stable_settings_within_accuracy_budget():
    rows = [
        _row("d", "vanilla", None, 0, 0.90, 0.40),
        _row("d", "r2et", 0.1, 0, 0.895, 0.50),
        _row("d", "r2et", 1.0, 0, 0.885, 0.70),  # within 2 points: chosen
        _row("d", "r2et", 10.0, 0, 0.70, 0.95),  # best P@k but too inaccurate
        _row("d", "sp", 1.0, 0, 0.60, 0.90),  # no admissible setting: most accurate, marked
        _row("d", "sp", 2.0, 0, 0.65, 0.80),
    ]
    chosen = select(rows, 0.02)
    assert chosen[("d", "r2et")]["setting"] == ("lam", 1.0)
    assert chosen[("d", "sp")]["setting"] == ("lam", 2.0) and not chosen[("d", "sp")]["admissible"]
    table = results_table(rows, 0.02)
    assert "**0.700**" in table and "†" in table


def test_selection_rule_requires_faithfulness():
    """A setting that is stable because its explanation no longer says anything about the
    input (deletion gain below 0.9 of vanilla's) is not selected, unless the rule is off."""
    rows = [
        _row("d", "vanilla", None, 0, 0.90, 0.40, gain=0.20),
        _row("d", "r2et", 0.1, 0, 0.90, 0.60, gain=0.19),  # 0.95 of vanilla's gain: chosen
        _row("d", "r2et", 1.0, 0, 0.90, 0.99, gain=0.05),  # stable, but not faithful
    ]
    assert select(rows, 0.02)[("d", "r2et")]["setting"] == ("lam", 0.1)
    assert select(rows, 0.02, 0.2)[("d", "r2et")]["setting"] == ("lam", 1.0)
    assert select(rows, 0.02, None)[("d", "r2et")]["setting"] == ("lam", 1.0)
    only_bad = [rows[0], rows[2]]
    sel = select(only_bad, 0.02)[("d", "r2et")]
    assert not sel["admissible"] and "†" in results_table(only_bad, 0.02)
    assert "0.9 times vanilla's" in selection_rule_text(0.02, 0.9)
    assert "deletion" not in selection_rule_text(0.02, None)
    # a negative vanilla gain (gradient top-k no better than random, as on CIFAR-10): vanilla
    # stays admissible against itself, and the floor lies 0.1 of its size below it
    neg = [
        _row("d", "vanilla", None, 0, 0.90, 0.13, gain=-0.03),
        _row("d", "r2et", 0.1, 0, 0.90, 0.30, gain=-0.034),  # above -0.033: admissible
        _row("d", "r2et", 1.0, 0, 0.90, 0.60, gain=-0.05),  # below the floor
    ]
    chosen = select(neg, 0.02)
    assert chosen[("d", "vanilla")]["admissible"]
    assert chosen[("d", "r2et")]["setting"] == ("lam", 0.1)
    with pytest.raises(ValueError, match="min_deletion_ratio"):
        load_config(min_deletion_ratio=1.5)
    with pytest.raises(ValueError, match="preset"):
        load_config(evaluate={"preset": "huge"})


def test_selection_rule_can_require_locality():
    """With ``min_distinct_ratio`` a setting whose top-k is (nearly) one set for every input is
    not selected, however stable and faithful; off by default."""
    rows = [
        _row("d", "vanilla", None, 0, 0.90, 0.40, distinct=40),
        _row("d", "r2et", 0.1, 0, 0.90, 0.60, distinct=12),  # 0.3 of vanilla's sets
        _row("d", "r2et", 1.0, 0, 0.90, 0.99, distinct=2),  # a constant explanation
    ]
    assert select(rows, 0.02)[("d", "r2et")]["setting"] == ("lam", 1.0)
    assert select(rows, 0.02, 0.9, 0.25)[("d", "r2et")]["setting"] == ("lam", 0.1)
    assert not select(rows, 0.02, 0.9, 0.5)[("d", "r2et")]["admissible"]
    assert "distinct top-k sets" in selection_rule_text(0.02, 0.9, 0.25)
    assert "distinct" not in selection_rule_text(0.02, 0.9)
    with pytest.raises(ValueError, match="min_distinct_ratio"):
        load_config(min_distinct_ratio=2)


def test_rule_changes_and_grown_grids_resume_without_recomputing(full_run, tmp_path, monkeypatch):
    """A resumed run recomputes nothing when only the selection rule changes, when cells were
    written under the earlier digest rule (which included the rule and the grid's shape: they
    are re-tagged), and computes only the new cells when the grid grows."""
    import shutil

    import r2et.bench.cells as cells
    import r2et.bench.runner as runner
    from r2et.bench.store import config_digest

    cfg, out, rows = full_run
    real = cells._cell_task
    calls = []

    def counting(cell, config, pretrained):
        calls.append(cell["method"])
        return real(cell, config, pretrained)

    monkeypatch.setattr(cells, "_cell_task", counting)

    def cell_stamps(folder):
        return {p.name: p.stat().st_mtime_ns for p in (folder / "cells").glob("*.json")}

    stricter = tmp_path / "stricter"
    shutil.copytree(out, stricter)
    stamps = cell_stamps(stricter)
    strict = BenchConfig.from_dict({**cfg.to_dict(), "min_distinct_ratio": 1.0, "max_acc_drop": 0})
    again = run_bench(strict, stricter, resume=True, progress=False, report=False)
    assert cell_stamps(stricter) == stamps and calls == []
    assert [r["key"] for r in again] == [r["key"] for r in rows]

    # a config that leaves the explanation out ranked gradient columns in earlier versions and
    # the dataset's own explanation now: no earlier digest is accepted for it
    assert runner._legacy_digests(cfg.to_dict()) == ()
    # with the explanation named (breast-cancer's own is the gradient over columns, so the
    # stored cells are what this config computes), earlier versions' cells are accepted
    named = cfg.to_dict()
    named["evaluate"] = {**named["evaluate"], "explainer": "grad", "groups": False}
    cfg = BenchConfig.from_dict(named)
    legacy_folder = tmp_path / "legacy"
    shutil.copytree(out, legacy_folder)
    stored = json.loads((legacy_folder / "config.json").read_text())
    stored["evaluate"] = {**stored["evaluate"], "explainer": "grad", "groups": False}
    (legacy_folder / "config.json").write_text(json.dumps(stored))
    legacy = runner._legacy_digests(cfg.to_dict())[0]
    new = config_digest(runner._comparable(cfg.to_dict()))
    assert legacy != new
    for p in sorted((legacy_folder / "cells").glob("*.json")):  # as an earlier version wrote
        old_row = json.loads(p.read_text())
        old_row.pop("cell_sha256")  # earlier versions wrote no content digest, no marker
        p.write_text(json.dumps(old_row).replace(rows[0]["config_sha256"], legacy))
    (legacy_folder / "cells.digested").unlink()
    pre = legacy_folder / "pretrain" / "breast-cancer__seed0" / "config.json"
    pre.write_text(pre.read_text().replace(rows[0]["config_sha256"], legacy))
    weights = pre.parent / "model.safetensors"
    weights_stamp = weights.stat().st_mtime_ns
    grown = BenchConfig.from_dict({**cfg.to_dict(), "methods": ["vanilla", "r2et-noh", "sp"]})
    grown_rows = run_bench(grown, legacy_folder, resume=True, progress=False, report=False)
    assert sorted(calls) == ["sp", "sp"]  # only the new method's cells, one per seed
    old = {r["key"]: r for r in rows}
    for r in grown_rows:
        assert r["config_sha256"] == new
        if r["key"] in old:
            assert r["ensemble_p_at_k_mean"] == old[r["key"]]["ensemble_p_at_k_mean"]
    assert json.loads(pre.read_text())["config_sha256"] == new
    assert weights.stat().st_mtime_ns == weights_stamp  # the pre-trained model was reused


def test_the_bench_explainer_is_trained_and_scored(toml_path, tmp_path):
    """``evaluate.explainer`` names the explanation every method trains on and is scored with;
    ``explainers`` then lists the others (here the gradient) for generalisation."""
    from r2et.data import load_dataset
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer

    ev = {"explainer": "grad_x_input", "explainers": ["grad"], "explainer_n": 10}
    cfg = load_config(toml_path, seeds=[0], evaluate={**ev, "n": 10})
    rows = run_bench(cfg, tmp_path / "gxi", progress=False, report=False)
    r2et = next(r for r in rows if r["method"] == "r2et-noh")
    assert r2et["method_config"]["explainer"]["method"] == "grad_x_input"
    assert 0 <= r2et["x_grad_p_at_k"] <= 1
    from r2et.bench.report import explainer_table

    head = explainer_table(rows, 0.02, main="grad_x_input").splitlines()[0]
    assert head == "| Dataset | Method | grad_x_input P@k / del. | grad P@k / del. |"
    # the reported deletion gain is grad x input's: recompute it on the same model
    ds = load_dataset("breast-cancer", seed=0)
    from r2et.train import load_run

    model = load_run(tmp_path / "gxi" / "models" / r2et["key"]).model
    ref = evaluate(model, ds, Explainer("grad_x_input"), k=r2et["k"], attacks={}, n=10, seed=0)
    assert r2et["deletion_gain"] == pytest.approx(ref["faithfulness"]["deletion_gain"], abs=1e-6)
    with pytest.raises(ValueError, match="not an explainer"):
        load_config(toml_path, evaluate={"explainer": "magic"})
    with pytest.raises(ValueError, match="explainers"):
        load_config(
            toml_path, evaluate={"explainer": "grad_x_input", "explainers": ["grad_x_input"]}
        )


@requires_data
def test_the_bench_can_rank_attributes(tmp_path):
    """``evaluate.groups``: every method trains on and is scored by attribute groups (COMPAS's
    11 attributes), so k counts attributes and deletion replaces whole attributes."""
    from r2et.data import load_dataset
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer
    from r2et.train import load_run

    cfg = BenchConfig.from_dict(
        {
            "datasets": ["compas"],
            "methods": ["vanilla", "r2et-noh"],
            "seeds": [0],
            "threads": 1,
            "pretrain": {"epochs": 1, "lr": 1e-3, "batch_size": 256},
            "finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 256},
            "evaluate": {"n": 12, "steps": 3, "preset": "fast", "budgets": [], "groups": True,
                         "explainer": "grad", "thickness_samples": 1, "thickness_steps": 2},
            "datasets_options": {"compas": {"k": 4}},
        }
    )  # fmt: skip
    rows = run_bench(cfg, tmp_path / "grp", progress=False, report=False)
    r2et = next(r for r in rows if r["method"] == "r2et-noh")
    ds = load_dataset("compas", seed=0)
    assert r2et["method_config"]["explainer"].get("groups") is not None
    model = load_run(tmp_path / "grp" / "models" / r2et["key"]).model
    ex = Explainer("grad", groups=ds.groups)
    ref = evaluate(model, ds, ex, k=4, attacks={}, n=12, seed=0)
    assert r2et["deletion_gain"] == pytest.approx(ref["faithfulness"]["deletion_gain"], abs=1e-6)
    assert r2et["distinct_topk_sets"] == ref["locality"]["distinct_topk_sets"]
    with pytest.raises(ValueError, match=r"1\.\.10 \(F=11\)"):  # 11 attributes: k = 12 too many
        bad = BenchConfig.from_dict({**cfg.to_dict(), "datasets_options": {"compas": {"k": 12}}})
        run_bench(bad, tmp_path / "bad", progress=False)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_config(datasets=["nope"])
    with pytest.raises(ValueError, match="unknown method"):
        load_config(methods=["vanilla", "magic"])
    with pytest.raises(ValueError, match="vanilla"):
        load_config(methods=["r2et"])
    with pytest.raises(ValueError, match="unknown benchmark setting"):
        load_config(colour="blue")
    bad = tmp_path / "bad.toml"
    bad.write_text("datasets = [")
    with pytest.raises(ValueError, match="TOML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.toml")


def test_a_methods_override_narrows_the_files_grid():
    cfg = load_config("paper_cpu", methods=["vanilla", "r2et-sp"])
    assert cfg.methods == ["vanilla", "r2et-sp"]
    assert list(cfg.grid) == ["r2et-sp"]
    assert cfg.grid["r2et-sp"] == load_config("paper_cpu").grid["r2et-sp"]


def test_a_failing_cell_is_recorded_and_retried_on_resume(tmp_path, monkeypatch, toml_path):
    import r2et.bench.cells as cells

    cfg = load_config(toml_path, seeds=[0])
    real = cells._cell_task

    def flaky(cell, config, pretrained):
        if cell["method"] == "r2et-noh":
            raise RuntimeError("simulated failure")
        return real(cell, config, pretrained)

    monkeypatch.setattr(cells, "_cell_task", flaky)
    with pytest.warns(UserWarning, match="failed") as caught:
        rows = run_bench(cfg, tmp_path, progress=False, report=False)
    assert any("simulated failure" in str(w.message) for w in caught)
    assert [r["method"] for r in rows] == ["vanilla"]
    errors = list((tmp_path / "errors").glob("*.json"))
    assert len(errors) == 1 and "simulated failure" in errors[0].read_text()
    monkeypatch.setattr(cells, "_cell_task", real)
    rows = run_bench(cfg, tmp_path, resume=True, progress=False, report=False)
    assert sorted(r["method"] for r in rows) == ["r2et-noh", "vanilla"]
    assert not list((tmp_path / "errors").glob("*.json"))


def test_model_bytes_round_trip_keeps_softplus_transform():
    """Models cross to Ray workers as spec + transforms + safetensors bytes; sp's Softplus
    must survive the trip (rebuilding from the spec alone would bring ReLUs back)."""
    import torch

    from r2et import build_model, get_method
    from r2et.runs import model_bytes, model_from_bytes

    torch.manual_seed(0)
    model = get_method("sp", beta=5.0).prepare(build_model("mlp", [6], 2, hidden=[8]))
    back = model_from_bytes(model_bytes(model))
    x = torch.randn(4, 6)
    assert torch.equal(model(x), back(x))
    assert any(isinstance(m, torch.nn.Softplus) for m in back.modules())


def test_dataset_params_reach_the_method(tmp_path, toml_path):
    """``datasets_options.NAME.params.METHOD`` sets that method's hyperparameters for that
    dataset only (e.g. an ``h`` on the scale of the dataset's eps); the grid weight wins."""
    cfg = load_config(toml_path, seeds=[0])
    name = cfg.datasets[0]
    opts = {name: {"params": {"r2et-noh": {"lam": 0.37, "normalize": "l2"}}}}
    cfg = load_config(toml_path, seeds=[0], datasets_options=opts)
    rows = run_bench(cfg, tmp_path / "a", progress=False, report=False)
    hp = next(r for r in rows if r["method"] == "r2et-noh")["method_config"]["hyperparameters"]
    assert hp["lam"] == 0.37 and hp["normalize"] == "l2"
    swept = load_config(toml_path, seeds=[0], datasets_options=opts, grid={"r2et-noh": [0.05]})
    rows = run_bench(swept, tmp_path / "b", progress=False, report=False)
    hp = next(r for r in rows if r["method"] == "r2et-noh")["method_config"]["hyperparameters"]
    assert hp["lam"] == 0.05 and hp["normalize"] == "l2"


def test_saliency_panel_has_a_row_per_method(tmp_path, toml_path):
    """The image panel: stored by the runner, rendered from the stored tensors only; one row
    per method with a saved model plus the input row, two columns per input, a colour bar;
    None for a dataset without saved models. A resumed run reuses the stored panel."""
    import matplotlib.image as mpimg

    from r2et.bench import plots
    from r2et.bench.panels import build_saliency_panel, load_saliency_panel, panel_paths

    cfg = load_config(
        toml_path,
        datasets=["digits"],
        seeds=[0],
        pretrain={"epochs": 1},
        evaluate={"n": 3, "budgets": [], "thickness_samples": 1},
    )
    out = tmp_path / "run"
    rows = run_bench(cfg, out, progress=False)
    stored = load_saliency_panel(out, "digits")
    assert stored is not None and stored["meta"]["methods"] == cfg.methods
    assert (out / "plots" / "saliency_digits.png").is_file()
    n_methods = len(cfg.methods)
    assert stored["clean"].shape == stored["adv"].shape == (n_methods, 3, 64)
    # rendering reads only: it works with attacks and training made unavailable
    import r2et.attacks

    def refuse(*a, **k):
        raise AssertionError("rendering attacked")

    orig = r2et.attacks.EnsembleAttack
    r2et.attacks.EnsembleAttack = refuse
    try:
        path = plots.plot_saliency_panel(stored, tmp_path / "p.png")
    finally:
        r2et.attacks.EnsembleAttack = orig
    vanilla = [r for r in rows if r["method"] == "vanilla"]
    one_panel = build_saliency_panel(out, vanilla, cfg, "digits", n_images=3)
    assert one_panel is not None
    torch.testing.assert_close(one_panel["clean"][0], stored["clean"][0])  # same model, input
    one = plots.plot_saliency_panel(one_panel, tmp_path / "v.png")
    both, single = mpimg.imread(path).shape, mpimg.imread(one).shape
    assert both[0] > single[0] * 1.2  # a row more (3 rows against 2)
    assert abs(both[1] - single[1]) < 0.1 * both[1]  # same columns
    assert build_saliency_panel(out, rows, cfg, "breast-cancer") is None
    # resume: the stored panel is reused, not recomputed; a tampered one is recomputed
    tensors, desc = panel_paths(out, "digits")
    before = desc.stat().st_mtime_ns
    run_bench(cfg, out, resume=True, progress=False)
    assert desc.stat().st_mtime_ns == before
    tensors.write_bytes(tensors.read_bytes()[:-4] + b"abcd")
    assert load_saliency_panel(out, "digits") is None
    run_bench(cfg, out, resume=True, progress=False)
    assert load_saliency_panel(out, "digits") is not None


def test_training_cost_plot_skips_untimeable_datasets(tmp_path):
    from r2et.bench.plots import plot_training_cost

    def row(d: str, m: str, sec: float | None) -> dict:
        return {"dataset": d, "method": m, "train_seconds_per_epoch": sec}

    rows = [row("a", "vanilla", 2.0), row("a", "r2et", 7.0), row("a", "at", None)]
    rows += [row("b", "vanilla", 0.01), row("b", "r2et", 0.05)]
    path = plot_training_cost(rows, tmp_path / "cost.png", ["vanilla", "r2et", "at"], epochs=5)
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    assert plot_training_cost(rows[3:], tmp_path / "none.png", epochs=5) is None
    assert not (tmp_path / "none.png").exists()


def test_explainer_generalisation_columns_and_table(tmp_path, toml_path):
    """``evaluate.explainers``: each cell also reports P@k and deletion gain of the other
    explainers under the same ensemble; the report gets a table of them."""
    from r2et.bench.report import explainer_table

    cfg = load_config(
        toml_path,
        datasets=["breast-cancer"],
        methods=["vanilla", "r2et"],
        seeds=[0],
        evaluate={"n": 4, "budgets": [], "thickness_samples": 1, "preset": "fast",
                  "explainers": ["grad_x_input", "ig"], "explainer_n": 3},
    )  # fmt: skip
    out = tmp_path / "run"
    rows = run_bench(cfg, out, progress=False)
    for r in rows:
        for name in ("grad_x_input", "ig"):
            assert 0.0 <= r[f"x_{name}_p_at_k"] <= 1.0
            assert isinstance(r[f"x_{name}_deletion_gain"], float)
    table = explainer_table(rows, cfg.max_acc_drop)
    assert "grad_x_input P@k / del." in table and "ig P@k / del." in table
    assert table.count("| breast-cancer |") == 2
    assert "## Explainer generalisation" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="lime"):
        load_config(toml_path, evaluate={"explainers": ["lime"]})


def test_unconverged_pretrained_models_are_flagged():
    from r2et.bench.report import pretrain_warnings

    rows = [
        {"dataset": "d", "seed": s, "pretrain_val_accuracy": a}
        for s, a in ((0, 0.95), (1, 0.94), (2, 0.72))
    ] + [{"dataset": "e", "seed": 0, "pretrain_val_accuracy": None}]
    warn = pretrain_warnings(rows)
    assert len(warn) == 1 and "dataset d, seed 2" in warn[0] and "0.230 below" in warn[0]
    assert pretrain_warnings(rows, gap=0.3) == []


def test_grid_cells_train_without_the_datasets_fit_suggestions(monkeypatch):
    """A grid's cells keep the best validation epoch and use no weight decay even where the
    dataset suggests otherwise (a small CSV's ``default_fit``), so grids stay reproducible."""
    import r2et.train
    from r2et.bench import cells

    seen = {}

    def recording_fit(model, method, ds, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(r2et.train, "fit", recording_fit)
    cfg = BenchConfig(datasets=["breast-cancer"], methods=["vanilla"], seeds=[0])
    with pytest.raises(RuntimeError, match="stop here"):
        cells.pretrain_task("breast-cancer", 0, cfg)
    assert seen["keep"] == "best" and seen["weight_decay"] == 0.0
