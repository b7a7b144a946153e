"""Data input hardening (issue 23): CSV digests and width limits, ``load_dataset("csv",
name=...)``, DataLoader/tuple checks in ``fit``, endless loaders, output width, empty boxes,
and the lazy package root."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import r2et
from r2et.cli import main
from r2et.data import Dataset, from_tensors, load_dataset, load_run_dataset
from r2et.data.custom import MAX_LOADER_ROWS
from r2et.data.tabular import MAX_CSV_COLUMNS


def _write_csv(path: Path, n: int = 60, seed: int = 0, cols: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, cols)).round(4)
    y = (a[:, 0] > 0).astype(int)
    lines = [",".join(f"c{i}" for i in range(cols)) + ",y"]
    lines += [",".join(map(str, row)) + f",{label}" for row, label in zip(a, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _xy(n: int = 40, f: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g)
    return x, (x[:, 0] > 0).long()


def _fit(model: nn.Module, data: object) -> r2et.train.TrainResult:
    return r2et.fit(model, "vanilla", data, epochs=1, progress=False)


# ----------------------------------------------------------------------- 1: CSV digests
def test_csv_records_sha256_and_a_changed_file_is_refused(tmp_path):
    path = _write_csv(tmp_path / "data.csv")
    ds = load_dataset("csv", path=path, target="y")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.info["sha256"] == digest and ds.summary()["sha256"] == digest
    config = {"dataset": ds.summary(), "data_seed": 0, "data_params": {"path": str(path),
              "target": "y"}}  # fmt: skip
    again = load_run_dataset(config)
    assert torch.equal(again.test[0], ds.test[0])
    _write_csv(path, seed=1)  # same shape, other values
    new = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="data.csv changed") as err:
        load_run_dataset(config)
    msg = str(err.value)
    assert digest[:12] in msg and new[:12] in msg and "accept_changed_data" in msg
    with pytest.warns(UserWarning, match="changed"):
        changed = load_run_dataset(config, accept_changed_data=True)
    assert changed.info["sha256"] == new
    legacy = {**config, "dataset": {k: v for k, v in config["dataset"].items() if k != "sha256"}}
    with pytest.warns(UserWarning, match="records no SHA-256"):
        assert load_run_dataset(legacy).info["sha256"] == new
    with pytest.raises(ValueError, match="accept_changed_data must be"):
        load_run_dataset(config, accept_changed_data="yes")


def test_cli_evaluate_and_explain_refuse_a_changed_csv(tmp_path, capsys):
    path = _write_csv(tmp_path / "d.csv", n=80)
    run = tmp_path / "run"
    argv = ["train", "csv", "--path", str(path), "--target", "y", "--epochs", "1"]
    assert main([*argv, "--out", str(run), "--no-progress"]) == 0
    recorded = json.loads((run / "config.json").read_text())["dataset"]["sha256"]
    assert recorded == hashlib.sha256(path.read_bytes()).hexdigest()
    evaluate = ["evaluate", str(run), "--attack", "mse", "--steps", "2", "--n", "4"]
    assert main([*evaluate, "--no-progress"]) == 0
    capsys.readouterr()
    _write_csv(path, n=80, seed=3)
    assert main([*evaluate, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "d.csv changed" in err[0] and recorded[:12] in err[0]
    png = tmp_path / "s.png"
    assert main(["explain", str(run), "--out", str(png)]) == 2
    assert "changed" in capsys.readouterr().err and not png.exists()
    assert main([*evaluate, "--no-progress", "--accept-changed-data"]) == 0
    assert "warning" in capsys.readouterr().err


# ----------------------------------------------------------------------- 2: wide CSVs
def test_a_20000_column_csv_is_refused_at_once(tmp_path):
    path = tmp_path / "wide.csv"
    header = ",".join(f"c{i}" for i in range(20_000)) + ",y"
    row = ",".join(["0.5"] * 20_000)
    path.write_text(header + "\n" + "\n".join(f"{row},{i % 2}" for i in range(20)) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="20,001 columns; the limit is max_columns=2,000"):
        load_dataset("csv", path=path, target="y")
    assert time.perf_counter() - t0 < 5
    assert MAX_CSV_COLUMNS == 2_000


def test_csv_width_limits_can_be_set_and_count_one_hot_columns(tmp_path):
    path = _write_csv(tmp_path / "d.csv", cols=5)
    with pytest.raises(ValueError, match="6 columns; the limit is max_columns=4"):
        load_dataset("csv", path=path, target="y", max_columns=4)
    assert load_dataset("csv", path=path, target="y", max_columns=6).n_features == 5
    cat = tmp_path / "cat.csv"
    cat.write_text("a,b,y\n" + "".join(f"{i},v{i % 7},{i % 2}\n" for i in range(40)))
    with pytest.raises(ValueError, match="encodes to 8 input features.*max_features=5"):
        load_dataset("csv", path=cat, target="y", max_features=5)
    assert load_dataset("csv", path=cat, target="y").n_features == 8


# ----------------------------------------------------------------------- 3: name=
def test_load_dataset_csv_accepts_a_display_name(tmp_path):
    path = _write_csv(tmp_path / "data.csv")
    ds = load_dataset("csv", path=path, target="y", name="churn")
    assert ds.name == "churn" and ds.summary()["name"] == "churn"
    assert ds.info["loader"] == "csv"
    assert load_dataset("csv", path=path, target="y").name == "data"
    assert load_dataset(name="csv", path=path, target="y").name == "data"  # old keyword form
    with pytest.raises(ValueError, match="display name"):
        load_dataset("csv", path=path, target="y", name="  ")
    with pytest.raises(ValueError, match=r"unknown keyword\(s\) \['name'\]"):
        load_dataset("breast-cancer", name="x")


# ----------------------------------------------------------------------- 4: loader contents
def test_extra_tuple_items_are_refused():
    x, y = _xy()
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="batches of 3 items.*yield \\(x, y\\)"):
        _fit(model, DataLoader(TensorDataset(x, y, y), batch_size=8))
    with pytest.raises(ValueError, match="TensorDataset of 3 tensors"):
        _fit(model, TensorDataset(x, y, y))
    with pytest.raises(ValueError, match="tuple of 3 items"):
        _fit(model, (x, y, y))
    with pytest.raises(ValueError, match="batches of 3 items"):
        r2et.evaluate(model, DataLoader(TensorDataset(x, y, y), batch_size=8), "grad", k=1)


def test_float_labels_are_refused_with_a_hint():
    x, y = _xy()
    for labels in (y.float(), y.double()):
        with pytest.raises(ValueError, match=r"integer class labels.*y\.long\(\)"):
            _fit(nn.Linear(3, 2), (x, labels))
    with pytest.raises(ValueError, match="integer class labels"):
        _fit(nn.Linear(3, 2), DataLoader(TensorDataset(x, y.float()), batch_size=8))
    assert _fit(nn.Linear(3, 2), (x, y)).best_epoch == 1


def test_a_single_training_class_is_refused():
    x, _ = _xy()
    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    with pytest.raises(ValueError, match="single class.*at least 2 classes"):
        _fit(model, (x, torch.ones(len(x), dtype=torch.long)))
    assert torch.equal(model.weight, before)


class _Ragged(IterableDataset):
    def __iter__(self):
        yield torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
        yield torch.randn(4, 5), torch.tensor([0, 1, 0, 1])


def test_ragged_batches_name_both_shapes():
    with pytest.raises(ValueError, match=r"batch 1 is \(4, 3\) and batch 2 is \(4, 5\)"):
        _fit(nn.Linear(3, 2), DataLoader(_Ragged(), batch_size=None))


# ----------------------------------------------------------------------- 5: endless loaders
class _Stream(IterableDataset):
    """``n_batches`` batches of 1,000 rows (None: endless); the same tensors each time."""

    def __init__(self, n_batches: int | None) -> None:
        self.n_batches = n_batches

    def __iter__(self):
        x, _ = _xy(1000, 2)
        y = torch.arange(1000) % 2
        i = 0
        while self.n_batches is None or i < self.n_batches:
            i += 1
            yield x, y


def test_an_endless_loader_is_refused_not_read_forever():
    endless = DataLoader(_Stream(None), batch_size=None)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=f"more than max_rows={MAX_LOADER_ROWS:,} rows"):
        _fit(nn.Linear(2, 2), endless)
    assert time.perf_counter() - t0 < 30
    with pytest.raises(ValueError, match="max_rows=5,000"):
        from_tensors(endless, max_rows=5_000)
    finite = from_tensors(DataLoader(_Stream(3), batch_size=None), max_rows=3_000)
    assert len(finite.train[0]) + len(finite.val[0]) == 3_000
    with pytest.raises(ValueError, match="max_rows must be an int >= 1"):
        from_tensors(DataLoader(_Stream(3), batch_size=None), max_rows=0)


# ----------------------------------------------------------------------- 6: output width
@pytest.mark.parametrize(
    "model, match",
    [
        (nn.Linear(3, 1), r"outputs shape \(2, 1\).*2 classes"),
        (nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)), r"outputs shape \(2,\)"),
    ],
)
def test_a_model_narrower_than_the_classes_is_refused_before_training(model, match):
    x, y = _xy()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        _fit(model, (x, y))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_output_check_keeps_train_modes():
    x, y = _xy()
    model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    r2et.fit(model, "vanilla", (x, y), epochs=1, progress=False, batchnorm="eval")
    ds = from_tensors((x, y))
    model.train()
    model[1].eval()
    r2et.train._check_output_width(model, ds, torch.device("cpu"), torch.float32)
    assert model.training and model[0].training and not model[1].training


# ----------------------------------------------------------------------- 7: bounds
@pytest.mark.parametrize(
    "bounds, match",
    [
        ((1, 0), "low end exceeds the high end"),
        ((torch.zeros(3), torch.tensor([1.0, -1.0, 1.0])), "low 0 > high -1 at entry 1"),
        ((0, float("nan")), "NaN or infinite"),
        ((float("-inf"), 1), "NaN or infinite"),
        ((torch.zeros(4), 1), "does not fit one input"),
        ((0, 1, 2), r"\(low, high\) pair"),
    ],
)
def test_bad_bounds_are_refused(bounds, match):
    x, y = _xy()
    with pytest.raises(ValueError, match=match):
        from_tensors((x, y), bounds=bounds)


def test_dataset_bounds_are_checked_wherever_set():
    x, y = _xy()
    ok = from_tensors((x, y), bounds=(-5, 5))
    assert ok.bounds == (-5, 5)
    assert from_tensors((x, y), bounds="train", bounds_margin=0.1).bounds is not None
    with pytest.raises(ValueError, match="box is empty"):
        Dataset("d", "tabular", (x, y), (x, y), (x, y), 2, ["a", "b", "c"], 1, bounds=(1, 0))


# ----------------------------------------------------------------------- 8: lazy package root
def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_importing_the_cli_does_not_import_torch():
    res = _python("import sys, r2et.cli; assert 'torch' not in sys.modules, 'torch'; print('ok')")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_public_names_still_resolve():
    code = (
        "import r2et\n"
        "assert set(r2et._LAZY) == set(r2et.__all__) and r2et.__version__\n"
        "from r2et import fit, load_run, save_run, evaluate\n"
        "assert r2et.load_run is load_run and r2et.fit is fit and 'fit' in dir(r2et)\n"
        "try:\n    r2et.no_such_name\nexcept AttributeError:\n    print('ok')\n"
    )
    res = _python(code)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    for name in r2et.__all__:  # every name resolves (in this process, modules are loaded)
        assert getattr(r2et, name) is not None, name
    assert set(r2et.__all__) <= set(dir(r2et))


def test_an_error_after_ctrl_c_is_reported_as_interrupted(monkeypatch, capsys):
    """A Ctrl-C that lands inside a third-party import can be swallowed there and surface
    later as another error (numpy's RecursionError): after SIGINT, any error is exit 130."""
    import signal
    import threading
    import time
    import warnings

    import r2et.cli as cli
    import r2et.cli.app as cli_app

    def interrupted_import(args):
        try:  # to the main thread itself: a busy machine may leave another thread that got
            # a process-wide signal unscheduled for longer than a short loop (a flake seen once)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the handler runs between bytecodes
                time.sleep(0.001)
        except KeyboardInterrupt:
            pass  # swallowed half-way, as an import machinery may
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(cli_app, "cmd_datasets", interrupted_import)
    # Python installs its default handler at start-up unless SIGINT is already ignored: a
    # suite launched as a background job of a non-interactive shell (`cmd &`, as some CI
    # runners do) inherits SIG_IGN, which r2et rightly leaves alone. Start from the default.
    leaked = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert cli.main(["datasets"]) == 130
        assert capsys.readouterr().err.strip() == "r2et: interrupted"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, leaked)
    if leaked not in (signal.default_int_handler, signal.SIG_IGN):
        warnings.warn(f"an earlier test left the SIGINT handler {leaked!r}", stacklevel=1)


def test_a_csv_whose_rows_are_wider_than_its_header_is_refused(tmp_path):
    """pandas would silently turn the extra leading fields into an index."""
    from r2et.data import load_dataset

    path = tmp_path / "narrow_header.csv"
    rows = ["a,y"] + [f"{i},{i % 3},{i % 2}" for i in range(30)]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="fields"):
        load_dataset("csv", path=path, target="y")
