"""Model entries for graphs: ``gcn`` (dense GCN on padded graphs ``(nodes, d)``, called as
``model(x, adj=..., mask=...)`` with the dataset's ``forward_kwargs``), ``gin`` (dense GIN, Xu
et al. 2019: sum aggregation over the *raw* adjacency ``adj``, mean pooling and a readout of
every layer by default) and ``edge-gnn`` (a GCN or GIN taking the graph's edge weights as its
input ``(edges,)``, for edge-level explanations; :class:`EdgeGNN`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from r2et._checks import check_choice, check_size, check_sizes
from r2et.models.base import register_model
from r2et.models.layers import make_activation

__all__ = [
    "CONVS",
    "GCN",
    "POOLS",
    "READOUTS",
    "DenseGCNLayer",
    "DenseGINLayer",
    "EdgeGNN",
    "gcn_propagation",
    "weighted_adjacency",
]

POOLS = ("sum", "mean", "max")
READOUTS = ("last", "concat")


class DenseGCNLayer(nn.Module):
    """One graph convolution (Kipf & Welling, ICLR 2017) on dense padded graphs:
    ``H' = act(Â H W + b)``, with ``Â`` the normalised adjacency ``(N, n, n)`` given at call
    time; rows of padded nodes are zeroed by the node mask."""

    def __init__(self, in_features: int, out_features: int, act: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.act = act

    def forward(self, h: torch.Tensor, adj: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.act(adj @ self.linear(h)) * mask.unsqueeze(-1)


class DenseGINLayer(nn.Module):
    """One GIN layer (Xu et al., ICLR 2019, ε = 0) on dense padded graphs:
    ``H' = act(W₂ act(W₁ (H + A H) + b₁) + b₂)``, with ``A`` the raw (weighted) adjacency
    ``(N, n, n)`` given at call time (sum aggregation: unlike the GCN's normalised mean it
    can count neighbours); rows of padded nodes are zeroed by the node mask."""

    def __init__(self, in_features: int, out_features: int, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_features, out_features),
            act(),
            nn.Linear(out_features, out_features),
            act(),
        )

    def forward(self, h: torch.Tensor, adj: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(h + adj @ h) * mask.unsqueeze(-1)


CONVS = ("gcn", "gin")


class GCN(nn.Module):
    """Graph classifier: dense GCN layers, a masked pooling over nodes, a two-layer head.

    ``forward(x, adj, mask=None)``: ``x`` ``(N, n, d)`` node features, ``adj`` ``(N, n, n)``
    normalised adjacency (``D̂^{-1/2}(A+I)D̂^{-1/2}``, from the dataset's ``forward_kwargs``),
    ``mask`` ``(N, n)`` 1 for real nodes (all ones when None). The input is multiplied by the
    mask first, so padded nodes get exactly zero attribution (their gradient is 0) and never
    outrank real nodes. Pooling ``pool``: sum, mean or max over real nodes. No batch
    statistics: samples are independent.

    ``conv="gin"`` uses :class:`DenseGINLayer` instead (model name ``gin``): then ``adj`` is
    the *raw* (weighted) adjacency, not the normalised one.
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden: Sequence[int] = (64, 64, 64),
        pool: str = "sum",
        activation: str = "relu",
        beta: float = 10.0,
        readout: str = "last",
        conv: str = "gcn",
    ) -> None:
        super().__init__()
        check_choice("pool", pool, POOLS)
        check_choice("readout", readout, READOUTS)
        check_choice("conv", conv, CONVS)
        self.readout = readout
        if isinstance(hidden, (list, tuple)) and len(hidden) == 0:
            raise ValueError("hidden must list at least one GCN layer width")
        self.pool = pool
        n_classes = check_size("n_classes", n_classes)
        widths = [check_size("node_features", in_features), *check_sizes("hidden", hidden)]
        if conv == "gcn":
            self.layers = nn.ModuleList(
                DenseGCNLayer(a, b, make_activation(activation, beta))
                for a, b in zip(widths, widths[1:])
            )
        else:
            self.layers = nn.ModuleList(
                DenseGINLayer(a, b, lambda: make_activation(activation, beta))
                for a, b in zip(widths, widths[1:])
            )
        width = sum(widths) if readout == "concat" else widths[-1]
        self.head = nn.Sequential(
            nn.Linear(width, widths[-1]),
            make_activation(activation, beta),
            nn.Linear(widths[-1], n_classes),
        )

    def _pool(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pool == "sum":
            return h.sum(1)
        if self.pool == "mean":
            return h.sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        neg = torch.finfo(h.dtype).min
        return h.masked_fill(mask.unsqueeze(-1) == 0, neg).amax(1)

    def forward(
        self, x: torch.Tensor, adj: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if adj is None:
            raise ValueError("gcn needs adj=<(N, nodes, nodes) adjacency> (forward_kwargs)")
        if x.dim() != 3 or adj.shape != (x.shape[0], x.shape[1], x.shape[1]):
            raise ValueError(
                f"gcn needs x (N, nodes, d) and adj (N, nodes, nodes), got {tuple(x.shape)} "
                f"and {tuple(adj.shape)}"
            )
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        mask = mask.to(x.dtype)
        h = x * mask.unsqueeze(-1)
        adj = adj.to(x.dtype)
        pooled = [self._pool(h, mask)] if self.readout == "concat" else []
        for layer in self.layers:
            h = layer(h, adj, mask)
            if self.readout == "concat":
                pooled.append(self._pool(h, mask))
        g = torch.cat(pooled, dim=1) if self.readout == "concat" else self._pool(h, mask)
        return self.head(g)


def weighted_adjacency(
    weights: torch.Tensor, edge_index: torch.Tensor, n_nodes: int, edge_mask: torch.Tensor
) -> torch.Tensor:
    """Symmetric weighted adjacency ``(N, n, n)`` of undirected edge lists.

    ``weights`` ``(N, E)``, ``edge_index`` ``(N, E, 2)`` node pairs ``(i_e, j_e)`` with
    ``i_e ≠ j_e`` (each undirected edge listed once), ``edge_mask`` ``(N, E)`` 1 for real
    edges: ``A_ij = Σ_e m_e w_e ([i_e = i, j_e = j] + [i_e = j, j_e = i])``. Built by a
    scatter-add, so ``∂A_ij/∂w_e = m_e`` for both entries of edge e and 0 for padded edges.
    """
    n = weights.shape[0]
    w = weights * edge_mask.to(weights.dtype)
    idx = edge_index.long()
    fwd = idx[..., 0] * n_nodes + idx[..., 1]
    bwd = idx[..., 1] * n_nodes + idx[..., 0]
    flat = weights.new_zeros(n, n_nodes * n_nodes)
    flat = flat.scatter_add(1, fwd, w).scatter_add(1, bwd, w)
    return flat.view(n, n_nodes, n_nodes)


def gcn_propagation(adj: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The GCN propagation matrix ``D̂^{-1/2} (A + I) D̂^{-1/2}`` (Kipf & Welling, 2017) of a
    batch of (weighted) adjacencies ``(N, n, n)`` with node mask ``(N, n)``; ``D̂_ii = Σ_j (A +
    I)_ij``. Self-loops are added on real nodes only; padded rows and columns stay 0.
    Differentiable in ``adj`` (every real node has ``D̂_ii ≥ 1`` when weights are ≥ 0)."""
    a = adj * mask[:, :, None] * mask[:, None, :]
    a = a + torch.diag_embed(mask)
    deg = a.sum(-1)
    inv = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    return inv[:, :, None] * a * inv[:, None, :]


class EdgeGNN(nn.Module):
    """A :class:`GCN` or GIN whose *input* is the vector of edge weights: edge-level
    explanations (model name ``edge-gnn``).

    ``forward(x, nodes, edge_index, edge_mask, mask)``: ``x`` ``(N, E)`` weights of the
    graph's undirected edges (1 = present, 0 = removed; padded to the largest edge count),
    ``nodes`` ``(N, n, d)`` node features, ``edge_index`` ``(N, E, 2)`` the node pairs,
    ``edge_mask`` ``(N, E)`` 1 for real edges, ``mask`` ``(N, n)`` 1 for real nodes. The
    model builds ``A(x)`` (:func:`weighted_adjacency`) and runs the graph network on
    ``(nodes, P(A(x)), mask)``, with ``P`` the GCN propagation matrix (:func:`gcn_propagation`,
    ``conv="gcn"``) or the identity (``conv="gin"``: GIN aggregates with the raw weights). So the
    gradient saliency ``∂f_c/∂x_e = Σ_ij ∂f_c/∂A_ij · ∂A_ij/∂x_e = m_e (∂f_c/∂A_{i_e j_e} +
    ∂f_c/∂A_{j_e i_e})`` is the saliency of edge e, padded edges get exactly 0, and every
    explainer, attack, metric and training method works on edges unchanged. Keywords of
    :class:`GCN` (``hidden``, ``pool``, ``activation``, ``readout``) pass through.
    """

    def __init__(
        self, n_nodes: int, node_features: int, n_classes: int, conv: str = "gcn", **kw: Any
    ) -> None:
        super().__init__()
        check_choice("conv", conv, CONVS)
        self.n_nodes = check_size("n_nodes", n_nodes)
        node_features = check_size("node_features", node_features)
        self.conv = conv
        self.gnn = GCN(int(node_features), n_classes, conv=conv, **kw)

    def forward(
        self,
        x: torch.Tensor,
        nodes: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        edge_mask: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if nodes is None or edge_index is None:
            raise ValueError(
                "edge-gnn needs nodes=<(N, nodes, d)> and edge_index=<(N, E, 2)> (forward_kwargs)"
            )
        n, e = x.shape[0], x.shape[1] if x.dim() == 2 else -1
        if x.dim() != 2 or edge_index.shape != (n, e, 2) or nodes.shape[:2] != (n, self.n_nodes):
            raise ValueError(
                f"edge-gnn needs x (N, E), edge_index (N, E, 2) and nodes (N, {self.n_nodes}, d), "
                f"got {tuple(x.shape)}, {tuple(edge_index.shape)} and {tuple(nodes.shape)}"
            )
        if edge_mask is None:
            edge_mask = torch.ones_like(x)
        if mask is None:
            mask = torch.ones(nodes.shape[:2], dtype=x.dtype, device=x.device)
        mask = mask.to(x.dtype)
        adj = weighted_adjacency(x, edge_index, self.n_nodes, edge_mask)
        if self.conv == "gcn":
            adj = gcn_propagation(adj, mask)
        return self.gnn(nodes.to(x.dtype), adj=adj, mask=mask)


def _build_gcn(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    if len(input_shape) != 2:
        raise ValueError(f"gcn needs input_shape (nodes, node_features), got {tuple(input_shape)}")
    return GCN(int(input_shape[1]), n_classes, **kw)


def _build_gin(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    if len(input_shape) != 2:
        raise ValueError(f"gin needs input_shape (nodes, node_features), got {tuple(input_shape)}")
    kw = {"pool": "mean", "readout": "concat", **kw}
    return GCN(int(input_shape[1]), n_classes, conv="gin", **kw)


def _build_edge_gnn(
    input_shape: Sequence[int], n_classes: int, n_nodes: int = 0, node_features: int = 0, **kw: Any
) -> nn.Module:
    if len(input_shape) != 1:
        raise ValueError(f"edge-gnn needs input_shape (edges,), got {tuple(input_shape)}")
    for key, val in (("n_nodes", n_nodes), ("node_features", node_features)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"edge-gnn needs {key} = an int >= 1 (the dataset's), got {val!r}")
    return EdgeGNN(n_nodes, node_features, n_classes, **kw)


register_model("gcn", _build_gcn)
register_model("gin", _build_gin)
register_model("edge-gnn", _build_edge_gnn)
