"""Model zoo: small architectures for tabular, image and graph data, built from a JSON spec.

``build_model(name, input_shape, n_classes, **kw)`` returns an ``nn.Module`` whose
``r2et_spec`` attribute is a JSON-ready dict; ``build_model(**spec)`` rebuilds it, which is how
checkpoints restore models without unpickling.

* ``mlp`` (any input, flattened), ``cnn`` (two conv blocks, ``(C, 28|32, 28|32)``),
* ``resnet9`` (ResNet-9 for CIFAR-sized ``(C, 32, 32)``; GroupNorm by default, see
  :class:`ResNet9`),
* ``gcn`` (dense GCN on padded graphs ``(nodes, d)``, called as ``model(x, adj=..., mask=...)``
  with the dataset's ``forward_kwargs``),
* ``gin`` (dense GIN, Xu et al. 2019: sum aggregation over the *raw* adjacency ``adj``, mean
  pooling and a readout of every layer by default),
* ``edge-gnn`` (a GCN or GIN taking the graph's edge weights as its input ``(edges,)``, for
  edge-level explanations; :class:`EdgeGNN`).

Nonlinearities are ``nn.ReLU`` modules (never functional), so :func:`relu_to_softplus` can swap
them; no model except ``resnet9(norm="batch")`` has batch statistics.

For any ``nn.Module``: :func:`eval_mode` (attacks and evaluation), :func:`second_order` (the
math attention kernel around every double backward; fused attention has none) and
:func:`adapt_output` (a model returning a dict or tuple seen as one returning logits).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from r2et._checks import MAX_PARAMETERS, check_choice, check_positive, check_size, check_sizes
from r2et._registry import Registry
from r2et._second_order import second_order as second_order  # public: r2et.models.second_order

ACTIVATIONS = ("relu", "softplus")


#: The largest Softplus ``beta`` accepted (float32 Softplus overflows long before 1e300; a
#: beta of 1e4 is already a ReLU to 4 decimals at unit scale).
MAX_SOFTPLUS_BETA = 1e6


def check_beta(beta: Any) -> None:
    """``ValueError`` unless ``beta`` is a real number with ``0 < beta <= MAX_SOFTPLUS_BETA``."""
    check_positive("beta", beta)
    if not float(beta) <= MAX_SOFTPLUS_BETA:
        raise ValueError(f"beta={beta!r} is outside (0, {MAX_SOFTPLUS_BETA:g}]")


def _activation(name: str, beta: float) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    if name == "softplus":
        check_beta(beta)
    return nn.ReLU() if name == "relu" else nn.Softplus(beta=beta)


class Standardize(nn.Module):
    """Fixed per-channel standardisation ``(x - mean_c) / std_c`` as the first layer of a
    model, so data, attack bounds and budgets stay in pixel units while the network sees
    standardised inputs. No batch statistics: each sample is standardised on its own. The
    constants are buffers, so checkpoints carry them.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        m = torch.as_tensor([float(v) for v in mean])
        s = torch.as_tensor([float(v) for v in std])
        if m.shape != s.shape or m.dim() != 1 or not bool((s > 0).all()):
            raise ValueError(
                f"input_norm needs [mean, std] lists of one value per channel with std > 0, "
                f"got mean={list(mean)} and std={list(std)}"
            )
        self.register_buffer("mean", m.view(-1, 1, 1))
        self.register_buffer("std", s.view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _input_norm(spec: Sequence[Sequence[float]] | None, channels: int) -> nn.Module:
    """``Standardize(*spec)`` (checked against ``channels``), or the identity for None."""
    if spec is None:
        return nn.Identity()
    if len(spec) != 2:
        raise ValueError(f"input_norm must be [mean, std], got {spec!r}")
    layer = Standardize(*spec)
    if layer.mean.numel() != channels:
        raise ValueError(f"input_norm has {layer.mean.numel()} channels, the input has {channels}")
    return layer


class MLP(nn.Module):
    """Fully connected classifier: ``Linear → act`` per hidden size, then ``Linear`` to logits.
    Inputs of any shape ``(N, ...)`` are flattened."""

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        beta: float = 10.0,
    ) -> None:
        super().__init__()
        width = check_size("in_features", in_features)
        n_classes = check_size("n_classes", n_classes)
        layers: list[nn.Module] = [nn.Flatten()]
        for h in check_sizes("hidden", hidden):
            layers += [nn.Linear(width, h), _activation(activation, beta)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks (``conv3×3 → act → maxpool2``) and a two-layer head, for 28×28 or 32×32
    images with any number of channels; ``input_norm=[mean, std]`` (one value per channel)
    puts a :class:`Standardize` layer first."""

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        n_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        activation: str = "relu",
        beta: float = 10.0,
        input_norm: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        in_channels = check_size("in_channels", in_channels)
        for key, side in (("height", height), ("width", width)):
            if check_size(key, side) < 4:
                raise ValueError(
                    f"cnn needs images of at least 4x4 pixels (two 2x2 pools), got {key}={side}"
                )
        c1, c2 = check_sizes("channels", channels, length=2)
        hidden = check_size("hidden", hidden)
        n_classes = check_size("n_classes", n_classes)
        self.features = nn.Sequential(
            _input_norm(input_norm, in_channels),
            nn.Conv2d(in_channels, c1, 3, padding=1),
            _activation(activation, beta),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            _activation(activation, beta),
            nn.MaxPool2d(2),
        )
        flat = c2 * (height // 4) * (width // 4)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            _activation(activation, beta),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


NORMS = ("group", "batch", "none")
POOLS = ("sum", "mean", "max")
READOUTS = ("last", "concat")


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    return nn.Identity()


class _ConvBlock(nn.Sequential):
    """``conv3×3 → norm → act`` (→ ``maxpool2`` when ``pool``)."""

    def __init__(
        self, c_in: int, c_out: int, norm: str, groups: int, act: nn.Module, pool: bool
    ) -> None:
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none")]
        layers += [_norm(norm, c_out, groups), act]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class _Residual(nn.Module):
    """``x + f(x)`` for two conv blocks ``f`` that keep the shape."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """ResNet-9 (the DAWNBench CIFAR-10 network of D. Page, 2018) for 32×32 images:

    ``prep(w) → [conv(2w) + pool, res(2w)] → conv(4w) + pool → [conv(8w) + pool, res(8w)]
    → global max-pool → Linear``, each conv ``3×3 → norm → act``.

    ``norm="group"`` (default, GroupNorm with ``groups`` groups) keeps samples independent, so
    per-sample input gradients are exact in train and eval mode alike; ``norm="batch"``
    (BatchNorm) mixes samples through batch statistics in train mode, so per-sample gradients
    are exact only in eval mode; ``norm="none"`` uses biased convs without normalisation.
    ``input_norm=[mean, std]`` puts a fixed per-channel :class:`Standardize` layer first (the
    official code standardises its inputs; here it lives in the model so attacks work in
    pixel units). Activations are ``nn.ReLU`` modules (or Softplus), so
    :func:`relu_to_softplus` applies.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: int = 64,
        norm: str = "group",
        groups: int = 8,
        activation: str = "relu",
        beta: float = 10.0,
        input_norm: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        check_choice("norm", norm, NORMS)
        w = check_size("width", width)
        in_channels = check_size("in_channels", in_channels)
        groups = check_size("groups", groups)
        n_classes = check_size("n_classes", n_classes)

        def block(c_in: int, c_out: int, pool: bool = False) -> nn.Module:
            return _ConvBlock(c_in, c_out, norm, groups, _activation(activation, beta), pool)

        self.features = nn.Sequential(
            _input_norm(input_norm, in_channels),
            block(in_channels, w),
            block(w, 2 * w, pool=True),
            _Residual(nn.Sequential(block(2 * w, 2 * w), block(2 * w, 2 * w))),
            block(2 * w, 4 * w, pool=True),
            block(4 * w, 8 * w, pool=True),
            _Residual(nn.Sequential(block(8 * w, 8 * w), block(8 * w, 8 * w))),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8 * w, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


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
                DenseGCNLayer(a, b, _activation(activation, beta))
                for a, b in zip(widths, widths[1:])
            )
        else:
            self.layers = nn.ModuleList(
                DenseGINLayer(a, b, lambda: _activation(activation, beta))
                for a, b in zip(widths, widths[1:])
            )
        width = sum(widths) if readout == "concat" else widths[-1]
        self.head = nn.Sequential(
            nn.Linear(width, widths[-1]),
            _activation(activation, beta),
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


def _build_mlp(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    f = 1
    for d in input_shape:
        f *= int(d)
    return MLP(f, n_classes, **kw)


def _build_cnn(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs input_shape (C, H, W), got {tuple(input_shape)}")
    c, h, w = (int(d) for d in input_shape)
    return SmallCNN(c, h, w, n_classes, **kw)


def _build_resnet9(input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"resnet9 needs input_shape (C, H, W), got {tuple(input_shape)}")
    if min(int(d) for d in input_shape[1:]) < 8:
        raise ValueError(
            f"resnet9 needs images of at least 8x8 pixels (three 2x2 pools), got input_shape "
            f"{tuple(input_shape)}"
        )
    return ResNet9(int(input_shape[0]), n_classes, **kw)


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


MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
for _name, _builder in (
    ("mlp", _build_mlp),
    ("cnn", _build_cnn),
    ("resnet9", _build_resnet9),
    ("gcn", _build_gcn),
    ("gin", _build_gin),
    ("edge-gnn", _build_edge_gnn),
):
    MODELS.register(_name, _builder)


def register_model(name: str, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder(input_shape, n_classes, **kw) -> nn.Module`` as model ``name`` (then
    :func:`build_model`, run folders and the bench know it)."""
    if not callable(builder):
        raise ValueError(f"register_model needs a builder function, got {builder!r}")
    MODELS.register(name, builder)
    return builder


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(MODELS.names())


def build_model(name: str, input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    """Build model ``name`` for inputs of shape ``input_shape`` (without the batch dimension)
    and ``n_classes`` outputs; the JSON spec is stored as ``model.r2et_spec``."""
    check_choice("name", name, list_models())
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
    shape = check_sizes("input_shape", input_shape, min_len=1)
    try:
        model = MODELS.get(name)(shape, n_classes, **kw)
    except TypeError as err:
        raise ValueError(f"bad keyword arguments for model {name!r}: {err}") from None
    model.r2et_spec = {
        "name": name,
        "input_shape": shape,
        "n_classes": n_classes,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
    }
    return model


def count_model_parameters(spec: dict[str, object], where: str = "model spec") -> int:
    """Build ``spec`` (keywords of :func:`~r2et.build_model`) on the ``meta`` device, where
    nothing is allocated, and return its parameter count; raise ``ValueError`` for a spec
    that does not build or exceeds :data:`MAX_PARAMETERS`."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a table of build_model keywords, got {spec!r}")
    try:
        with torch.device("meta"):
            model = build_model(**spec)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        msg = " ".join(str(err).split())
        raise ValueError(f"{where} does not describe a model ({msg})") from None
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{where} describes a model of {count:,} parameters; the limit is {MAX_PARAMETERS:,}"
        )
    return count


def relu_to_softplus(model: nn.Module, beta: float = 10.0, inplace: bool = False) -> nn.Module:
    """Replace every ``nn.ReLU`` module (nested, in-place or not) by ``nn.Softplus(beta)``.

    ``softplus_β(z) = log(1 + e^{βz})/β`` → ReLU as β → ∞, so a large β keeps the function while
    giving the input-gradient curvature (Dombrowski et al., NeurIPS 2019). Returns a copy unless
    ``inplace``; parameters are copied, not shared. ReLUs applied functionally
    (``F.relu``/``torch.relu`` inside ``forward``) cannot be seen and are left unchanged.
    """
    check_beta(beta)
    target = model if inplace else copy.deepcopy(model)
    for name, child in list(target.named_children()):
        if isinstance(child, nn.ReLU):
            setattr(target, name, nn.Softplus(beta=beta))
        else:
            relu_to_softplus(child, beta, inplace=True)
    return target


def has_relu(model: nn.Module) -> bool:
    """True if any submodule is an ``nn.ReLU``."""
    return any(isinstance(m, nn.ReLU) for m in model.modules())


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run ``model`` in eval mode inside the block and restore its previous mode afterwards
    (anything that is not an ``nn.Module`` is left alone). Attacks and evaluation measure the
    model as it is deployed: no dropout, BatchNorm with its running statistics."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class OutputAdapter(nn.Module):
    """A model whose output is not a logits tensor, seen as one that returns ``(N, C)`` logits.

    ``output`` picks the logits out of what ``model`` returns: a callable
    (``lambda out: out["logits"]``), a string (a mapping key, else an attribute: Hugging
    Face's ``ModelOutput`` has both) or an int (a tuple/list position). Everything in r2et
    (training, explainers, attacks, evaluation) calls the adapter like any model; the
    parameters, train/eval mode and device are those of the wrapped ``model`` (a submodule,
    so the adapter's ``state_dict`` keys start with ``model.``). Forward keywords pass through.
    """

    def __init__(self, model: nn.Module, output: Callable[[Any], torch.Tensor] | str | int) -> None:
        super().__init__()
        if not (callable(output) or isinstance(output, (str, int))) or isinstance(output, bool):
            raise ValueError(
                f"output must be a callable, a key (str) or a position (int), got {output!r}"
            )
        self.model = model
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.model(*args, **kwargs)
        if callable(self.output):
            return self.output(out)
        if isinstance(self.output, int):
            return out[self.output]
        try:
            return out[self.output]
        except (KeyError, TypeError, IndexError):
            if hasattr(out, self.output):
                return getattr(out, self.output)
            raise ValueError(
                f"the model's output ({type(out).__name__}) has no key or attribute {self.output!r}"
            ) from None


def adapt_output(model: nn.Module, output: Callable[[Any], torch.Tensor] | str | int) -> nn.Module:
    """``model`` as a module returning logits; see :class:`OutputAdapter`.

    Example: ``fit(adapt_output(hf_like, "logits"), ...)``, ``adapt_output(net, 0)`` for a
    model returning ``(logits, aux)``."""
    return OutputAdapter(model, output)
