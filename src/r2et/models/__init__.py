"""Model zoo: small architectures for tabular, image and graph data, built from a JSON spec.

``build_model(name, input_shape, n_classes, **kw)`` returns an ``nn.Module`` whose
``r2et_spec`` attribute is a JSON-ready dict; ``build_model(**spec)`` rebuilds it, which is how
checkpoints restore models without unpickling. The registry, and the contract every model entry
meets, are in :mod:`r2et.models.base`.

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

from r2et._checks import MAX_PARAMETERS
from r2et._second_order import second_order
from r2et.models.base import (
    MODELS,
    build_model,
    count_model_parameters,
    list_models,
    register_model,
)
from r2et.models.layers import ACTIVATIONS, MAX_SOFTPLUS_BETA, Standardize, check_beta

# The entry files register their builders when imported, in this order (mlp, cnn, resnet9,
# gcn, gin, edge-gnn): keep it, MODELS.names() lists models in registration order.
# isort: off
from r2et.models.mlp import MLP
from r2et.models.cnn import NORMS, ResNet9, SmallCNN
from r2et.models.gnn import (
    CONVS,
    GCN,
    POOLS,
    READOUTS,
    DenseGCNLayer,
    DenseGINLayer,
    EdgeGNN,
    gcn_propagation,
    weighted_adjacency,
)

# isort: on
from r2et.models.transforms import (
    OutputAdapter,
    adapt_output,
    eval_mode,
    has_relu,
    relu_to_softplus,
)

__all__ = [
    "ACTIVATIONS",
    "CONVS",
    "GCN",
    "MAX_PARAMETERS",
    "MAX_SOFTPLUS_BETA",
    "MLP",
    "MODELS",
    "NORMS",
    "POOLS",
    "READOUTS",
    "DenseGCNLayer",
    "DenseGINLayer",
    "EdgeGNN",
    "OutputAdapter",
    "ResNet9",
    "SmallCNN",
    "Standardize",
    "adapt_output",
    "build_model",
    "check_beta",
    "count_model_parameters",
    "eval_mode",
    "gcn_propagation",
    "has_relu",
    "list_models",
    "register_model",
    "relu_to_softplus",
    "second_order",
    "weighted_adjacency",
]
