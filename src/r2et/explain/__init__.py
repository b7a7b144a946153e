"""Differentiable, batched saliency explanations.

An :class:`Explainer` turns a model and a batch of inputs into attributions (same shape as
the input) and into per-feature importance *scores* ``s(x)`` of shape ``(N, F)``:

* ``grad`` (gradient saliency, Simonyan et al. 2014):   ``a(x) = ∂f_c(x)/∂x``
* ``grad_x_input`` (Shrikumar et al. 2016):             ``a(x) = x ⊙ ∂f_c(x)/∂x``
* ``smoothgrad`` (Smilkov et al. 2017):                 ``a(x) = 1/S Σ_s ∂f_c(x + ε_s)/∂x``,
  ``ε_s ~ N(0, σ²)``
* ``ig`` (integrated gradients, Sundararajan et al. 2017):
  ``a(x) = (x − x̄) ⊙ Σ_m w_m ∂f_c(x̄ + α_m (x − x̄))/∂x`` with quadrature nodes ``α_m`` and
  weights ``w_m`` (Riemann rules or Gauss-Legendre, as in Captum).

``f_c`` is the *output* being explained: the logit of the target class (default), its softmax
probability, or the cross-entropy loss of the target. The importance of a feature is
``|a(x)|``, summed over the channel axis of images ``(N, C, H, W)`` and over the node-feature
axis of graphs ``(N, nodes, d)``. With feature ``groups`` (a partition of the columns, e.g. the
one-hot columns of one tabular attribute) the score of a group is the sum of its columns' scores,
``s_g(x) = Σ_{j∈g} |a_j(x)|``, so what is ranked is the attributes, not the columns.

Every method accepts ``create_graph=True``, so a loss of the explanation (R2ET's ranking
regulariser, an attack objective) can be back-propagated to the input and to the parameters.
Per-sample gradients come from one backward pass over the summed batch output; this is exact
when samples do not interact (eval mode, no batch statistics).

The package holds one file per part: :mod:`~r2et.explain.base` (the contract of an
explainer entry and the ``EXPLAINERS`` registry), :mod:`~r2et.explain.units` (scores, groups,
quadrature), one file per rule family (:mod:`~r2et.explain.gradient`,
:mod:`~r2et.explain.integrated_gradients`, :mod:`~r2et.explain.smoothgrad`) and
:mod:`~r2et.explain.engine` (:class:`Explainer`).
"""

from __future__ import annotations

from r2et.explain.base import (
    EXPLAINERS,
    AttributionRule,
    GradientFn,
    list_explainers,
    register_explainer,
)
from r2et.explain.engine import (
    OUTPUTS,
    Explainer,
    as_explainer,
    check_second_order,
    repeat_batch,
    repeat_forward_kwargs,
    repeat_rows,
    select_output,
)

# the rule files register on import, in this order (list_explainers() follows it): grad,
# grad_x_input (gradient.py), ig (integrated_gradients.py), smoothgrad (smoothgrad.py)
from r2et.explain.gradient import Gradient, GradientXInput
from r2et.explain.integrated_gradients import IntegratedGradients
from r2et.explain.smoothgrad import SmoothGrad
from r2et.explain.units import (
    IG_RULES,
    REDUCTIONS,
    group_index,
    quadrature,
    reduce_scores,
    sum_columns,
)

__all__ = [
    "EXPLAINERS",
    "IG_RULES",
    "OUTPUTS",
    "REDUCTIONS",
    "AttributionRule",
    "Explainer",
    "Gradient",
    "GradientFn",
    "GradientXInput",
    "IntegratedGradients",
    "SmoothGrad",
    "as_explainer",
    "check_second_order",
    "group_index",
    "list_explainers",
    "quadrature",
    "reduce_scores",
    "register_explainer",
    "repeat_batch",
    "repeat_forward_kwargs",
    "repeat_rows",
    "select_output",
    "sum_columns",
]
