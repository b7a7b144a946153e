"""evaluate(): keys, agreement with direct metric calls, chunking, modes and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import make_mlp, requires_data
from torch import nn

from r2et import Explainer, thickness
from r2et.attacks import ERAttack, MSEAttack, RandomNoiseAttack
from r2et.data.base import Dataset
from r2et.evaluation import evaluate

ATTACK_KEYS = [
    "eps", "steps", "norm", "box", "p_at_k_mean", "p_at_k_std", "kendall_mean", "spearman_mean",
    "cosine_mean", "flipped_rate", "thickness_adv_mean", "seconds",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def _dataset(n_test: int = 40, f: int = 10, n_classes: int = 3) -> Dataset:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, f, generator=g, dtype=torch.float64).clamp(-3, 3)
        return x, torch.randint(0, n_classes, (n,), generator=g)

    return Dataset(
        name="synthetic",
        modality="tabular",
        train=split(20),
        val=split(10),
        test=split(n_test),
        n_classes=n_classes,
        feature_names=[f"f{i}" for i in range(f)],
        default_k=3,
        bounds=(torch.full((f,), -3.0), torch.full((f,), 3.0)),
    )


def _attacks(ex: Explainer, ds: Dataset) -> dict[str, object]:
    return {
        "er": ERAttack(ex, 3, 0.3, steps=8, bounds=ds.bounds),
        "mse": MSEAttack(ex, 3, 0.3, steps=8, bounds=ds.bounds, seed=0),
    }


def test_keys_values_and_json():
    ds, model, ex = _dataset(), make_mlp(), Explainer("grad")
    out = evaluate(model, ds, ex, attacks=_attacks(ex, ds), thickness_radius=0.2)
    assert list(out) == [
        "n", "k", "split", "accuracy", "n_split", "majority_rate", "accuracy_evaluated",
        "thickness", "faithfulness", "random_p_at_k", "locality", "verdict", "attacks", "seconds",
    ]  # fmt: skip
    assert (out["n"], out["k"], out["split"], out["n_split"]) == (40, 3, "test", 40)
    y = ds.test[1].tolist()
    assert out["majority_rate"] == max(y.count(c) for c in set(y)) / len(y)  # by hand
    assert out["random_p_at_k"] == 3 / ds.n_features
    assert out["accuracy"] == out["accuracy_evaluated"]  # n=None: the whole split
    assert {"deletion_gain", "occlusion_agreement"} <= set(out["faithfulness"])
    assert {"distinct_topk_sets", "global_topk_p_at_k"} <= set(out["locality"])
    assert list(out["thickness"]) == ["radius", "mean", "std"]
    assert list(out["attacks"]) == ["er", "mse"]
    for entry in out["attacks"].values():
        assert list(entry) == ATTACK_KEYS
        assert (entry["eps"], entry["steps"], entry["norm"], entry["box"]) == (0.3, 8, "linf", True)
        assert 0 <= entry["p_at_k_mean"] < 0.6  # the attacks work (measured 0.26, 0.39)
        assert entry["flipped_rate"] == 0.0 and entry["seconds"] > 0
    assert out["seconds"] >= sum(e["seconds"] for e in out["attacks"].values())
    # the attack path is thinner than random directions (measured 0.0131 vs 0.0218)
    assert out["attacks"]["er"]["thickness_adv_mean"] < out["thickness"]["mean"]
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out


def test_agrees_with_direct_calls_and_chunking():
    ds, model, ex = _dataset(), make_mlp(), Explainer("grad")
    x, y, _ = ds.split("test")
    atk = ERAttack(ex, 3, 0.3, steps=8, bounds=ds.bounds)
    res = atk(model, x)
    out = evaluate(model, ds, ex, attacks={"er": atk}, batch_size=7, thickness_radius=0.2)
    whole = evaluate(model, ds, ex, attacks={"er": atk}, batch_size=1000, thickness_radius=0.2)
    acc = float((model(x).argmax(1) == y).double().mean())
    assert out["accuracy"] == pytest.approx(acc)
    m = res.metrics()
    for key, val in m.items():
        assert out["attacks"]["er"][key] == pytest.approx(val, abs=1e-12), key
        assert whole["attacks"]["er"][key] == pytest.approx(val, abs=1e-12), key
    th_adv = thickness(model, x, ex, 3, radius=0.2, n_steps=8, x_prime=res.x_adv)
    assert whole["attacks"]["er"]["thickness_adv_mean"] == pytest.approx(float(th_adv.mean()))
    assert out["attacks"]["er"]["thickness_adv_mean"] == pytest.approx(float(th_adv.mean()))
    th = thickness(model, x, ex, 3, radius=0.2, n_samples=8, n_steps=8, seed=0)
    assert whole["thickness"]["mean"] == pytest.approx(float(th.mean()))
    assert whole["thickness"]["std"] == pytest.approx(float(th.std(correction=0)))


def test_without_thickness_and_attacks_and_with_n():
    ds, model, ex = _dataset(), make_mlp(), Explainer("grad")
    out = evaluate(model, ds, ex, n=12, split="val", k=2, faithfulness=False)
    assert list(out) == [
        "n", "k", "split", "accuracy", "n_split", "majority_rate", "accuracy_evaluated",
        "random_p_at_k", "locality", "verdict", "attacks", "seconds",
    ]  # fmt: skip
    assert (out["n"], out["k"], out["split"], out["attacks"]) == (10, 2, "val", {})
    out = evaluate(model, ds, ex, n=5, attacks={"er": ERAttack(ex, 3, 0.3, steps=2)})
    assert out["n"] == 5
    assert "thickness_adv_mean" not in out["attacks"]["er"]


def test_model_mode_restored_and_eval_used():
    ds, ex = _dataset(), Explainer("grad")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))
    model = model.double().train()
    a = evaluate(model, ds, ex, attacks=_attacks(ex, ds), thickness_radius=0.2)
    b = evaluate(model, ds, ex, attacks=_attacks(ex, ds), thickness_radius=0.2)
    assert model.training
    for key in ("accuracy", "thickness"):
        assert a[key] == b[key]  # dropout was off: identical
    for name in ("er", "mse"):
        assert a["attacks"][name]["p_at_k_mean"] == b["attacks"][name]["p_at_k_mean"]


def test_loss_output_explains_the_labels():
    ds, model = _dataset(), make_mlp()
    ex = Explainer("grad", output="loss")
    seen: list[object] = []

    class Spy:
        k, eps, steps, norm = 3, 0.3, 4, "linf"
        explainer, bounds, preset = ex, None, None  # the rest of r2et.attacks.Attack

        def __call__(self, model, x, y=None, **kw):
            seen.append(y)
            return ERAttack(ex, 3, 0.3, steps=4)(model, x, y, **kw)

    evaluate(model, ds, ex, attacks={"spy": Spy()}, batch_size=16)
    _, y, _ = ds.split("test")
    assert len(seen) == 3 and torch.equal(torch.cat(seen), y)
    seen.clear()
    evaluate(model, ds, Explainer("grad"), attacks={"spy": Spy()})
    assert seen == [None]


def test_nan_correlations_are_ignored_or_none():
    """A constant adversarial ranking gives NaN rank correlations: nanmean skips them and an
    all-NaN mean is reported as None (JSON null)."""

    class Flat:
        k, eps, steps, norm = 3, 0.1, 1, "linf"
        explainer, bounds, preset = Explainer("grad"), None, None  # r2et.attacks.Attack

        def __call__(self, model, x, y=None, **kw):
            res = ERAttack(Explainer("grad"), 3, 0.1, steps=1)(model, x)
            res.scores_adv = torch.ones_like(res.scores_adv)
            return res

    ds, model, ex = _dataset(), make_mlp(), Explainer("grad")
    out = evaluate(model, ds, ex, attacks={"flat": Flat()})
    entry = out["attacks"]["flat"]
    assert entry["kendall_mean"] is None and entry["spearman_mean"] is None
    assert math.isfinite(entry["cosine_mean"])
    json.dumps(out, allow_nan=False)


def test_bad_input():
    ds, model, ex = _dataset(), make_mlp(), Explainer("grad")
    with pytest.raises(ValueError, match="split"):
        evaluate(model, ds, ex, split="dev")
    with pytest.raises(ValueError, match="k=10 is outside"):
        evaluate(model, ds, ex, k=10)
    with pytest.raises(ValueError, match="k"):
        evaluate(model, ds, ex, k=0)
    with pytest.raises(ValueError, match="built with k=3"):
        evaluate(model, ds, ex, k=4, attacks=_attacks(ex, ds))
    with pytest.raises(ValueError, match="attacks"):
        evaluate(model, ds, ex, attacks=[ERAttack(ex, 3, 0.1)])
    with pytest.raises(ValueError, match="thickness_radius"):
        evaluate(model, ds, ex, thickness_radius=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, ds, ex, batch_size=0)
    with pytest.raises(ValueError, match="n must be"):
        evaluate(model, ds, ex, n=0)
    with pytest.raises(TypeError, match="ds must be an r2et Dataset, an"):
        evaluate(model, "adult", ex)


@requires_data
def test_adult_smoke():
    """Real data end to end: a briefly trained MLP on 128 Adult test rows, three attacks."""
    from r2et import build_model
    from r2et.data import load_dataset

    ds = load_dataset("adult")
    x, y, _ = ds.split("train")
    torch.manual_seed(0)
    model = build_model("mlp", list(ds.input_shape), ds.n_classes)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for idx in torch.randperm(len(x)).split(128):
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    ex = Explainer("grad")
    kw = {"steps": 20, "bounds": ds.bounds, "seed": 0}
    attacks = {
        "er": ERAttack(ex, 8, 0.2, **kw),
        "mse": MSEAttack(ex, 8, 0.2, **kw),
        "random": RandomNoiseAttack(ex, 8, 0.2, **kw),
    }
    out = evaluate(model, ds, ex, k=8, attacks=attacks, n=128, thickness_radius=0.2, batch_size=64)
    assert out["n"] == 128 and out["k"] == 8 and out["accuracy"] > 0.75
    ps = {name: e["p_at_k_mean"] for name, e in out["attacks"].items()}
    assert ps["er"] < ps["random"]
    assert all(e["flipped_rate"] == 0.0 for e in out["attacks"].values())
    json.dumps(out, allow_nan=False)
