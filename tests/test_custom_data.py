"""Your own data in ``fit`` and ``evaluate``: ``(x, y)`` pairs, ``TensorDataset``s and
``DataLoader``s, checked against the same data given as an r2et Dataset."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from r2et import Dataset, ERAttack, Explainer, build_model, evaluate, fit, from_tensors
from r2et.data import as_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 120, f: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, y


def test_from_tensors_defaults_and_val_carving():
    x, y = _data()
    ds = from_tensors((x, y), test=(x[:10], y[:10]), seed=3)
    assert isinstance(ds, Dataset) and ds.modality == "tabular" and ds.n_classes == 2
    assert ds.feature_names == [f"x{i}" for i in range(6)] and ds.default_k == 5
    assert len(ds.train[0]) + len(ds.val[0]) == 120 and len(ds.val[0]) == 12
    # the carved split is a partition of the given rows, stratified by class
    rows = torch.cat([ds.train[0], ds.val[0]])
    assert torch.equal(rows[rows[:, 0].argsort()], x[x[:, 0].argsort()])
    assert abs(ds.val[1].float().mean() - y.float().mean()) < 0.1
    assert ds.bounds is None and ds.default_model == {"name": "mlp", "hidden": [16]}
    assert ds.default_fit == {"epochs": 200, "batch_size": 32}  # small table: 200 epochs cap
    img = from_tensors((torch.rand(40, 3, 16, 16), torch.arange(40) % 4))
    assert img.modality == "image" and img.n_features == 256 and img.n_classes == 4
    assert img.default_k == 12 and img.default_model == {"name": "cnn"}


@pytest.mark.parametrize(
    "bad, err, match",
    [
        ("not data", TypeError, "pair, a TensorDataset or a DataLoader"),
        ((torch.randn(5, 3), torch.zeros(4)), ValueError, r"x must be \(N, ...\)"),
        ((torch.randn(5, 3), torch.full((5,), 0.5)), ValueError, "integer class labels"),
        ((torch.randn(5, 3), -torch.ones(5)), ValueError, ">= 0"),
        ((torch.full((5, 3), float("nan")), torch.zeros(5)), ValueError, "NaN"),
        ((torch.randn(5, 1), torch.zeros(5).long()), ValueError, "at least 2 ranked features"),
    ],
)
def test_bad_user_data_is_one_clear_error(bad, err, match):
    with pytest.raises(err, match=match):
        from_tensors(bad)


def test_fit_and_evaluate_accept_pairs_tensordatasets_and_dataloaders():
    x, y = _data()
    reference = from_tensors((x, y), seed=0)
    results = []
    for data in (
        (x, y),
        TensorDataset(x, y),
        DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False),
        reference,
    ):
        torch.manual_seed(0)
        model = build_model("mlp", (6,), 2, hidden=[16])
        res = fit(model, "vanilla", data, epochs=3, batch_size=16, seed=0, progress=False)
        results.append((res.best_val_accuracy, [p.detach().clone() for p in model.parameters()]))
    for acc, params in results[1:]:
        assert acc == results[0][0]
        for a, b in zip(params, results[0][1]):
            torch.testing.assert_close(a, b)
    # evaluate on a pair: the pair is the evaluated split
    ex = Explainer("grad")
    xt, yt = _data(40, seed=1)
    atk = ERAttack(ex, 3, 0.1, steps=5)
    m = evaluate(model, (xt, yt), ex, k=3, attacks={"er": atk}, faithfulness=False)
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert m["accuracy"] == pytest.approx(acc) and m["n"] == 40
    same = evaluate(model, as_dataset((xt, yt), "evaluate"), ex, k=3, attacks={"er": atk},
                    faithfulness=False)  # fmt: skip
    assert same["attacks"]["er"]["p_at_k_mean"] == pytest.approx(m["attacks"]["er"]["p_at_k_mean"])
