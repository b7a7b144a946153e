"""Small tables: r2et's defaults for a user's CSV reach a logistic regression's accuracy."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.linear_model import LogisticRegression

from r2et import build_model, fit, load_dataset
from r2et.data.tabular import SMALL_TABLE_ROWS, small_table_defaults


def _accuracies(path: str, target: str, seed: int) -> tuple[float, float, int]:
    """(logistic regression, r2et defaults) test accuracy on one seeded split of a CSV."""
    ds = load_dataset("csv", path=path, target=target, seed=seed)
    xtr, ytr, _ = ds.split("train")
    xte, yte, _ = ds.split("test")
    logreg = LogisticRegression(max_iter=5000).fit(xtr.numpy(), ytr.numpy())
    lr_acc = float(logreg.score(xte.numpy(), yte.numpy()))
    torch.manual_seed(seed)
    spec = dict(ds.default_model)
    model = build_model(spec.pop("name"), list(ds.input_shape), ds.n_classes, **spec)
    res = fit(model, "vanilla", ds, seed=seed, progress=False)  # epochs, batch size: defaults
    with torch.no_grad():
        acc = float((res.model(xte).argmax(1) == yte).float().mean())
    return lr_acc, acc, len(yte)


@pytest.mark.slow
@pytest.mark.parametrize("loader", [load_breast_cancer, load_wine], ids=["breast-cancer", "wine"])
def test_small_csv_defaults_match_logistic_regression(tmp_path, loader):
    torch.set_num_threads(1)
    path = tmp_path / "table.csv"
    loader(as_frame=True).frame.to_csv(path, index=False)
    results = [_accuracies(str(path), "target", seed) for seed in (0, 1)]
    lr_mean = sum(r[0] for r in results) / len(results)
    mlp_mean = sum(r[1] for r in results) / len(results)
    one_row = 1.0 / results[0][2]
    # at least the logistic regression's mean test accuracy, up to one test row of the split
    assert mlp_mean >= lr_mean - one_row, (mlp_mean, lr_mean)


def test_small_table_defaults_follow_the_step_rule():
    model, fit_kw = small_table_defaults(1000)
    assert model == {"name": "mlp", "hidden": [16]}
    assert fit_kw == {"epochs": 50, "batch_size": 32}  # max(50, ceil(1000 / ceil(1000 / 32)))
    assert small_table_defaults(100)[1]["epochs"] == 200  # capped
    assert small_table_defaults(SMALL_TABLE_ROWS - 1)[1]["epochs"] == 50  # floored
    big_model, big_fit = small_table_defaults(SMALL_TABLE_ROWS)
    assert big_model["hidden"] == [64, 64] and big_fit == {"epochs": 10, "batch_size": 128}


def test_fit_takes_the_dataset_defaults_unless_given(tmp_path):
    path = tmp_path / "bc.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    ds = load_dataset("csv", path=str(path), target="target")
    assert ds.default_fit["batch_size"] == 32
    model = build_model("mlp", list(ds.input_shape), 2, hidden=[4])
    res = fit(model, "vanilla", ds, epochs=1, progress=False, max_batches_per_epoch=2)
    assert res.config["epochs"] == 1 and res.config["batch_size"] == 32
    assert res.config["weight_decay"] == 0.0 and res.config["keep"] == "best"
    ds.default_fit = {**ds.default_fit, "weight_decay": 0.03, "keep": "last"}  # a suggestion
    res = fit(model, "vanilla", ds, epochs=1, progress=False, max_batches_per_epoch=2)
    assert res.config["weight_decay"] == 0.03 and res.config["keep"] == "last"
    res = fit(model, "vanilla", ds, epochs=1, progress=False, max_batches_per_epoch=2,
              keep="best", weight_decay=0.0)  # fmt: skip
    assert res.config["weight_decay"] == 0.0 and res.config["keep"] == "best"


def test_weight_decay_reaches_the_optimiser_and_the_methods_own_wins(tmp_path):
    from r2et.methods import get_method
    from r2et.train import build_optimizer

    model = build_model("mlp", [5], 2, hidden=[4])
    vanilla = get_method("vanilla", k=2)

    def decay(method, **kw):
        return build_optimizer(model, method, **kw).param_groups[0]["weight_decay"]

    assert decay(vanilla, weight_decay=0.03) == 0.03
    assert decay(vanilla) == 0.0
    assert decay(vanilla, optimizer="sgd", weight_decay=0.03) == 0.03
    assert decay(get_method("wd", k=2, weight_decay=0.2), weight_decay=0.03) == 0.2
    with pytest.raises(ValueError, match="weight_decay"):
        build_optimizer(model, vanilla, weight_decay=-1.0)


def test_weight_decay_shrinks_the_weights_and_last_keeps_the_last_epoch(tmp_path):
    """``keep="last"`` keeps the last epoch's weights (not the best validation epoch's), and
    ``weight_decay`` shrinks the weights against the same run without it."""
    path = tmp_path / "bc.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    ds = load_dataset("csv", path=str(path), target="target")
    norms, kept = {}, {}
    for wd in (0.0, 0.5):
        torch.manual_seed(0)
        model = build_model("mlp", list(ds.input_shape), 2, hidden=[4])
        res = fit(model, "vanilla", ds, epochs=3, progress=False, weight_decay=wd, keep="last")
        norms[wd] = float(sum(p.detach().pow(2).sum() for p in res.model.parameters()))
        kept[wd] = res.best_epoch
    assert kept == {0.0: 3, 0.5: 3}
    assert norms[0.5] < norms[0.0]
