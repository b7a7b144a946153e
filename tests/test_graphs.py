"""Synthetic graphs with ground-truth explanations (BA-2Motifs), edge-level saliency, graph
attacks and ``ground_truth_precision``.

Independent references: hand-computed small cases, the TU loader's ``gcn_normalise``, autograd
on an explicitly built adjacency, central finite differences in float64, and per-graph checks
of the generated motifs written with plain Python sets.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from r2et import EnsembleAttack, ERAttack, Explainer, evaluate, get_method
from r2et.data import load_dataset
from r2et.data.graphs import gcn_normalise
from r2et.data.synthetic_graphs import ba_2motifs_graphs, barabasi_albert
from r2et.metrics import ground_truth_precision
from r2et.models import build_model, gcn_propagation, weighted_adjacency

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- generator
def test_generator_is_deterministic() -> None:
    a = ba_2motifs_graphs(40, generator_seed=3)
    b = ba_2motifs_graphs(40, generator_seed=3)
    c = ba_2motifs_graphs(40, generator_seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["edges"], c["edges"])
    assert a["y"].sum() == 20  # half houses, half cycles


def _components(nodes: set[int], edges: list[tuple[int, int]]) -> int:
    parent = {v: v for v in nodes}

    def find(v: int) -> int:
        while parent[v] != v:
            v = parent[v]
        return v

    for i, j in edges:
        parent[find(i)] = find(j)
    return len({find(v) for v in nodes})


def test_motifs_are_where_the_masks_say() -> None:
    g = ba_2motifs_graphs(60, generator_seed=1)
    n = g["node_truth"].shape[1]
    assert n == 25
    for y, ed, em, et, nt in zip(
        g["y"], g["edges"], g["edge_mask"], g["edge_truth"], g["node_truth"]
    ):
        edges = [tuple(int(v) for v in e) for e in ed[em]]
        motif = [tuple(int(v) for v in e) for e in ed[em & et]]
        base = [e for e, t in zip(edges, et[em]) if not t]
        motif_nodes = set(np.flatnonzero(nt).tolist())
        assert len(motif_nodes) == 5 and {v for e in motif for v in e} == motif_nodes
        assert len({frozenset(e) for e in edges}) == len(edges)  # no duplicate edge
        assert all(i != j for i, j in edges)  # no self-loop
        deg = {v: sum(v in e for e in motif) for v in motif_nodes}
        if y == 0:  # house: a 4-cycle and a roof on one of its edges
            assert len(motif) == 6 and sorted(deg.values()) == [2, 2, 2, 3, 3]
            hubs = [v for v, d in deg.items() if d == 3]
            assert frozenset(hubs) in {frozenset(e) for e in motif}
        else:  # 5-cycle
            assert len(motif) == 5 and set(deg.values()) == {2}
        assert _components(motif_nodes, motif) == 1
        # exactly one edge joins the motif to the base, which is a BA tree on 20 nodes
        links = [e for e in base if (e[0] in motif_nodes) != (e[1] in motif_nodes)]
        assert len(links) == 1
        tree = [e for e in base if e not in links]
        base_nodes = set(range(n)) - motif_nodes
        assert all(v in base_nodes for e in tree for v in e)
        assert len(tree) == 19 and _components(base_nodes, tree) == 1
        assert _components(set(range(n)), edges) == 1


def test_barabasi_albert_counts_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    edges = barabasi_albert(30, 3, rng)
    assert len(edges) == 3 * (30 - 3)
    assert len({frozenset(e) for e in edges}) == len(edges)
    deg = np.bincount(np.array(edges).ravel(), minlength=30)
    # seed star: nodes 0..m-1 start with degree 1; every later node brings m edges
    assert deg.min() >= 1 and deg[4:].min() >= 3 and deg.sum() == 2 * len(edges)
    with pytest.raises(ValueError, match="ba_edges"):
        barabasi_albert(5, 5, rng)
    with pytest.raises(ValueError, match="ba_edges"):
        load_dataset("ba-2motifs", ba_edges=0)
    with pytest.raises(ValueError, match="adjacency"):
        load_dataset("ba-2motifs", adjacency="dense")


def test_views_are_the_same_graphs() -> None:
    nodes = load_dataset("ba-2motifs", n_graphs=100, seed=2)
    edges = load_dataset("ba-2motifs-edges", n_graphs=100, seed=2)
    nodes_gcn = load_dataset("ba-2motifs", n_graphs=100, seed=2, adjacency="gcn")
    for split in ("train", "val", "test"):
        xn, yn, kn = nodes.split(split)
        xe, ye, ke = edges.split(split)
        assert torch.equal(yn, ye)
        assert torch.equal(xe, ke["edge_mask"]) and bool((xn == 1).all())
        # node view adjacency = the edge list of the edge view, symmetric 0/1
        a = torch.zeros_like(kn["adj"])
        for r in range(len(xe)):
            for (i, j), m in zip(ke["edge_index"][r].tolist(), ke["edge_mask"][r].tolist()):
                if m:
                    a[r, i, j] = a[r, j, i] = 1.0
        assert torch.equal(kn["adj"], a)
        torch.testing.assert_close(nodes_gcn.split(split)[2]["adj"], gcn_normalise(a, kn["mask"]))
        # ground truth: the motif nodes are the endpoints of the motif edges
        gt_e = edges.ground_truth_of(split)
        ends = torch.zeros_like(nodes.ground_truth_of(split))
        idx = ke["edge_index"][gt_e]
        rows = torch.arange(len(xe))[:, None].expand_as(gt_e)[gt_e]
        ends[rows, idx[:, 0]] = True
        ends[rows, idx[:, 1]] = True
        assert torch.equal(ends, nodes.ground_truth_of(split))
    assert nodes.ground_truth_of("test", 3).shape == (3, 25)
    assert edges.summary()["max_edges"] == edges.n_features == 26


# ---------------------------------------------------------------------------- adjacency
def test_weighted_adjacency_hand_case() -> None:
    w = torch.tensor([[0.5, 2.0, 7.0]])
    idx = torch.tensor([[[0, 1], [2, 1], [0, 0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third edge is padding
    expect = torch.tensor([[[0.0, 0.5, 0.0], [0.5, 0.0, 2.0], [0.0, 2.0, 0.0]]])
    torch.testing.assert_close(weighted_adjacency(w, idx, 3, mask), expect)


def test_gcn_propagation_hand_case_and_tu_loader() -> None:
    # path 0 - 1 with weight 3, a padded third node: A + I = [[1, 3], [3, 1]], degrees 4, 4
    adj = torch.tensor([[[0.0, 3.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    expect = torch.tensor([[[0.25, 0.75, 0.0], [0.75, 0.25, 0.0], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(gcn_propagation(adj, mask), expect)
    a = (torch.rand(4, 6, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    a = ((a + a.transpose(1, 2)) > 0).float() * (1 - torch.eye(6))
    m = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0] * 2, [1.0] * 5 + [0.0], [1.0] * 6])
    torch.testing.assert_close(gcn_propagation(a, m), gcn_normalise(a, m))


def test_gin_layer_matches_neighbour_sums() -> None:
    torch.manual_seed(0)
    model = build_model("gin", [5, 2], 2, hidden=[3], pool="sum", readout="last").double()
    layer = model.layers[0]
    h = torch.randn(1, 5, 2, dtype=torch.float64)
    adj = torch.zeros(1, 5, 5, dtype=torch.float64)
    for i, j, w in ((0, 1, 0.5), (1, 2, 1.0), (3, 4, 2.0)):
        adj[0, i, j] = adj[0, j, i] = w
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    out = layer(h, adj, mask)
    for i in range(5):  # h_i + Σ_j A_ij h_j, one node at a time
        agg = h[0, i] + sum(adj[0, i, j] * h[0, j] for j in range(5))
        torch.testing.assert_close(out[0, i], layer.mlp(agg) * mask[0, i])


# ---------------------------------------------------------------------------- edge saliency
def _fit(ds: Any, model: nn.Module, epochs: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for xb, yb, kw in ds.batches("train", 32, shuffle=True, generator=gen):
            opt.zero_grad()
            F.cross_entropy(model(xb, **kw), yb).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def edge_case() -> tuple[Any, nn.Module]:
    ds = load_dataset("ba-2motifs-edges")
    spec = dict(ds.default_model)
    torch.manual_seed(0)
    model = build_model(spec.pop("name"), list(ds.input_shape), 2, **spec)
    return ds, _fit(ds, model, 40)


def _model_on(conv: str, dtype: torch.dtype = torch.float64) -> tuple[Any, nn.Module]:
    ds = load_dataset("ba-2motifs-edges", n_graphs=40)
    torch.manual_seed(1)
    model = build_model("edge-gnn", [26], 2, n_nodes=25, node_features=1, conv=conv, hidden=[8, 8])
    return ds, model.to(dtype).eval()


def _f64(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: v.double() if v.is_floating_point() else v for k, v in kw.items()}


@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_edge_saliency_is_autograd_on_the_adjacency(conv: str) -> None:
    ds, model = _model_on(conv)
    x, _, kw = ds.subset("test", 6)
    x, kw = x.double() * 0.8 + 0.1, _f64(kw)  # weights inside (0, 1), not only 1
    attr = Explainer("grad").attribute(model, x, **kw)
    with torch.no_grad():
        target = model(x, **kw).argmax(1)
    # reference: the same network run on an explicitly built adjacency leaf, ∂f/∂A_ij
    a = torch.zeros(len(x), 25, 25, dtype=torch.float64)
    em = kw["edge_mask"].bool()
    ei = kw["edge_index"]
    for r in range(len(x)):
        for e in range(x.shape[1]):
            if em[r, e]:
                i, j = ei[r, e].tolist()
                a[r, i, j] = a[r, j, i] = x[r, e]
    a.requires_grad_(True)
    p = gcn_propagation(a, kw["mask"]) if conv == "gcn" else a
    logits = model.gnn(kw["nodes"], adj=p, mask=kw["mask"])
    (ga,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    ref = torch.zeros_like(x)
    for r in range(len(x)):
        for e in range(x.shape[1]):
            if em[r, e]:
                i, j = ei[r, e].tolist()
                ref[r, e] = ga[r, i, j] + ga[r, j, i]
    torch.testing.assert_close(attr, ref, rtol=1e-9, atol=1e-12)
    assert float(attr[~em].abs().max()) == 0.0 and float(attr[em].abs().max()) > 0


@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_edge_saliency_matches_finite_differences(conv: str) -> None:
    ds, model = _model_on(conv)
    x, _, kw = ds.subset("test", 3)
    x, kw = x.double() * 0.7 + 0.2, _f64(kw)
    with torch.no_grad():
        target = model(x, **kw).argmax(1)
    attr = Explainer("grad").attribute(model, x, target, **kw)
    n, e = x.shape
    d = 1e-6
    eye = torch.eye(e, dtype=torch.float64)
    plus = (x[:, None, :] + d * eye).reshape(n * e, e)
    minus = (x[:, None, :] - d * eye).reshape(n * e, e)
    kwe = {k: v.repeat_interleave(e, 0) for k, v in kw.items()}
    with torch.no_grad():
        t = target.repeat_interleave(e)[:, None]
        fd = (model(plus, **kwe).gather(1, t) - model(minus, **kwe).gather(1, t)) / (2 * d)
    torch.testing.assert_close(attr, fd.view(n, e), rtol=1e-5, atol=1e-7)


def test_edge_model_rejects_missing_keywords() -> None:
    _, model = _model_on("gin")
    with pytest.raises(ValueError, match="edge_index"):
        model(torch.ones(2, 26, dtype=torch.float64))
    with pytest.raises(ValueError, match="n_nodes"):
        build_model("edge-gnn", [26], 2, node_features=1)


# ---------------------------------------------------------------------------- attacks
def test_edge_model_learns_and_explains_the_motif(edge_case: tuple[Any, nn.Module]) -> None:
    ds, model = edge_case
    x, y, kw = ds.split("test")
    with torch.no_grad():
        acc = float((model(x, **kw).argmax(1) == y).float().mean())
    assert acc >= 0.9
    s = Explainer("grad").scores(model, x, **kw)
    gtp = ground_truth_precision(s, ds.ground_truth_of("test"), 5)
    chance = 5.5 / 25.5  # a random top-5 of the real edges (0.22)
    assert float(gtp.mean()) > chance + 0.08  # measured 0.37 for this model


@pytest.mark.parametrize("preset", [None, "fast"])
def test_edge_attacks_keep_prediction_and_budget(
    edge_case: tuple[Any, nn.Module], preset: str | None
) -> None:
    ds, model = edge_case
    x, _, kw = ds.subset("test", 16)
    ex, eps = Explainer("grad"), 0.2
    if preset is None:
        atk = ERAttack(ex, 5, eps, steps=20, bounds=ds.bounds, seed=0)
    else:
        atk = EnsembleAttack(ex, 5, eps, bounds=ds.bounds, preset=preset, seed=0)
    res = atk(model, x, **kw)
    assert float((res.x_adv - x).abs().max()) <= eps + 1e-6
    assert bool((res.x_adv >= -1e-7).all() and (res.x_adv <= 1 + 1e-7).all())
    with torch.no_grad():
        assert torch.equal(model(res.x_adv, **kw).argmax(1), model(x, **kw).argmax(1))
    assert not bool(res.flipped.any())
    assert float(res.scores_adv[kw["edge_mask"] == 0].abs().max()) == 0.0
    assert float(res.p_at_k.mean()) < 1.0  # the attack moved some explanations


def test_r2et_trains_on_edges(edge_case: tuple[Any, nn.Module]) -> None:
    ds, model = edge_case
    x, y, kw = ds.subset("train", 16)
    method = get_method("r2et-paper", k=5, lam=1.0, h=0.2)
    loss, logs = method.loss(model, x, y, **kw)
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    assert math.isfinite(float(loss.detach())) and {"ce", "gap", "hess"} <= set(logs)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


# ---------------------------------------------------------------------------- metric
def test_ground_truth_precision_hand_cases() -> None:
    s = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2, 3, 4, 5]])
    g = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    # k=2: row 0 top {0, 1} ∩ {0, 2} = 1 of min(2, 2); row 1 top {4, 3} ∩ G = {3}: 1/2
    out = ground_truth_precision(s, g, 2)
    torch.testing.assert_close(out[:2], torch.tensor([0.5, 0.5]))
    assert math.isnan(float(out[2]))
    # k=3: row 0 top {0, 1, 2} holds both truth units: 2 / min(3, 2) = 1; row 1: {4, 3, 2}: 2/3
    out = ground_truth_precision(s, g, 3)
    torch.testing.assert_close(out[:2], torch.tensor([1.0, 2.0 / 3.0]))
    with pytest.raises(ValueError, match="truth"):
        ground_truth_precision(s, g[:, :4], 2)
    with pytest.raises(ValueError, match="k"):
        ground_truth_precision(s, g, 5)


def test_evaluate_reports_ground_truth_precision(edge_case: tuple[Any, nn.Module]) -> None:
    ds, model = edge_case
    ex = Explainer("grad")
    atk = ERAttack(ex, 5, 0.2, steps=5, bounds=ds.bounds, seed=0)
    out = evaluate(model, ds, ex, k=5, attacks={"er": atk}, n=20, n_random=2)
    x, _, kw = ds.subset("test", 20)
    s = ex.scores(model, x, **kw)
    truth = ds.ground_truth_of("test", 20)
    top = s.topk(5, 1).indices
    hits = truth.gather(1, top).sum(1).double()
    expect = float((hits / truth.sum(1).clamp(max=5)).mean())
    assert out["ground_truth_precision"] == pytest.approx(expect, abs=1e-6)  # float32 scores
    assert 0.0 <= out["attacks"]["er"]["ground_truth_precision_adv"] <= 1.0
    # the default baseline of graphs' weights is 0 (the unit removed), not the mean input
    zero = evaluate(model, ds, ex, k=5, n=20, n_random=2, baseline="zero")
    assert out["faithfulness"]["deletion_gain"] == pytest.approx(
        zero["faithfulness"]["deletion_gain"], abs=1e-12
    )
    # datasets without a ground truth report none
    plain = evaluate(model, replace(ds, ground_truth=None), ex, k=5, n=4, faithfulness=False)
    assert "ground_truth_precision" not in plain


def test_node_view_attack_and_ground_truth() -> None:
    """Node view: node saliency of a GIN, attacks on the constant node features in [0, 1]."""
    ds = load_dataset("ba-2motifs", n_graphs=60)
    spec = dict(ds.default_model)
    assert spec.pop("name") == "gin"
    torch.manual_seed(0)
    model = build_model("gin", list(ds.input_shape), 2, **spec).eval()
    x, _, kw = ds.subset("test", 8)
    ex = Explainer("grad")
    res = ERAttack(ex, 5, 0.2, steps=10, bounds=ds.bounds, seed=0)(model, x, **kw)
    assert float((res.x_adv - x).abs().max()) <= 0.2 + 1e-6 and float(res.x_adv.max()) <= 1.0
    with torch.no_grad():
        assert torch.equal(model(res.x_adv, **kw).argmax(1), model(x, **kw).argmax(1))
    out = evaluate(model, ds, ex, k=5, n=8, faithfulness=False)
    s = ex.scores(model, x, **kw)
    truth = ds.ground_truth_of("test", 8)
    assert truth.sum(1).tolist() == [5] * 8
    hits = truth.gather(1, s.topk(5, 1).indices).sum(1).double() / 5
    assert out["ground_truth_precision"] == pytest.approx(float(hits.mean()), abs=1e-6)


def test_report_shows_ground_truth_columns_only_where_known() -> None:
    from r2et.bench.report import results_table

    def row(dataset: str, method: str, **extra: float) -> dict[str, Any]:
        return {
            "dataset": dataset,
            "method": method,
            "weight_name": None if method == "vanilla" else "lam",
            "weight": None if method == "vanilla" else 0.1,
            "val_accuracy": 1.0,
            "accuracy": 1.0,
            "ensemble_p_at_k_mean": 0.5 if method == "vanilla" else 0.7,
            "deletion_gain": 0.1,
            **extra,
        }

    rows = [
        row("ba-2motifs-edges", "vanilla", ground_truth_precision=0.4),
        row("ba-2motifs-edges", "r2et", ground_truth_precision=0.8),
        row("mutag", "vanilla"),
        row("mutag", "r2et"),
    ]
    ba = results_table(rows, 0.02, dataset="ba-2motifs-edges")
    mutag = results_table(rows, 0.02, dataset="mutag")
    assert "GT precision" in ba and "GT precision" not in mutag
    r2et_line = next(line for line in ba.splitlines() if line.startswith("| r2et"))
    assert "**0.800**" in r2et_line and "**0.700**" in r2et_line  # best P@k and GT in bold


def test_node_and_edge_views_build_the_same_network() -> None:
    """With one seed, the node view's ``gin`` and the edge view's ``edge-gnn`` have the same
    parameters and compute the same logits at x = 1: their explanations are of one model."""
    nodes = load_dataset("ba-2motifs", n_graphs=20)
    edges = load_dataset("ba-2motifs-edges", n_graphs=20)
    built = []
    for ds in (nodes, edges):
        spec = dict(ds.default_model)
        torch.manual_seed(7)
        built.append(build_model(spec.pop("name"), list(ds.input_shape), 2, **spec).eval())
    gin, egnn = built
    for (_, a), (_, b) in zip(gin.state_dict().items(), egnn.gnn.state_dict().items()):
        assert torch.equal(a, b)
    xn, _, kn = nodes.split("train")
    xe, _, ke = edges.split("train")
    with torch.no_grad():
        torch.testing.assert_close(gin(xn, **kn), egnn(xe, **ke))
