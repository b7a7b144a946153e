"""Model zoo: builders, JSON specs, ResNet-9, the dense GCN, and vanilla accuracy on real data.

The accuracy tests train each dataset's ``default_model`` briefly with a local Adam loop and
check the test accuracy goals of the issue (CPU, a few seconds each).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from conftest import requires_data
from torch import nn

from r2et.data import Dataset, load_dataset
from r2et.models import (
    GCN,
    ResNet9,
    build_model,
    has_relu,
    list_models,
    relu_to_softplus,
)


def _rebuild(model: nn.Module) -> nn.Module:
    spec = json.loads(json.dumps(model.r2et_spec))
    clone = build_model(**spec)
    clone.load_state_dict(model.state_dict())
    return clone


def _graph_batch(n: int = 4, nodes: int = 9, d: int = 5, seed: int = 0):
    """Random undirected graphs with 4..nodes real nodes, padded to ``nodes``."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(4, nodes + 1, (n,), generator=g)
    mask = (torch.arange(nodes)[None, :] < sizes[:, None]).double()
    a = (torch.rand(n, nodes, nodes, generator=g) < 0.4).double()
    a = torch.triu(a, 1)
    a = (a + a.transpose(1, 2)) * mask[:, :, None] * mask[:, None, :]
    a = a + torch.diag_embed(mask)
    deg = a.sum(-1)
    inv = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    adj = inv[:, :, None] * a * inv[:, None, :]
    x = torch.randn(n, nodes, d, generator=g, dtype=torch.float64) * mask[:, :, None]
    return x, adj, mask


def test_list_models() -> None:
    assert list_models() == ["cnn", "edge-gnn", "gcn", "gin", "mlp", "resnet9"]


@pytest.mark.parametrize(
    "name, shape, kw",
    [
        ("mlp", [7], {"hidden": [8, 8]}),
        ("cnn", [1, 28, 28], {"channels": [4, 8], "hidden": 16}),
        ("cnn", [3, 32, 32], {"channels": [4, 8], "hidden": 16}),
        ("cnn", [1, 28, 28], {"channels": [4, 8], "hidden": 16, "pool": "avg"}),
        ("resnet9", [3, 32, 32], {"width": 4, "groups": 2}),
        ("resnet9", [1, 28, 28], {"width": 4, "norm": "batch"}),
        ("gcn", [9, 5], {"hidden": [8, 8], "pool": "mean", "readout": "concat"}),
    ],
)
def test_spec_round_trip(name: str, shape: list[int], kw: dict) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, 3, **kw).double().eval()
    clone = _rebuild(model).double().eval()
    if name == "gcn":
        x, adj, mask = _graph_batch(nodes=shape[0], d=shape[1])
        fkw = {"adj": adj, "mask": mask}
    else:
        x, fkw = torch.rand(4, *shape, dtype=torch.float64), {}
    out = model(x, **fkw)
    assert out.shape == (len(x), 3)
    torch.testing.assert_close(clone(x, **fkw), out, rtol=0, atol=0)
    assert model.r2et_spec["name"] == name and model.r2et_spec["input_shape"] == shape


@pytest.mark.parametrize(
    "name, shape, kw, match",
    [
        ("resnet9", [32, 32], {}, "input_shape \\(C, H, W\\)"),
        ("gcn", [28], {}, "input_shape \\(nodes, node_features\\)"),
        ("gcn", [28, 7], {"pool": "median"}, "pool='median'.*allowed.*sum"),
        ("gcn", [28, 7], {"readout": "all"}, "readout='all'"),
        ("cnn", [1, 28, 28], {"pool": "min"}, "pool='min'.*allowed.*avg"),
        ("gcn", [28, 7], {"hidden": []}, "at least one"),
        ("resnet9", [3, 32, 32], {"norm": "layer"}, "norm='layer'.*allowed"),
        ("resnet9", [3, 32, 32], {"depth": 3}, "bad keyword"),
        ("transformer", [3], {}, "name='transformer'.*allowed"),
    ],
)
def test_build_model_rejects_bad_input(name: str, shape: list[int], kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model(name, shape, 2, **kw)


def test_gcn_needs_adjacency() -> None:
    model = build_model("gcn", [9, 5], 2, hidden=[8])
    x, adj, mask = _graph_batch(nodes=9, d=5)
    with pytest.raises(ValueError, match="adj="):
        model(x.float())
    with pytest.raises(ValueError, match="adj \\(N, nodes, nodes\\)"):
        model(x.float(), adj=adj[:, :8, :8].float())


def test_gcn_matches_an_independent_computation() -> None:
    """One GCN layer, sum pooling and the head, written out per graph and per node."""
    torch.manual_seed(1)
    model = build_model("gcn", [9, 5], 3, hidden=[6], pool="sum").double().eval()
    x, adj, mask = _graph_batch(n=3, nodes=9, d=5, seed=1)
    out = model(x, adj=adj, mask=mask)
    lin = model.layers[0].linear
    h1, h2 = model.head[0], model.head[2]
    for i in range(len(x)):
        n = int(mask[i].sum())
        hw = x[i, :n] @ lin.weight.T + lin.bias  # padded nodes are not used at all
        h = torch.relu(adj[i, :n, :n] @ hw)
        g = h.sum(0)
        expect = h2.weight @ torch.relu(h1.weight @ g + h1.bias) + h2.bias
        torch.testing.assert_close(out[i], expect)


def test_gcn_padding_and_node_order_do_not_matter() -> None:
    torch.manual_seed(2)
    model = build_model("gcn", [9, 5], 2, hidden=[8, 8], pool="max").double().eval()
    x, adj, mask = _graph_batch(nodes=9, d=5, seed=2)
    out = model(x, adj=adj, mask=mask)
    # more padding: same logits
    pad = 4
    xp = F.pad(x, (0, 0, 0, pad))
    adjp = F.pad(adj, (0, pad, 0, pad))
    maskp = F.pad(mask, (0, pad))
    torch.testing.assert_close(model(xp, adj=adjp, mask=maskp), out)
    # garbage in padded rows of x is ignored (the model multiplies inputs by the mask)
    junk = x + 5.0 * (1 - mask)[:, :, None]
    torch.testing.assert_close(model(junk, adj=adj, mask=mask), out)
    # permuting nodes (with adjacency and mask) keeps the graph-level output
    perm = torch.randperm(9)
    torch.testing.assert_close(
        model(x[:, perm], adj=adj[:, perm][:, :, perm], mask=mask[:, perm]), out
    )


def test_gcn_padded_nodes_get_zero_gradient() -> None:
    torch.manual_seed(3)
    model = build_model("gcn", [9, 5], 2, hidden=[8, 8]).double().eval()
    x, adj, mask = _graph_batch(nodes=9, d=5, seed=3)
    x = (x + (1 - mask)[:, :, None]).requires_grad_(True)  # nonzero features on padding
    model(x, adj=adj, mask=mask)[:, 1].sum().backward()
    grad = x.grad
    assert float(grad[mask == 0].abs().max()) == 0.0
    assert float(grad[mask == 1].abs().sum()) > 0.0


def test_resnet9_norms_and_per_sample_independence() -> None:
    torch.manual_seed(4)
    x = torch.rand(6, 3, 32, 32)
    for norm, independent in (("group", True), ("none", True), ("batch", False)):
        model = ResNet9(3, 10, width=4, norm=norm, groups=2).train()
        full = model(x)[:2]
        part = model(x[:2])
        same = torch.allclose(full, part, atol=1e-5)
        assert same == independent, norm
        model.eval()
        torch.testing.assert_close(model(x)[:2], model(x[:2]), atol=1e-5, rtol=1e-5)
    assert any(isinstance(m, nn.GroupNorm) for m in ResNet9(3, 10, width=8).modules())


@pytest.mark.parametrize(
    "model",
    [
        ResNet9(3, 10, width=4, groups=2),
        GCN(5, 2, hidden=[8, 8]),
    ],
)
def test_relu_to_softplus_on_new_models(model: nn.Module) -> None:
    n_relu = sum(isinstance(m, nn.ReLU) for m in model.modules())
    assert n_relu >= 3 and has_relu(model)
    soft = relu_to_softplus(model, beta=5.0)
    assert not has_relu(soft) and has_relu(model)
    assert sum(isinstance(m, nn.Softplus) for m in soft.modules()) == n_relu


def test_softplus_gcn_is_close_to_relu_gcn_for_large_beta() -> None:
    torch.manual_seed(5)
    model = build_model("gcn", [9, 5], 2, hidden=[8, 8]).double().eval()
    x, adj, mask = _graph_batch(nodes=9, d=5, seed=5)
    soft = relu_to_softplus(model, beta=1e4)
    torch.testing.assert_close(
        soft(x, adj=adj, mask=mask), model(x, adj=adj, mask=mask), atol=1e-3, rtol=0
    )


# ----------------------------------------------------------------------------- accuracy


@contextmanager
def one_thread() -> Iterator[None]:
    """Small models train faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@one_thread()
def _train_and_test(ds: Dataset, epochs: int, lr: float, batch_size: int, seed: int = 0) -> float:
    """Adam on cross-entropy for ``epochs`` epochs; test accuracy of ``ds.default_model``."""
    torch.manual_seed(seed)
    model = build_model(
        **ds.default_model, input_shape=list(ds.input_shape), n_classes=ds.n_classes
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for xb, yb, kw in ds.batches("train", batch_size, shuffle=True, generator=gen):
            opt.zero_grad()
            F.cross_entropy(model(xb, **kw), yb).backward()
            opt.step()
    model.eval()
    x, y, kw = ds.split("test")
    with torch.no_grad():
        pred = torch.cat([model(xb, **k).argmax(1) for xb, _, k in ds.batches("test", 1024)])
    assert len(pred) == len(x)
    return float((pred == y).float().mean())


ACCURACY = [
    # dataset, epochs, lr, batch size, goal
    ("adult", 3, 1e-3, 128, 0.84),
    ("bank", 3, 1e-3, 128, 0.89),
    ("compas", 5, 1e-3, 128, 0.64),
    ("mnist5k", 6, 2e-3, 64, 0.95),
]


@pytest.mark.slow
@requires_data
@pytest.mark.parametrize("name, epochs, lr, batch_size, goal", ACCURACY)
def test_vanilla_accuracy_real_data(
    name: str, epochs: int, lr: float, batch_size: int, goal: float
) -> None:
    ds = load_dataset(name)
    t0 = time.perf_counter()
    acc = _train_and_test(ds, epochs, lr, batch_size)
    print(f"{name}: {ds.default_model} test accuracy {acc:.4f}, {time.perf_counter() - t0:.1f}s")
    assert acc >= goal


@pytest.mark.slow
@requires_data
def test_vanilla_accuracy_mutag() -> None:
    """MUTAG's test split has 38 graphs (one graph = 2.6 points): the goal holds for the
    mean over three training seeds, and every seed stays well above the 66% majority. (60
    epochs at lr 1e-3 gave 0.816-0.842 on each of 8 seeds; 30 at 3e-3 ranged 0.71-0.87.)"""
    ds = load_dataset("mutag")
    accs = [_train_and_test(ds, 60, 1e-3, 16, seed=s) for s in range(3)]
    print(f"mutag: {ds.default_model} test accuracies {accs}")
    assert sum(accs) / 3 >= 0.80 and min(accs) >= 0.75


@pytest.mark.parametrize("name, epochs, lr", [("breast-cancer", 20, 1e-3), ("digits", 40, 3e-3)])
def test_vanilla_accuracy_bundled(name: str, epochs: int, lr: float) -> None:
    ds = load_dataset(name)
    acc = _train_and_test(ds, epochs, lr, 128)
    print(f"{name}: test accuracy {acc:.4f}")
    assert acc >= 0.95


def test_a_model_with_input_norm_builds_on_meta_and_its_run_loads(tmp_path) -> None:
    """Standardize checks its std on Python floats, so the guarded meta build of load_run
    and count_model_parameters accepts image models with input_norm (it used to refuse them)."""
    from r2et.models import build_model, count_model_parameters
    from r2et.runs import load_run, save_run

    spec = {"name": "cnn", "input_shape": [3, 8, 8], "n_classes": 3,
            "input_norm": [[0.5, 0.4, 0.3], [0.2, 0.25, 0.3]]}  # fmt: skip
    torch.manual_seed(0)
    model = build_model(**spec)
    assert count_model_parameters(spec) == sum(p.numel() for p in model.parameters())
    save_run(tmp_path / "run", model)
    loaded = load_run(tmp_path / "run").model
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    with pytest.raises(ValueError, match="std > 0"):
        build_model(**{**spec, "input_norm": [[0.5, 0.4, 0.3], [0.2, 0.0, 0.3]]})
