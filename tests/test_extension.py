"""Every registry can be extended from outside r2et (issue 24): a plugin module registers a
new dataset, model, explainer, training term (in a method) and attack, and each reaches
``evaluate``, the CLI and the bench without any edit of r2et's code. The plugin is a plain
module on ``PYTHONPATH``, named by ``R2ET_PLUGINS`` (:mod:`r2et.plugins`); each entry also passes
its registry's contract test (``base.py`` of its package) against an independent computation."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

PLUGIN = "r2et_ext_plugin"

PLUGIN_SOURCE = '''
"""Entries registered from outside r2et (tests/test_extension.py)."""
from typing import Any, ClassVar

import torch
from torch import nn

from r2et.attacks import RandomNoiseAttack, register_attack
from r2et.data import from_tensors
from r2et.data.registry import register_dataset
from r2et.explain import AttributionRule, register_explainer
from r2et.methods import MethodRow, Term, register_method
from r2et.models import register_model

CALLS: list = []


def load_blobs(root=None, download=True, seed=0, n=240, **kw):
    """Two Gaussian blobs in 6 dimensions; the label depends on features 0 and 1 only."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 6, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    cut = n * 3 // 4
    ds = from_tensors((x[:cut], y[:cut]), test=(x[cut:], y[cut:]), name="ext-blobs",
                      default_k=2, seed=seed, bounds=(-6.0, 6.0))
    ds.default_model = {"name": "ext-tiny", "hidden": 8}
    return ds


def build_tiny(input_shape, n_classes, hidden=8):
    """Flatten, Linear, Softplus, Linear."""
    d = 1
    for s in input_shape:
        d *= int(s)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.Softplus(beta=5.0),
                         nn.Linear(hidden, n_classes))


class GradSquared(AttributionRule):
    """a(x) = g(x) |g(x)|: the gradient weighted by its own magnitude (importance g^2)."""

    name = "ext_grad_sq"
    local = True

    def from_gradient(self, x, g):
        return g * g.abs()


class ScoreMean(Term):
    """R = mean of the scores (weight ext_w): pushes all saliency down."""

    name: ClassVar[str] = "score_mean"
    weight_key: ClassVar[str] = "ext_w"
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self):
        return {"ext_w": 0.05}

    def value(self, step):
        return step.scores.mean()


class HalfBudgetNoise:
    """Random noise at half the budget, a new attack that wraps a built-in one."""

    preset = None  # the Attack protocol's members: explainer, k, eps, norm, steps, bounds

    def __init__(self, explainer, k, eps, norm="linf", bounds=None, seed=None, steps=8):
        self.explainer, self.k, self.eps, self.norm = explainer, k, eps, norm
        self.steps, self.bounds = steps, bounds
        self.inner = RandomNoiseAttack(explainer, k, eps / 2, steps=steps, norm=norm,
                                       bounds=bounds, seed=seed)

    def __call__(self, model, x, y=None, **forward_kwargs):
        CALLS.append(int(x.shape[0]))
        return self.inner(model, x, y, **forward_kwargs)


register_dataset("ext-blobs", load_blobs)
register_model("ext-tiny", build_tiny)
register_explainer(GradSquared)
register_method("ext-score", MethodRow(summary="CE + ext_w * mean score", terms=(ScoreMean(),),
                                       weight_name="ext_w"))
register_attack("ext-half-noise", HalfBudgetNoise)
'''


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / f"{PLUGIN}.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    return folder


@pytest.fixture
def plugin(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The plugin loaded in this process through r2et.plugins; its entries removed after."""
    from r2et import plugins
    from r2et.attacks import ATTACKS
    from r2et.data.registry import DATASETS
    from r2et.explain import EXPLAINERS
    from r2et.methods import unregister_method
    from r2et.models import MODELS

    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setenv("R2ET_PLUGINS", PLUGIN)
    monkeypatch.setattr(plugins, "_LOADED", [])
    assert plugins.load_plugins() == [PLUGIN]
    assert plugins.load_plugins() == []  # once per process
    yield sys.modules[PLUGIN]
    ATTACKS.unregister("ext-half-noise")
    DATASETS.unregister("ext-blobs")
    EXPLAINERS.unregister("ext_grad_sq")
    MODELS.unregister("ext-tiny")
    unregister_method("ext-score")
    sys.modules.pop(PLUGIN, None)


def test_plugins_listed_by_env_and_bad_ones_are_one_line(monkeypatch, plugin_dir) -> None:
    from r2et import plugins

    monkeypatch.setattr(plugins, "_LOADED", [])
    monkeypatch.setenv("R2ET_PLUGINS", " ,not a module")
    with pytest.raises(ValueError, match="is not a module name"):
        plugins.load_plugins()
    monkeypatch.setenv("R2ET_PLUGINS", "r2et_no_such_plugin_x")
    with pytest.raises(ValueError, match="r2et_no_such_plugin_x.*failed to import"):
        plugins.load_plugins()


def test_entries_pass_their_contracts(plugin) -> None:
    """Each entry against an independent computation, in process."""
    from r2et import Explainer, build_model, get_method, list_attacks, load_dataset
    from r2et.attacks import create_attack
    from r2et.evaluation import evaluate
    from r2et.metrics import topk_mask

    ds = load_dataset("ext-blobs")
    again = load_dataset("ext-blobs")
    assert torch.equal(ds.train[0], again.train[0]) and torch.equal(ds.test[1], again.test[1])
    torch.manual_seed(0)
    model = build_model(**ds.default_model, input_shape=ds.input_shape, n_classes=2)
    assert model.r2et_spec["name"] == "ext-tiny"
    rebuilt = build_model(**model.r2et_spec)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]

    # explainer: g * |g| against torch.func's gradient of the predicted logit
    x = ds.test[0][:16]
    ex = Explainer("ext_grad_sq")
    attr = ex.attribute(model, x)
    pred = model(x).argmax(1)

    def input_grad(c: torch.Tensor) -> torch.Tensor:
        """d logit_c / dx by plain autograd (rows are independent)."""
        xr = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(xr).gather(1, c[:, None]).sum(), xr)[0]

    g = input_grad(pred)
    torch.testing.assert_close(attr, g * g.abs())

    # term: the method's loss is CE + ext_w * mean(scores), scores = |g| of the predicted logit
    method = get_method("ext-score", k=2, ext_w=0.5, explainer=Explainer("grad"))
    y = ds.test[1][:16]
    loss, logs = method.loss(model, x, y)
    ce = torch.nn.functional.cross_entropy(model(x), y)
    torch.testing.assert_close(loss, ce + 0.5 * g.abs().mean(), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    # attack: within eps/2 and the box, P@k recomputed from its own points
    assert "ext-half-noise" in list_attacks()
    atk = create_attack("ext-half-noise", ex, 2, 0.4, bounds=(-6.0, 6.0), seed=0)
    res = atk(model, x)
    assert (res.x_adv - x).abs().max() <= 0.2 + 1e-6
    s0, s1 = ex.scores(model, x), ex.scores(model, res.x_adv)
    torch.testing.assert_close(
        res.p_at_k,
        ((topk_mask(s0, 2) & topk_mask(s1, 2)).sum(1) / 2).to(res.p_at_k.dtype),
    )

    # evaluate runs the registered attack through the Attack protocol
    calls = len(plugin.CALLS)
    out = evaluate(model, ds, ex, k=2, attacks={"half": atk}, n=24, progress=False)
    assert len(plugin.CALLS) > calls
    assert 0.0 <= out["attacks"]["half"]["p_at_k_mean"] <= 1.0


def run_cli(args: list[str], plugin_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "R2ET_PLUGINS": PLUGIN,
        "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "r2et.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_cli_and_bench_reach_the_entries(plugin_dir: Path, tmp_path: Path) -> None:
    """The CLI trains with the new dataset, model, explainer and method, evaluates with the new
    attack, and a bench grid runs all of them, in fresh processes that only name the plugin."""
    common = ["--no-progress"]
    train = run_cli(
        ["train", "ext-blobs", "--method", "ext-score", "--param", "explainer=ext_grad_sq",
         "--epochs", "2", "--out", "run", *common],
        plugin_dir, tmp_path,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["name"] == "ext-tiny"
    assert config["method"]["name"] == "ext-score"
    assert config["method"]["explainer"]["method"] == "ext_grad_sq"

    evaluate = run_cli(
        ["evaluate", "run", "--attack", "ext-half-noise", "--explainer", "ext_grad_sq",
         "--n", "20", *common],
        plugin_dir, tmp_path,
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr
    result = json.loads((tmp_path / "run" / "evaluation_test.json").read_text())
    assert 0.0 <= result["attacks"]["ext-half-noise"]["p_at_k_mean"] <= 1.0

    (tmp_path / "bench.toml").write_text(
        textwrap.dedent(
            """
            datasets = ["ext-blobs"]
            methods = ["vanilla", "ext-score"]
            seeds = [0]
            save_models = false
            [grid]
            ext-score = [0.05]
            [pretrain]
            epochs = 2
            [finetune]
            epochs = 1
            [evaluate]
            n = 16
            preset = "fast"
            budgets = []
            explainer = "ext_grad_sq"
            attacks = ["ensemble", "ext-half-noise"]
            """
        )
    )
    bench = run_cli(
        ["bench", "bench.toml", "--out", "b", "--executor", "process",
         "--workers", "1", *common],
        plugin_dir, tmp_path,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    rows = [json.loads(p.read_text()) for p in sorted((tmp_path / "b").rglob("cells/*.json"))]
    assert {r.get("method") for r in rows} >= {"vanilla", "ext-score"}
    assert all(any("ext-half-noise" in key for key in r) for r in rows), rows[0].keys()


def test_without_the_plugin_the_names_are_unknown(tmp_path: Path, plugin_dir: Path) -> None:
    """The entries come from the plugin alone (nothing in r2et knows them)."""
    importlib.invalidate_caches()
    env = {**os.environ, "R2ET_PLUGINS": ""}
    out = subprocess.run(
        [sys.executable, "-m", "r2et.cli", "train", "ext-blobs", "--out", "r", "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2
    assert "ext-blobs" in out.stderr and "Traceback" not in out.stderr
