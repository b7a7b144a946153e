"""Synthetic graph classification with ground-truth explanations: BA-2Motifs.

The construction of Luo et al. ("Parameterized Explainer for Graph Neural Network", NeurIPS
2020): every graph is a Barabási–Albert base graph (``base_nodes`` = 20 nodes, each new node
attached to ``ba_edges`` = 1 existing node with probability proportional to its degree) with
one 5-node motif attached to it by a single edge between a random base node and a random motif
node; the label is the motif: a *house* (a square 0-1-2-3 with a roof node 4 on edge 0-1,
6 edges) is class 0, a *5-cycle* (5 edges) is class 1. The motif is what decides the label, so
its nodes and edges are the ground-truth explanation. Node ids and the edge list are shuffled
per graph, so the motif sits at a different position in every graph (an explainer cannot score
well by naming fixed positions).

Two views of the same graphs (same ``generator_seed`` → the same graphs; ``seed`` → the
stratified split):

* ``ba-2motifs`` (node view): ``x`` ``(N, 25, 1)``, a constant feature 1 per node (the base
  construction has no informative node features); the explainer's score of a node is
  ``|∂f_c/∂x_i|``: how much the output depends on how strongly node i enters the graph
  convolution (its feature is the value node i sends to its neighbours); ``forward_kwargs`` ``adj``
  (the GCN propagation matrix) and ``mask``. Ground truth: the 5 motif nodes.
* ``ba-2motifs-edges`` (edge view): ``x`` ``(N, E)`` the weights of the graph's undirected
  edges (1 = present; padded to the largest edge count E = 26 with weight 0), explained and
  attacked through :class:`~r2et.models.EdgeGNN`; ``forward_kwargs`` ``nodes`` (the constant
  node features), ``edge_index``, ``edge_mask`` and ``mask``. Ground truth: the motif's 5 or 6
  internal edges (the attaching edge is not part of the motif).

Both views have bounds (0, 1): an attack may weaken a node's feature or an edge's weight (down
to removing it) but not invent mass; deletion and occlusion replace units by 0 (remove them),
``deletion_baseline = 0``. ``ds.ground_truth[split]`` is the ``(N, F)`` boolean ground-truth
mask over the ranked units, used by :func:`~r2et.evaluate` (``ground_truth_precision``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from r2et._checks import check_choice, check_int
from r2et.data._prep import three_way_split
from r2et.data.base import SPLITS, Dataset
from r2et.models import gcn_propagation, weighted_adjacency

PathLike = str | os.PathLike[str]

MOTIFS = ("house", "cycle")
#: Motif edges on local node ids 0..4: the house (square 0-1-2-3, roof node 4 on edge 0-1)
#: and the 5-cycle.
MOTIF_EDGES = {
    "house": ((0, 1), (1, 2), (2, 3), (3, 0), (0, 4), (1, 4)),
    "cycle": ((0, 1), (1, 2), (2, 3), (3, 4), (4, 0)),
}
MOTIF_NODES = 5
ADJACENCIES = ("raw", "gcn")
#: The default graph network of both views: a 3-layer GIN (sum aggregation), mean pooling,
#: a readout of every layer. A GCN (normalised mean aggregation) with the constant node
#: features stays at chance on this task (it cannot count neighbours); see docs/graphs.md.
GNN_DEFAULTS: dict[str, Any] = {"hidden": [32, 32, 32], "pool": "mean", "readout": "concat"}


def barabasi_albert(n: int, m: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Undirected edges of a Barabási–Albert graph on ``n`` nodes (Barabási & Albert, 1999).

    Starts from a star on nodes ``0..m`` (node m joined to 0..m−1, connected); each further
    node ``v`` joins ``m`` distinct existing nodes drawn with probability proportional to their
    degree (sampling from the list of edge endpoints). ``m(n − m)`` edges for ``n > m``.
    """
    check_int("base_nodes", n, 2)
    check_int("ba_edges", m, 1)
    if m >= n:
        raise ValueError(f"ba_edges must be < base_nodes, got ba_edges={m}, base_nodes={n}")
    edges = [(i, m) for i in range(m)]
    ends = [v for e in edges for v in e]
    for v in range(m + 1, n):
        chosen: set[int] = set()
        while len(chosen) < m:
            chosen.add(ends[int(rng.integers(len(ends)))])
        for u in sorted(chosen):
            edges.append((u, v))
            ends += [u, v]
    return edges


def ba_2motifs_graphs(
    n_graphs: int = 1000, base_nodes: int = 20, ba_edges: int = 1, generator_seed: int = 0
) -> dict[str, np.ndarray]:
    """Generate BA-2Motifs graphs (see the module docstring), deterministic in
    ``generator_seed``; half of them (rounded down) houses (label 0), the rest 5-cycles
    (label 1), in a shuffled order.

    Returns arrays: ``y`` ``(G,)``; ``edges`` ``(G, E, 2)`` node pairs (padded with ``(0, 0)``)
    and ``edge_mask`` ``(G, E)``; ``edge_truth`` ``(G, E)`` (motif edges); ``node_truth``
    ``(G, n)`` (motif nodes), with ``n = base_nodes + 5`` nodes per graph and ``E`` the largest
    edge count.
    """
    check_int("n_graphs", n_graphs, 2)
    check_int("generator_seed", generator_seed, 0)
    check_int("base_nodes", base_nodes, 2)
    check_int("ba_edges", ba_edges, 1)
    rng = np.random.default_rng(generator_seed)
    n = base_nodes + MOTIF_NODES
    y = np.zeros(n_graphs, dtype=np.int64)
    y[n_graphs // 2 :] = 1
    y = y[rng.permutation(n_graphs)]
    graphs = []
    for label in y:  # one-time generation: a loop over graphs
        base = barabasi_albert(base_nodes, ba_edges, rng)
        motif = [(a + base_nodes, b + base_nodes) for a, b in MOTIF_EDGES[MOTIFS[label]]]
        link = (int(rng.integers(base_nodes)), base_nodes + int(rng.integers(MOTIF_NODES)))
        edges = np.array(base + [link] + motif, dtype=np.int64)
        truth = np.zeros(len(edges), dtype=bool)
        truth[len(base) + 1 :] = True
        perm = rng.permutation(n)  # node i gets id perm[i]
        order = rng.permutation(len(edges))
        graphs.append((perm[edges][order], truth[order], perm[base_nodes:]))
    e_max = max(len(g[0]) for g in graphs)
    edges = np.zeros((n_graphs, e_max, 2), dtype=np.int64)
    edge_mask = np.zeros((n_graphs, e_max), dtype=bool)
    edge_truth = np.zeros((n_graphs, e_max), dtype=bool)
    node_truth = np.zeros((n_graphs, n), dtype=bool)
    for g, (ed, tr, motif_nodes) in enumerate(graphs):
        edges[g, : len(ed)] = ed
        edge_mask[g, : len(ed)] = True
        edge_truth[g, : len(ed)] = tr
        node_truth[g, motif_nodes] = True
    return {
        "y": y,
        "edges": edges,
        "edge_mask": edge_mask,
        "edge_truth": edge_truth,
        "node_truth": node_truth,
    }


def _load_ba_2motifs(
    view: str,
    seed: int,
    n_graphs: int,
    base_nodes: int,
    ba_edges: int,
    generator_seed: int,
    val_fraction: float,
    test_fraction: float,
    adjacency: str = "raw",
) -> Dataset:
    g = ba_2motifs_graphs(n_graphs, base_nodes, ba_edges, generator_seed)
    y = g["y"]
    n_nodes = base_nodes + MOTIF_NODES
    n_edges = g["edges"].shape[1]
    splits = [torch.from_numpy(i) for i in three_way_split(y, val_fraction, test_fraction, seed)]
    yt = torch.from_numpy(y)
    edges = torch.from_numpy(g["edges"])
    edge_mask = torch.from_numpy(g["edge_mask"]).float()
    mask = torch.ones(len(y), n_nodes)
    nodes = torch.ones(len(y), n_nodes, 1)
    info: dict[str, Any] = {
        "source": "generated (Luo et al. 2020 BA-2Motifs construction)",
        "generator_seed": generator_seed,
        "seed": seed,
        "split": f"stratified train/val/test, val={val_fraction}, test={test_fraction}",
        "label": "0 = house motif, 1 = 5-cycle motif",
        "n_graphs": int(len(y)),
        "base_nodes": base_nodes,
        "ba_edges": ba_edges,
        "max_nodes": n_nodes,
        "max_edges": int(n_edges),
        "view": view,
    }
    common: dict[str, Any] = {
        "modality": "graph",
        "n_classes": 2,
        "default_k": 5,
        "bounds": (0.0, 1.0),
        "deletion_baseline": 0.0,
    }
    if view == "nodes":
        check_choice("adjacency", adjacency, ADJACENCIES)
        adj = weighted_adjacency(edge_mask, edges, n_nodes, edge_mask)
        if adjacency == "gcn":
            adj = gcn_propagation(adj, mask)
        truth = torch.from_numpy(g["node_truth"])
        fkw = {s: {"adj": adj[i].contiguous(), "mask": mask[i]} for s, i in zip(SPLITS, splits)}
        return Dataset(
            name="ba-2motifs",
            train=(nodes[splits[0]], yt[splits[0]]),
            val=(nodes[splits[1]], yt[splits[1]]),
            test=(nodes[splits[2]], yt[splits[2]]),
            feature_names=[f"node_{i}" for i in range(n_nodes)],
            forward_kwargs=fkw,
            default_model=(
                {"name": "gin", **GNN_DEFAULTS}
                if adjacency == "raw"
                else {"name": "gcn", "hidden": [32, 32, 32], "pool": "sum"}
            ),
            info={**info, "node_features": ["constant 1"], "adjacency": adjacency},
            ground_truth={s: truth[i] for s, i in zip(SPLITS, splits)},
            **common,
        )
    truth = torch.from_numpy(g["edge_truth"])
    fkw = {
        s: {
            "nodes": nodes[i],
            "edge_index": edges[i].contiguous(),
            "edge_mask": edge_mask[i],
            "mask": mask[i],
        }
        for s, i in zip(SPLITS, splits)
    }
    return Dataset(
        name="ba-2motifs-edges",
        train=(edge_mask[splits[0]], yt[splits[0]]),
        val=(edge_mask[splits[1]], yt[splits[1]]),
        test=(edge_mask[splits[2]], yt[splits[2]]),
        feature_names=[f"edge_{e}" for e in range(n_edges)],
        forward_kwargs=fkw,
        default_model={
            "name": "edge-gnn",
            "n_nodes": n_nodes,
            "node_features": 1,
            "conv": "gin",
            **GNN_DEFAULTS,
        },
        info={**info, "inputs": "edge weights (1 = present, 0 = padding)"},
        ground_truth={s: truth[i] for s, i in zip(SPLITS, splits)},
        **common,
    )


def load_ba_2motifs(
    root: PathLike | None = None,
    download: bool = True,
    seed: int = 0,
    n_graphs: int = 1000,
    base_nodes: int = 20,
    ba_edges: int = 1,
    generator_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    adjacency: str = "raw",
) -> Dataset:
    """BA-2Motifs (synthetic graphs, no download), node view: which nodes make the motif.

    BA-2Motifs, node view (see the module docstring): ``x`` ``(N, 25, 1)`` constant node
    features, ``forward_kwargs`` ``adj``/``mask``, ground truth = the 5 motif nodes.
    ``adjacency``: ``"raw"`` (the 0/1 adjacency, for the default model ``gin``) or ``"gcn"``
    (the propagation matrix ``D̂^{-1/2}(A + I)D̂^{-1/2}``, default model ``gcn``). Nothing is
    read or downloaded (``root`` and ``download`` are accepted for the registry's signature)."""
    return _load_ba_2motifs(
        "nodes",
        seed,
        n_graphs,
        base_nodes,
        ba_edges,
        generator_seed,
        val_fraction,
        test_fraction,
        adjacency,
    )


def load_ba_2motifs_edges(
    root: PathLike | None = None,
    download: bool = True,
    seed: int = 0,
    n_graphs: int = 1000,
    base_nodes: int = 20,
    ba_edges: int = 1,
    generator_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """BA-2Motifs (synthetic graphs, no download), edge view: which edges make the motif.

    BA-2Motifs, edge view (see the module docstring): ``x`` ``(N, E)`` edge weights,
    model ``edge-gnn`` (GIN), ground truth = the motif's internal edges."""
    return _load_ba_2motifs(
        "edges", seed, n_graphs, base_nodes, ba_edges, generator_seed, val_fraction, test_fraction
    )
