"""Graph datasets in the TU Dortmund text format (MUTAG), as dense padded graphs.

A TU dataset ``DS`` is a set of text files: ``DS_A.txt`` (one ``row, col`` line per directed
edge, 1-based node ids), ``DS_graph_indicator.txt`` (graph id of every node),
``DS_graph_labels.txt`` (label of every graph) and ``DS_node_labels.txt`` (label of every
node). Each graph becomes

* ``x``: ``(max_nodes, n_node_labels)`` one-hot node labels (zero rows for padding),
* ``adj``: ``(max_nodes, max_nodes)`` the GCN propagation matrix of Kipf & Welling (2017),
  ``D̂^{-1/2} (A + I) D̂^{-1/2}`` over the real nodes (zero rows/columns for padding),
* ``mask``: ``(max_nodes,)`` 1 for real nodes, 0 for padding.

``adj`` and ``mask`` travel in ``forward_kwargs``; explanations rank nodes (scores sum over
the node-feature axis) and models multiply inputs by ``mask``, so padded nodes get exactly zero
attribution.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from r2et.data._prep import three_way_split, to_tensors
from r2et.data.base import SPLITS, Dataset
from r2et.data.download import Source, resolve

PathLike = str | os.PathLike[str]

MUTAG_FILES = {
    "MUTAG_A.txt": "d9656ca7493f3445d737c711710bb36fd432dddd1c0ea32e1d4713c86ebd28e2",
    "MUTAG_graph_indicator.txt": "7d520a4d6c7961c0cdeabe076d8fe27e795b6d373485c9a2b744987e560a2056",
    "MUTAG_graph_labels.txt": "a1518ea39ba3426bd42f57396b9c4baffe68e9adc718caeeab0119c6591a5f2c",
    "MUTAG_node_labels.txt": "678f429965490e84dd27713017538c995fc05d1621beac910848b600015ee863",
}
MUTAG_SOURCE = Source(
    folder="MUTAG",
    files=MUTAG_FILES,
    archive=("https://www.chrsmrrs.com/graphkerneldatasets/MUTAG.zip", None, "MUTAG.zip"),
    members={f: f"MUTAG/{f}" for f in MUTAG_FILES},
)
MUTAG_ATOMS = ("C", "N", "O", "F", "I", "Cl", "Br")


def _read_ints(path: Path, ncols: int) -> np.ndarray:
    try:
        arr = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as err:
        raise ValueError(f"TU file {str(path)!r} is corrupt: {err}") from None
    if arr.shape[1] != ncols:
        raise ValueError(f"TU file {str(path)!r} must have {ncols} column(s), has {arr.shape[1]}")
    return arr if ncols > 1 else arr[:, 0]


def gcn_normalise(adj: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``D̂^{-1/2} (A + I) D̂^{-1/2}`` for a batch of dense adjacencies ``(N, n, n)`` with node
    mask ``(N, n)``; self-loops are added on real nodes only, padded rows/columns stay 0."""
    a = adj * mask[:, :, None] * mask[:, None, :]
    a = a + torch.diag_embed(mask)
    deg = a.sum(-1)
    inv = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    return inv[:, :, None] * a * inv[:, None, :]


def tu_to_dense(
    edges: np.ndarray,
    graph_indicator: np.ndarray,
    node_labels: np.ndarray,
    n_node_labels: int,
    max_nodes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``(x one-hot (G, n, L), raw adjacency (G, n, n), mask (G, n))`` from TU arrays.

    ``edges`` are 1-based ``(row, col)`` pairs; nodes of one graph must be contiguous (as in
    every TU file). Raises ``ValueError`` for an edge across graphs, a label outside
    ``0..n_node_labels-1`` or a graph larger than ``max_nodes``.
    """
    gi = graph_indicator - graph_indicator.min()
    if np.any(np.diff(gi) < 0):
        raise ValueError("graph_indicator must list the nodes of each graph contiguously")
    n_graphs = int(gi.max()) + 1
    sizes = np.bincount(gi, minlength=n_graphs)
    largest = int(sizes.max())
    if max_nodes is None:
        max_nodes = largest
    elif max_nodes < largest:
        raise ValueError(f"max_nodes={max_nodes} is smaller than the largest graph ({largest})")
    if node_labels.min() < 0 or node_labels.max() >= n_node_labels:
        raise ValueError(f"node labels must be in 0..{n_node_labels - 1}")
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos = np.arange(len(gi)) - first[gi]
    x = np.zeros((n_graphs, max_nodes, n_node_labels), dtype=np.float32)
    x[gi, pos, node_labels] = 1.0
    mask = np.zeros((n_graphs, max_nodes), dtype=np.float32)
    mask[gi, pos] = 1.0
    r, c = edges[:, 0] - 1, edges[:, 1] - 1
    if r.min() < 0 or max(r.max(), c.max()) >= len(gi) or np.any(gi[r] != gi[c]):
        raise ValueError("edge list has node ids out of range or edges across graphs")
    adj = np.zeros((n_graphs, max_nodes, max_nodes), dtype=np.float32)
    adj[gi[r], pos[r], pos[c]] = 1.0
    return x, adj, mask


def load_mutag(
    root: PathLike | None = None,
    download: bool = True,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_nodes: int | None = None,
) -> Dataset:
    """MUTAG (Debnath et al., 1991): 188 nitro compounds as graphs; predict mutagenicity.

    MUTAG (Debnath et al., 1991; TU Dortmund collection): 188 nitro compounds, label =
    mutagenic (TU label 1 -> class 1, -1 -> class 0; 125/63).

    Dense padded graphs (see the module docstring): ``x`` ``(188, 28, 7)`` one-hot atom types
    (C, N, O, F, I, Cl, Br), ``forward_kwargs[split] = {"adj": (N, 28, 28), "mask": (N, 28)}``.
    3,371 nodes and 7,442 directed edge lines (3,721 bonds). Stratified train/val/test by
    ``seed``. Default model: ``gcn``; default ``k``: 5 nodes (the smallest graph has 10).
    """
    paths = resolve("mutag", MUTAG_SOURCE, root, download)
    edges = _read_ints(paths["MUTAG_A.txt"], 2)
    gi = _read_ints(paths["MUTAG_graph_indicator.txt"], 1)
    glab = _read_ints(paths["MUTAG_graph_labels.txt"], 1)
    nlab = _read_ints(paths["MUTAG_node_labels.txt"], 1)
    if len(gi) != len(nlab) or int(gi.max()) != len(glab) or not np.isin(glab, [-1, 1]).all():
        raise ValueError("MUTAG files are inconsistent (node/graph counts or labels)")
    x, adj, mask = tu_to_dense(edges, gi, nlab, len(MUTAG_ATOMS), max_nodes)
    y = (glab == 1).astype(np.int64)
    splits = three_way_split(y, val_fraction, test_fraction, seed)
    mask_t, adj_t = torch.from_numpy(mask), torch.from_numpy(adj)
    norm = gcn_normalise(adj_t, mask_t)
    parts = [to_tensors(x[i], y[i]) for i in splits]
    fkw = {
        s: {"adj": norm[torch.from_numpy(i)].contiguous(), "mask": mask_t[torch.from_numpy(i)]}
        for s, i in zip(SPLITS, splits)
    }
    n = x.shape[1]
    info: dict[str, Any] = {
        "source": MUTAG_SOURCE.archive[0] if MUTAG_SOURCE.archive else "",
        "files": list(MUTAG_FILES),
        "seed": seed,
        "split": f"stratified train/val/test, val={val_fraction}, test={test_fraction}",
        "label": "TU graph label 1 (mutagenic) -> 1, -1 -> 0",
        "node_features": [f"atom={a}" for a in MUTAG_ATOMS],
        "adjacency": "D^-1/2 (A + I) D^-1/2 over real nodes (Kipf & Welling 2017)",
        "n_graphs": int(len(y)),
        "n_nodes": int(mask.sum()),
        "n_directed_edges": int(adj.sum()),
        "max_nodes": int(n),
    }
    return Dataset(
        name="mutag",
        modality="graph",
        train=parts[0],
        val=parts[1],
        test=parts[2],
        n_classes=2,
        feature_names=[f"node_{i}" for i in range(n)],
        default_k=5,
        forward_kwargs=fkw,
        bounds=(0.0, 1.0),
        default_model={"name": "gcn", "hidden": [64, 64, 64], "pool": "sum"},
        info=info,
    )
