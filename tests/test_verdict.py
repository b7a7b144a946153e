"""The collapse and faithfulness verdict (issue 28): ``r2et.verdict``, the new locality keys,
the verdict in ``evaluate``'s output and the line ``r2et evaluate`` prints."""

from __future__ import annotations

import json
import math
from typing import ClassVar

import pytest
import torch
from conftest import requires_data
from torch import nn

import r2et
from r2et.cli import main
from r2et.evaluation import evaluate
from r2et.explain import EXPLAINERS, AttributionRule, Explainer, register_explainer
from r2et.metrics import deletion, locality
from r2et.verdict import (
    CI_LEVEL,
    COLLAPSE_DISTINCT_PER_100,
    COLLAPSE_TOP_SHARE,
    explanation_verdict,
    mean_ci,
)

pytestmark = pytest.mark.usefixtures("one_thread")

N_FEATURES = 30  # breast-cancer
CONSTANT_TOP = [0, 1, 2, 3, 4, 5, 6, 7]  # the constant explainer's top-8 (breast-cancer's k)


# ------------------------------------------------------------------ mean_ci
@pytest.mark.parametrize("n", [2, 5, 40])
@pytest.mark.parametrize("level", [0.9, CI_LEVEL, 0.99])
def test_mean_ci_against_scipy(n: int, level: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    vals = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    lo, hi = mean_ci(vals.tolist(), level)
    mean, sem = float(vals.mean()), float(vals.std(correction=1)) / math.sqrt(n)
    ref = stats.norm.interval(level, loc=mean, scale=sem)
    assert lo == pytest.approx(ref[0], rel=1e-12, abs=1e-12)
    assert hi == pytest.approx(ref[1], rel=1e-12, abs=1e-12)


def test_mean_ci_by_hand() -> None:
    # mean 2.5, sample sd sqrt(5/3), n 4: 2.5 ± 1.959964 · 0.645497
    lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 1.959963984540054 * math.sqrt(5 / 3) / 2
    assert (lo, hi) == pytest.approx((2.5 - half, 2.5 + half), rel=1e-12)
    assert mean_ci([0.25]) == (0.25, 0.25)
    assert mean_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    z = 1.959963984540054  # sd of (1, 3) is sqrt(2), the standard error 1
    assert mean_ci(v for v in [1, 3]) == pytest.approx((2 - z, 2 + z), rel=1e-12)
    for bad in (0, 1, 1.5, -0.1, True, "0.95"):
        with pytest.raises(ValueError, match="level"):
            mean_ci([1.0, 2.0], bad)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    assert all(math.isnan(v) for v in mean_ci([1.0, float("nan")]))


# ------------------------------------------------------------------ explanation_verdict
def test_verdict_thresholds_and_text() -> None:
    v = explanation_verdict(0.97, 2.0, (-0.002, 0.010))
    assert (v["collapsed"], v["faithful"], v["flags"]) == (True, False, ["collapsed", "unfaithful"])
    assert v["text"] == (
        "collapsed: 97% of inputs share one top-k set (2 distinct sets per 100 inputs); "
        "unfaithful: deletion gain 0.004 [-0.002, 0.010] is not distinguishable from 0"
    )
    v = explanation_verdict(0.12, 64.0, [0.041, 0.061])
    assert (v["collapsed"], v["faithful"], v["flags"]) == (False, True, [])
    assert v["text"] == (
        "local: 12% of inputs share the most common top-k set (64 distinct sets per 100 "
        "inputs); faithful: deletion gain 0.051 [0.041, 0.061] > 0"
    )
    # each threshold alone collapses; the boundaries: top_share >= 0.5, distinct < 5
    assert explanation_verdict(COLLAPSE_TOP_SHARE, 50.0, None)["collapsed"] is True
    assert explanation_verdict(0.49, 50.0, None)["collapsed"] is False
    assert explanation_verdict(0.1, COLLAPSE_DISTINCT_PER_100, None)["collapsed"] is False
    assert explanation_verdict(0.1, 4.99, None)["collapsed"] is True
    assert explanation_verdict(None, 4.0, None)["collapsed"] is True
    assert explanation_verdict(0.2, None, None)["collapsed"] is False
    # faithful only when the interval's lower end is above 0
    assert explanation_verdict(None, None, (0.0, 0.1))["faithful"] is False
    assert explanation_verdict(None, None, (1e-6, 0.1))["faithful"] is True
    below = explanation_verdict(0.1, 50.0, (-0.3, -0.1))
    assert below["flags"] == ["unfaithful"] and "random units matter more" in below["text"]
    none = explanation_verdict(None, None, None)
    assert none == {
        "collapsed": None,
        "faithful": None,
        "flags": [],
        "text": "locality not computed; faithfulness not computed",
    }
    with pytest.raises(ValueError, match="gain_ci"):
        explanation_verdict(0.1, 50.0, (0.1,))
    with pytest.raises(ValueError, match="top_share"):
        explanation_verdict("0.1", 50.0, None)


# ------------------------------------------------------------------ locality's new keys
def _brute_force(scores: torch.Tensor, k: int) -> tuple[float, float]:
    sets = [frozenset(row.topk(k).indices.tolist()) for row in scores]
    common = max(sets.count(s) for s in set(sets))
    return common / len(sets), 100 * len(set(sets)) / len(sets)


def _hand_built() -> list[tuple[torch.Tensor, int]]:
    base = torch.arange(6, dtype=torch.float64)
    same = base.repeat(5, 1)  # one set for all
    perm = torch.stack([base[[1, 0, 2, 3, 5, 4]], base, base.flip(0), base.flip(0), base])
    tie = torch.tensor([[3.0, 2, 1, 0], [2.0, 3, 0, 1], [0.0, 1, 2, 3], [1.0, 0, 3, 2]])
    own = torch.eye(7, dtype=torch.float64)  # every row its own set
    return [(same, 2), (perm, 2), (perm, 3), (tie, 2), (own, 1), (own[:1], 3)]


def _random_cases() -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    cases = []
    for n, f, k, levels in [(50, 6, 2, 0), (200, 5, 2, 0), (64, 10, 3, 3), (30, 4, 1, 2)]:
        s = torch.rand(n, f, generator=g, dtype=torch.float64)
        if levels:  # few distinct values per row: many repeated top-k sets
            s = (s * levels).floor() + torch.arange(f, dtype=torch.float64) * 1e-3
        cases.append((s, k))
    return cases


@pytest.mark.parametrize("scores, k", _hand_built() + _random_cases())
def test_locality_top_share_and_distinct_against_brute_force(scores, k) -> None:
    out = locality(scores, k)
    share, per_100 = _brute_force(scores, k)
    assert isinstance(out["top_share"], float) and isinstance(out["distinct_per_100"], float)
    assert out["top_share"] == pytest.approx(share, rel=1e-12)
    assert out["distinct_per_100"] == pytest.approx(per_100, rel=1e-12)
    assert out["distinct_per_100"] == pytest.approx(100 * out["distinct_topk_sets"] / len(scores))


def test_locality_hand_built_values() -> None:
    base = torch.arange(6, dtype=torch.float64)
    const = locality(base.repeat(5, 1), 2)
    assert (const["top_share"], const["distinct_per_100"], const["distinct_topk_sets"]) == (
        1.0, 20.0, 1,
    )  # fmt: skip
    own = locality(torch.eye(8, dtype=torch.float64), 1)
    assert (own["top_share"], own["distinct_per_100"]) == (1 / 8, 100.0)
    # two sets equally common (2 rows each) and one single: the share is 2/5 either way
    rows = torch.stack([base, base, base.flip(0), base.flip(0), base[[5, 0, 1, 2, 3, 4]]])
    two = locality(rows, 2)
    assert (two["top_share"], two["distinct_per_100"]) == (0.4, 60.0)


# ------------------------------------------------------------------ hand-built explainers
class ConstantRule(AttributionRule):
    """The same attribution for every input: features 0..7 ranked first, whatever x is."""

    name: ClassVar[str] = "test_verdict_constant"
    local: ClassVar[bool] = False

    def attribute(self, grad, x, create_graph):  # the gradient is not used
        w = torch.arange(x.shape[1], 0, -1, dtype=x.dtype, device=x.device)
        return w.expand_as(x) + 0 * x  # 0 * x: attacks may differentiate through it


class PerInputRandomRule(AttributionRule):
    """A random attribution per input: ``sin(1000 · x R)`` for a fixed seeded R, so each
    input gets its own (pseudo-random, reproducible) ranking."""

    name: ClassVar[str] = "test_verdict_random"
    local: ClassVar[bool] = False

    def attribute(self, grad, x, create_graph):
        d = x[0].numel()
        r = torch.randn(d, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        return torch.sin(1000 * x.flatten(1) @ r.to(x)).view_as(x)


@pytest.fixture
def rules():
    """The two rules registered for the test, unregistered after."""
    register_explainer(ConstantRule)
    register_explainer(PerInputRandomRule)
    yield
    EXPLAINERS.unregister(ConstantRule.name)
    EXPLAINERS.unregister(PerInputRandomRule.name)


@pytest.fixture(scope="module")
def breast_cancer():
    ds = r2et.load_dataset("breast-cancer")
    torch.manual_seed(0)
    model = r2et.build_model("mlp", [N_FEATURES], 2, hidden=[16, 16]).eval()
    return ds, model


@requires_data
def test_constant_explainer_is_flagged_collapsed(rules, breast_cancer) -> None:
    ds, model = breast_cancer
    out = evaluate(model, ds, Explainer(ConstantRule.name), n=60)
    loc, verdict = out["locality"], out["verdict"]
    assert loc["distinct_topk_sets"] == 1 and loc["top_share"] == 1.0
    assert loc["distinct_per_100"] == pytest.approx(100 / 60)
    assert verdict["collapsed"] is True and "collapsed" in verdict["flags"]
    assert verdict["text"].startswith("collapsed: 100% of inputs share one top-k set")


@requires_data
def test_per_input_random_explainer_is_not_collapsed(rules, breast_cancer) -> None:
    ds, model = breast_cancer
    out = evaluate(model, ds, Explainer(PerInputRandomRule.name), n=60)
    loc, verdict = out["locality"], out["verdict"]
    assert loc["distinct_topk_sets"] == 60 and loc["top_share"] == pytest.approx(1 / 60)
    assert loc["distinct_per_100"] == 100.0
    assert verdict["collapsed"] is False and "collapsed" not in verdict["flags"]
    assert verdict["text"].startswith("local: 2% of inputs share the most common top-k set")
    # a random ranking says nothing the model uses: its gain is not distinguishable from 0
    lo, hi = out["faithfulness"]["deletion_gain_ci"]
    assert lo < 0 < hi and verdict["faithful"] is False and verdict["flags"] == ["unfaithful"]


@requires_data
def test_deletion_gain_ci_of_the_constant_explanation(rules, breast_cancer) -> None:
    """The interval is mean_ci of the per-input gains of metrics.deletion (same seed, same
    baseline), its centre the reported mean gain, and the verdict follows its lower end."""
    ds, model = breast_cancer
    ex = Explainer(ConstantRule.name)
    out = evaluate(model, ds, ex, n=60, n_random=4, seed=3)
    f = out["faithfulness"]
    x, _, _ = ds.subset("test", 60)
    gains = deletion(model, x, ex, ds.default_k, baseline=ds.train_mean, n_random=4, seed=3)
    ref = mean_ci(gains["gain"].double().tolist())
    assert isinstance(f["deletion_gain_ci"], list) and len(f["deletion_gain_ci"]) == 2
    assert f["deletion_gain_ci"] == pytest.approx(list(ref), rel=1e-9, abs=1e-12)
    lo, hi = f["deletion_gain_ci"]
    assert lo <= f["deletion_gain"] <= hi
    assert (lo + hi) / 2 == pytest.approx(f["deletion_gain"], rel=1e-9, abs=1e-12)
    assert out["verdict"]["faithful"] is (lo > 0)
    assert out["verdict"] == explanation_verdict(1.0, 100 / 60, (lo, hi))


@requires_data
def test_constant_explanation_of_ignored_features_is_unfaithful(rules, breast_cancer) -> None:
    """A linear model that ignores features 0..7, trained on the rest: the constant top-8
    (features 0..7) changes nothing when deleted, so its gain is minus the random drop and
    the verdict is collapsed and unfaithful."""
    ds, _ = breast_cancer
    torch.manual_seed(0)
    model = nn.Linear(N_FEATURES, 2)
    keep = torch.ones(N_FEATURES)
    keep[CONSTANT_TOP] = 0
    x, y = ds.train
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x * keep), y).backward()
        opt.step()
    with torch.no_grad():
        model.weight.mul_(keep)
    out = evaluate(model.eval(), ds, Explainer(ConstantRule.name), n=80)
    f = out["faithfulness"]
    assert f["deletion_drop_topk"] == 0.0 and f["deletion_drop_random"] > 0
    assert f["deletion_gain_ci"][1] < 0
    assert out["verdict"]["flags"] == ["collapsed", "unfaithful"]
    assert "random units matter more" in out["verdict"]["text"]


@requires_data
def test_grad_explainer_keys_and_verdict(breast_cancer) -> None:
    ds, model = breast_cancer
    out = evaluate(model, ds, "grad", n=40)
    assert list(out["locality"]) == [
        "distinct_topk_sets", "global_topk_p_at_k", "top_share", "distinct_per_100",
    ]  # fmt: skip
    assert list(out["faithfulness"])[-1] == "deletion_gain_ci"
    assert set(out["verdict"]) == {"collapsed", "faithful", "flags", "text"}
    assert out["verdict"] == explanation_verdict(
        out["locality"]["top_share"],
        out["locality"]["distinct_per_100"],
        out["faithfulness"]["deletion_gain_ci"],
    )
    plain = evaluate(model, ds, "grad", n=40, faithfulness=False)
    assert plain["verdict"]["faithful"] is None
    assert plain["verdict"]["text"].endswith("faithfulness not computed")
    assert plain["locality"] == out["locality"]


# ------------------------------------------------------------------ the CLI line
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("verdict") / "run"
    argv = ["train", "breast-cancer", "--method", "vanilla", "--epochs", "2", "--out", str(run)]
    assert main([*argv, "--no-progress"]) == 0
    return run


def _evaluate_lines(run, capsys, *extra: str) -> list[str]:
    argv = ["evaluate", str(run), "--attack", "erattack", "--steps", "2", "--n", "30"]
    assert main([*argv, "--no-progress", *extra]) == 0
    return capsys.readouterr().out.splitlines()


@requires_data
def test_cli_prints_the_verdict_after_the_p_at_k_lines(trained_run, capsys, rules) -> None:
    capsys.readouterr()
    lines = _evaluate_lines(trained_run, capsys)
    at = next(i for i, line in enumerate(lines) if "verdict: " in line)
    assert "P@8" in lines[at - 1] and "erattack" in lines[at - 1]
    assert lines[at + 1].startswith("  faithfulness: deletion gain")
    assert "deletion gain" in lines[at] and "distinct sets per 100 inputs" in lines[at]
    verdict = json.loads((trained_run / "evaluation_test.json").read_text())["verdict"]
    warn = "WARNING: " if verdict["flags"] else ""
    assert lines[at] == f"  {warn}verdict: {verdict['text']}"
    const = _evaluate_lines(trained_run, capsys, "--explainer", ConstantRule.name)
    line = next(x for x in const if "verdict: " in x)
    assert line.startswith("  WARNING: verdict: collapsed: 100% of inputs share one top-k set")
