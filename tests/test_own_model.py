"""Own models and data: the README's and docs/own_model.md's examples run as written; a custom
module checkpointed with a factory is rebuilt and evaluated by the CLI; CSV files on the CLI;
logging, callbacks and dtypes in fit."""

from __future__ import annotations

import json
import logging
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

import r2et
from r2et.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(path: Path, heading: str | None = None) -> str:
    """The ```python blocks of a Markdown file (only under ``heading`` when given)."""
    text = path.read_text()
    if heading is not None:
        start = text.index(heading)
        nxt = text.find("\n## ", start + len(heading))
        text = text[start : nxt if nxt >= 0 else len(text)]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"no python block in {path.name}"
    return "\n".join(blocks)


def _run(code: str, where: Path, monkeypatch) -> dict:
    monkeypatch.chdir(where)
    torch.set_num_threads(1)
    scope: dict = {"__name__": "__main__"}
    exec(compile(code, "<doc>", "exec"), scope)  # noqa: S102 - our own documentation
    return scope


@pytest.mark.slow
def test_readme_own_model_section_runs_as_written(tmp_path, monkeypatch, capsys):
    scope = _run(
        _python_blocks(ROOT / "README.md", "## Your own model and data"), tmp_path, monkeypatch
    )
    acc, p_at_k = (float(v) for v in capsys.readouterr().out.split())
    assert acc > 0.85 and 0.0 <= p_at_k <= 1.0
    assert (tmp_path / "runs" / "mine" / "model.safetensors").is_file()
    loaded, trained = scope["again"].model, scope["res"].model
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), trained.parameters()))


@pytest.mark.slow
def test_docs_own_model_examples_run_as_written(tmp_path, monkeypatch, capsys):
    logging.getLogger("r2et").setLevel(logging.INFO)
    scope = _run(_python_blocks(ROOT / "docs" / "own_model.md"), tmp_path, monkeypatch)
    out = capsys.readouterr().out
    # the attention model learned its task and both models were attacked
    lines = [ln for ln in out.splitlines() if "P@2 under attack" in ln]
    assert len(lines) == 2
    for ln in lines:
        assert float(re.search(r"accuracy ([0-9.]+)", ln).group(1)) > 0.8
    # the plain loop logged its terms, the callbacks saw every epoch and stopped early
    assert scope["history"] and len(scope["history"]) < 40
    assert scope["history"][-1]["val_accuracy"] >= 0.95
    logging.getLogger("r2et").setLevel(logging.WARNING)


# ------------------------------------------------------------------- factory checkpoints
MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, n_features, hidden=8):
            super().__init__()
            layers = [nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 2)]
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            return self.body(x)


    def make_net(n_features, hidden=8):
        return Net(n_features, hidden)
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's importable module ``r2et_user_models`` with a class and a factory function."""
    (tmp_path / "r2et_user_models.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("r2et_user_models", None)
    import r2et_user_models

    yield r2et_user_models
    sys.modules.pop("r2et_user_models", None)


def test_factory_checkpoint_is_rebuilt_and_evaluated_by_the_cli(tmp_path, user_module, capsys):
    torch.manual_seed(0)
    ds = r2et.load_dataset("breast-cancer")
    model = user_module.Net(ds.input_shape[0])
    res = r2et.fit(model, "vanilla", ds, epochs=3, progress=False)
    folder = tmp_path / "run"
    r2et.save_run(
        folder,
        res.model,
        res.config,
        factory=user_module.Net,
        factory_kwargs={"n_features": ds.input_shape[0]},
        dataset=ds,
    )
    spec = json.loads((folder / "config.json").read_text())["model"]
    assert spec["factory"] == "r2et_user_models:Net" and spec["kwargs"] == {"n_features": 30}
    with pytest.raises(ValueError, match="r2et_user_models:Net"):
        r2et.load_run(folder)  # a class outside r2et and torch is code: it needs trust
    run = r2et.load_run(folder, trust_factory=True)
    assert isinstance(run.model, user_module.Net)
    x = ds.split("test")[0]
    assert torch.equal(run.model(x), res.model(x))
    args = ["evaluate", str(folder), "--n", "12", "--preset", "fast", "--no-progress"]
    assert main(args) == 2 and "--trust-factory" in capsys.readouterr().err
    code = main([*args, "--trust-factory"])
    out = capsys.readouterr().out
    assert code == 0 and "ensemble" in out and "P@" in out
    assert (folder / "evaluation_test.json").is_file()


def test_factory_function_needs_trust(tmp_path, user_module, capsys):
    model = user_module.make_net(30)
    folder = tmp_path / "run"
    ds = r2et.load_dataset("breast-cancer")
    r2et.save_run(
        folder,
        model,
        {},
        factory="r2et_user_models:make_net",
        factory_kwargs={"n_features": 30},
        dataset=ds,
    )
    with pytest.raises(ValueError, match="trust_factory=True"):
        r2et.load_run(folder)
    assert isinstance(r2et.load_run(folder, trust_factory=True).model, user_module.Net)
    assert main(["evaluate", str(folder), "--n", "4", "--preset", "fast", "--no-progress"]) == 2
    assert "--trust-factory" in capsys.readouterr().err
    args = ["evaluate", str(folder), "--n", "4", "--preset", "fast", "--no-progress"]
    assert main([*args, "--trust-factory"]) == 0


def test_factory_errors_are_one_line(tmp_path):
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="lambda|locally"):
        r2et.save_run(tmp_path / "a", model, factory=lambda: nn.Linear(3, 2))
    with pytest.raises(ValueError, match="does not import"):
        r2et.save_run(tmp_path / "b", model, factory="no_such_module_xyz:Net")
    with pytest.raises(ValueError, match="must read 'package.module:Name'"):
        r2et.save_run(tmp_path / "c", model, factory="Net")
    with pytest.raises(ValueError, match="JSON"):
        r2et.save_run(
            tmp_path / "d",
            model,
            factory="torch.nn:Linear",
            factory_kwargs={"in_features": torch.tensor(3)},
        )
    with pytest.raises(ValueError, match="factory_kwargs needs factory"):
        r2et.save_run(tmp_path / "e", model, factory_kwargs={"a": 1})
    # a torch class is a fine factory: rebuilt without trust, weights identical
    r2et.save_run(
        tmp_path / "f",
        model,
        factory="torch.nn:Linear",
        factory_kwargs={"in_features": 3, "out_features": 2},
    )
    assert torch.equal(r2et.load_run(tmp_path / "f").model.weight, model.weight)
    # a config naming a callable that is not a module class is never called without trust
    cfg_path = tmp_path / "f" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["factory"] = "os:getcwd"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="run_sha256"):
        r2et.load_run(tmp_path / "f")
    with pytest.raises(ValueError, match="trust_factory"):
        r2et.load_run(tmp_path / "f", verify=False)


# ------------------------------------------------------------------------------- CSV CLI
def test_csv_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.to_csv("table.csv", index=False)
    base = ["--path", "table.csv", "--target", "label", "--no-progress"]
    assert main(["train", "csv", *base, "--epochs", "2", "--out", "run"]) == 0
    cfg = json.loads(Path("run/config.json").read_text())
    assert cfg["data_params"]["path"] == str(tmp_path / "table.csv")
    assert cfg["dataset"]["loader"] == "csv" and cfg["batch_size"] == 32
    monkeypatch.chdir(tmp_path.parent)  # the run remembers the absolute path
    assert (
        main(["evaluate", str(tmp_path / "run"), "--n", "8", "--preset", "fast", "--no-progress"])
        == 0
    )
    assert "table (test)" in capsys.readouterr().out  # the file's name, not "csv"
    monkeypatch.chdir(tmp_path)
    bench = [
        "bench",
        "--datasets",
        "csv",
        *base,
        "--methods",
        "vanilla",
        "--epochs",
        "0",
        "--n",
        "6",
        "--out",
        "b",
    ]
    assert main(bench) == 0
    assert Path("b/report.md").is_file()
    assert main(["train", "csv", "--target", "label", "--out", "r2"]) == 2
    assert "path=" in capsys.readouterr().err
    assert main(["train", "csv", *base, "--target", "nope", "--out", "r3"]) == 2


# ------------------------------------------------------- logging, callbacks, dtype, device
def test_fit_logs_calls_every_callback_and_stops_on_stopiteration(caplog):
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    y = (x[:, 0] > 0).long()
    seen_a, seen_b = [], []

    def stop_at_three(entry: dict) -> None:
        seen_b.append(entry["epoch"])
        if entry["epoch"] == 3:
            raise StopIteration

    with caplog.at_level(logging.INFO, logger="r2et"):
        res = r2et.fit(
            nn.Linear(5, 2),
            "vanilla",
            (x, y),
            epochs=10,
            progress=False,
            callback=[seen_a.append, stop_at_three],
        )
    assert [e["epoch"] for e in seen_a] == [1, 2, 3] and seen_b == [1, 2, 3]
    assert len(res.history) == 3
    text = caplog.text
    assert "fit vanilla on cpu (float32)" in text and "epoch 3/10" in text
    with pytest.raises(ValueError, match="callable"):
        r2et.fit(nn.Linear(5, 2), "vanilla", (x, y), epochs=1, progress=False, callback=[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_fit_trains_a_model_in_its_own_dtype(dtype):
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    y = (x[:, 0] - x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)).to(dtype)
    # lr 1e-2: bfloat16 weights (8-bit mantissa) round away most Adam steps of 1e-3
    method = r2et.get_method("r2et-paper", k=2)
    res = r2et.fit(model, method, (x, y), epochs=15, lr=1e-2, progress=False)
    assert next(res.model.parameters()).dtype == dtype
    with torch.no_grad():
        acc = (res.model(x.to(dtype)).argmax(1) == y).float().mean()
    assert acc > 0.8


def test_fit_leaves_the_model_where_it_is(monkeypatch):
    """device=None trains where the parameters are, even when CUDA would be available."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    res = r2et.fit(nn.Linear(4, 2), "vanilla", (x, y), epochs=1, progress=False)
    assert res.config["device"] == "cpu"


def test_fit_batchnorm_eval_keeps_running_statistics_and_does_not_warn(recwarn):
    import warnings

    torch.manual_seed(0)
    x = torch.randn(128, 6)
    y = (x[:, 0] > 0).long()

    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))

    model = net()
    before = model[1].running_mean.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the BatchNorm warning would raise
        r2et.fit(
            model, r2et.get_method("r2et", k=2), (x, y), epochs=2, progress=False, batchnorm="eval"
        )
    assert torch.equal(model[1].running_mean, before)
    other = net()
    with pytest.warns(UserWarning, match="batchnorm='eval'"):
        r2et.fit(other, r2et.get_method("r2et", k=2), (x, y), epochs=1, progress=False)
    assert not torch.equal(other[1].running_mean, before)
    with pytest.raises(ValueError, match="batchnorm"):
        r2et.fit(net(), "vanilla", (x, y), epochs=1, progress=False, batchnorm="frozen")


def test_shipped_configs_resolve_by_name(tmp_path, monkeypatch):
    from r2et.bench.config import list_configs, load_config, resolve_config

    assert "paper" in list_configs()
    shipped = resolve_config("paper")
    assert shipped == resolve_config("paper.toml") and shipped.is_file()
    assert "datasets" in shipped.read_text()  # a real grid
    assert load_config("paper").datasets == load_config(str(shipped)).datasets
    monkeypatch.chdir(tmp_path)  # a local file of the same name wins over the shipped one
    Path("paper.toml").write_text('datasets = ["digits"]\nmethods = ["vanilla"]\n')
    assert load_config("paper.toml").datasets == ["digits"]
    with pytest.raises(FileNotFoundError, match="configs shipped with r2et: .*paper"):
        resolve_config("no-such-config")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"configs/*.toml"' in pyproject  # shipped in the wheel


# ------------------------------------------------------------ bounds of your own data
def _toy(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def test_bounds_from_training_data_with_margin_and_clipping():
    x, y = _toy()
    x_te = x[:20].clone()
    x_te[0, 2] = 9.0  # beyond any training value
    train = (x[100:], y[100:])
    val = (x[50:100], y[50:100])  # given, so the training rows are exactly x[100:]
    ds = r2et.from_tensors(train, val, (x_te, y[:20]), bounds="train", bounds_margin=0.1)
    lo, hi = x[100:].min(0).values, x[100:].max(0).values
    torch.testing.assert_close(ds.bounds[0], lo - 0.1 * (hi - lo))
    torch.testing.assert_close(ds.bounds[1], hi + 0.1 * (hi - lo))
    assert float(ds.test[0][0, 2]) == 9.0  # not clipped without clip=True
    clipped = r2et.from_tensors(train, val, (x_te, y[:20]), bounds="train", clip=True)
    outside = int(((x_te < lo) | (x_te > hi)).any(1).sum())
    assert clipped.info["rows_clipped_to_bounds"]["test"] == outside >= 1
    assert float(clipped.test[0][0, 2]) == float(hi[2])
    with pytest.raises(ValueError, match="bounds_margin applies"):
        r2et.from_tensors(train, bounds=(0.0, 1.0), bounds_margin=0.1)
    with pytest.raises(ValueError, match="clip=True needs bounds"):
        r2et.from_tensors(train, clip=True)
    with pytest.raises(ValueError, match="'train'"):
        r2et.from_tensors(train, bounds="data")


@pytest.mark.parametrize("kind", ["pgd", "search", "ensemble"])
def test_attacks_clip_inputs_outside_the_box(kind):
    torch.manual_seed(0)
    x, y = _toy()
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
    box = (x.min(0).values, x.max(0).values)
    x_out = x[:8].clone()
    x_out[:, 0] = box[1][0] + 0.5  # every row outside the box
    ex = r2et.Explainer("grad")
    build = {
        "pgd": lambda clip: r2et.ERAttack(
            ex, 2, 0.2, steps=5, bounds=box, seed=0, clip_inputs=clip
        ),
        "search": lambda clip: r2et.RandomSearchAttack(
            ex, 2, 0.2, steps=10, bounds=box, seed=0, clip_inputs=clip
        ),
        "ensemble": lambda clip: r2et.EnsembleAttack(
            ex, 2, 0.2, bounds=box, preset="fast", clip_inputs=clip
        ),
    }[kind]
    with pytest.raises(ValueError, match="clip_inputs=True"):
        build(False)(model, x_out)
    res = build(True)(model, x_out)
    inside = torch.maximum(torch.minimum(x_out, box[1]), box[0])
    ref = build(False)(model, inside)  # the same as attacking the clipped inputs
    assert torch.equal(res.p_at_k, ref.p_at_k) and torch.equal(res.x_adv, ref.x_adv)
    assert bool(((res.x_adv >= box[0]) & (res.x_adv <= box[1])).all())
