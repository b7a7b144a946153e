"""Training recipes: R2ET and every baseline of Chen et al. (NeurIPS 2024) as composable terms.

A recipe is a registered :class:`MethodRow` that names its *terms* (small :class:`Term`
objects) and its default hyperparameters; :func:`get_method` builds a :class:`TrainingMethod`
(``prepare(model)``, ``loss(model, x, y)``, ``optimizer_kwargs``) from a row, and
:func:`list_methods` lists the rows. The loss of a batch is

    ``L = c · CE + Σ_terms w_t · R_t``

where ``c`` is the product of the rows' CE weights (1 unless a :class:`CEWeight` is named),
``R_t`` a term's value and ``w_t`` its weight (a hyperparameter, signed); with ``adaptive=True``
every ``w_t`` becomes ``w_t · (CE + 1) / |R_t|`` (detached, :class:`Weighting`). The terms share
one per-batch :class:`Step`, which computes the logits, the cross-entropy and the saliency (with
a graph, once) on demand. All saliency terms use the method's
:class:`~r2et.explain.Explainer`, so the saliency that is trained is the saliency that is
attacked and measured.

================ ============================================================== ===============
method           loss                                                           terms
================ ============================================================== ===============
``vanilla``      ``CE``                                                         (none)
``wd``           ``CE``, weight decay in the optimiser (``weight_decay``)       WeightDecay
``sp``           ``CE`` on the model with every ``nn.ReLU`` replaced by         SoftplusModel
                 ``Softplus(beta)``
``est-h``        ``CE + mu · ‖(g(x + h v) − g(x)) / h‖₂``, ``v = sign(g(x))``   FiniteDiffHess
                 (finite-difference Hessian norm along the gradient sign)
``exact-h``      ``CE + mu · ‖∇²ₓ f(x)‖_F`` (exact per-sample input Hessian)    ExactHessian
``ssr``          ``(1 − alpha) CE + alpha · beta · λ_max(Lᵀ J Jᵀ L)`` (smoothed CEWeight, SSR
                 geometry, Wang et al., NeurIPS 2020)
``at``           ``CE(x') + lam · (−gap_T(ŝ(x')))``, x' from an inner ERAttack, AdversarialPoint,
                 T the top-k at x                                               RankingGap
``r2et``         ``CE + lam · (−gap_T(ŝ(x)))`` on the data's own explanation,   RankingGap
                 lam 0.03 (one-hot tables suggest 0.3, ``ds.default_params``); the
                 default (issue 28: every Hessian probe tried on one-hot tables
                 bought stability with locality)
``r2et-paper``   the paper's R2ET: ``CE + lam · (−gap_T(ŝ(x))) + mu · est-h     RankingGap,
                 term``, the est-h term along ``sign(a(x))`` on the attribution FiniteDiffHess
``r2et-data``    ``CE + lam · (−gap_T) + mu · ‖∇f(x + h v) − ∇f(x)‖₂ /          RankingGap,
                 (h ‖∇f(x)‖₂)``, v towards the next input of the batch, ∇f the  FiniteDiffHess
                 model's gradient whatever the attribution                      (data, gradient)
``r2et-anchor``  ``CE + rho · (−gap_A(ŝ(x)))``, A the top-k of the model as     AnchoredGap
                 training started (a frozen copy): fine-tuning thickens each
                 input's own pre-trained ranking instead of one shared top-k
``r2et-keep``    ``CE + lam · (−gap_T(ŝ(x))) + rho · (−gap_A(ŝ(x)))``: the      RankingGap,
                 default gap with each input's pre-trained ranking held         AnchoredGap
``r2et-profile`` ``CE + lam · (−gap_T(ŝ(x))) + rho · KL(P_ref ‖ P)``, P the      RankingGap,
                 batch's mean saliency shares, P_ref the starting model's: the  ProfileAnchor
                 gap with the population's profile held (fine-tuning; issue 28)
``r2et-mm``      as ``r2et-paper`` with the gap between the ``m`` weakest top-k (as r2et-paper,
                 and the ``m`` strongest other features                         ``m``)
``r2et-noh``     ``r2et-paper`` without the Hessian term (the paper's R2ET\\H,  RankingGap
                 lam 0.01)
``r2et-mm-noh``  ``r2et-mm`` without the Hessian term (R2ET-mm\\H)               RankingGap
``r2et-exp-noh`` ``CE + lam · mean_{i∈T, j∉T} exp(−(ŝ_i − ŝ_j))``: the paper's  PairwiseExp
                 exponential pair form without the Hessian term (a pair's pull
                 fades once it is apart; issue 28, not the default)
``r2et-cert``    ``CE + lam · (−gap_T(s_l, s_u))``: the gap on *certified*      CertifiedGap
                 score bounds, ``mean_{i∈T} s_l_i − mean_{j∉T} s_u_j`` over the
                 l_inf ball of radius ``cert_eps`` (:mod:`r2et.certify`; ReLU
                 MLPs)
================ ============================================================== ===============

(``FiniteDiffHess`` is :class:`FiniteDifferenceHessian`, ``SSR`` :class:`SmoothedGeometry`,
``SoftplusModel`` :class:`SoftplusActivations`.)

Adding a method is one registration and touches no code here::

    register_method("gap-only-l2", MethodRow("CE + lam * (-RMS-normalised top-k gap)",
                    terms=(RankingGap(),), defaults={"normalize": "l2"}, weight_name="lam"))
    get_method("gap-only-l2", k=8)  # hyperparameters: normalize, lam (the term's default), adaptive

A new kind of term subclasses :class:`Term` (``value(step)`` and the hyperparameters it reads);
:func:`registered_method` registers a row for the duration of a ``with`` block (tests).

Notation: ``g(x)`` is the explainer's attribution of the explained output (gradient saliency by
default), ``s(x) = |g(x)|`` the per-feature scores, ``T`` the current top-k of ``s(x)``
(indices detached), and ``gap_T(s) = mean_{i∈T} s_i − mean_{j∉T} s_j``, which equals R2ET's
pairwise form ``1/(k(F−k)) Σ_{i∈T} Σ_{j∉T} (s_i − s_j)``.

Which output the explainer differentiates, by default, and why:

* ranking terms (``r2et`` family, ``at``) use ``output="logit"``: that is the saliency the
  attacks and the evaluation rank. With ``output="loss"`` and raw scores the gap can be
  "bought" by confident mistakes (the loss gradient grows with the loss): on Adult, lam = 1
  took test accuracy from 0.857 to 0.20. The gap is *scale-free* by default (``normalize="mean"``:
  scores divided by their per-sample mean, ``ŝ = s / mean_j s_j``), so it cannot grow by
  scaling the logits either: only a larger *relative* margin between the top-k and the rest,
  which is what a ranking needs, helps.
* ``est-h`` and ``exact-h`` use ``output="loss"`` as in the paper: the Hessian of the
  cross-entropy keeps the softmax curvature, whereas a ReLU network's logit has zero input
  Hessian almost everywhere (``exact-h`` on logits would regularise nothing). The
  finite-difference term of the ``r2et`` family uses the ranking explainer (logit), with a step
  ``h`` on the scale of an l_inf attack budget, so that it sees the changes of the gradient
  across nearby ReLU regions which an infinitesimal Hessian cannot.
* ``ssr`` is defined on the Jacobian of the logits (the Gauss-Newton Hessian of the loss) and
  does not use the explainer.

``adaptive=True`` (every regularised method) replaces each weight ``w`` of a term ``R`` by
``w · (CE + 1) / |R|`` (detached), which keeps the terms on the scale of the loss as the
authors' code does. Per-sample gradients come from one backward pass over the summed batch output:
exact when samples do not interact (no batch statistics in train mode), as everywhere in r2et.

Layout: :mod:`~r2et.methods.base` (the contract of a term and of a row, :class:`Step`, the
registry, :func:`method_row`), :mod:`~r2et.methods.gaps` (the gap and the score
normalisation), :mod:`~r2et.methods.saliency` (attribution, Hessian and SSR helpers, the
BatchNorm warning), one file per family of terms (:mod:`~r2et.methods.ranking`,
:mod:`~r2et.methods.hessian`, :mod:`~r2et.methods.smoothing`, :mod:`~r2et.methods.certified`,
:mod:`~r2et.methods.adversarial`, :mod:`~r2et.methods.simple`), :mod:`~r2et.methods.table`
(the rows above) and :mod:`~r2et.methods.training` (:class:`TrainingMethod`,
:func:`get_method`).
"""

import r2et.methods.table as table  # noqa: F401  (registers the built-in rows, in order)
from r2et.methods.adversarial import AdversarialPoint
from r2et.methods.base import (
    METHODS,
    MethodRow,
    Part,
    Step,
    Term,
    Weighting,
    list_methods,
    method_row,
    register_method,
    registered_method,
    unregister_method,
)
from r2et.methods.certified import CertifiedGap
from r2et.methods.gaps import (
    NORMALIZATIONS,
    normalize_scores,
    ranking_gap,
    score_scale,
    topk_gap_of,
)
from r2et.methods.hessian import ExactHessian, FiniteDifferenceHessian
from r2et.methods.ranking import (
    AnchoredGap,
    PairwiseExp,
    PathThickness,
    ProfileAnchor,
    RankingGap,
    profile_kl,
    saliency_profile,
)
from r2et.methods.saliency import (
    Target,
    batch_statistics_layers,
    input_hessian,
    ssr_term,
    warn_batch_statistics,
)
from r2et.methods.simple import CEWeight, SoftplusActivations, WeightDecay
from r2et.methods.smoothing import SmoothedGeometry
from r2et.methods.training import TrainingMethod, get_method, method_from_config

__all__ = [
    "METHODS",
    "NORMALIZATIONS",
    "AdversarialPoint",
    "AnchoredGap",
    "CEWeight",
    "CertifiedGap",
    "ExactHessian",
    "FiniteDifferenceHessian",
    "MethodRow",
    "PairwiseExp",
    "Part",
    "PathThickness",
    "ProfileAnchor",
    "RankingGap",
    "SmoothedGeometry",
    "SoftplusActivations",
    "Step",
    "Target",
    "Term",
    "TrainingMethod",
    "WeightDecay",
    "Weighting",
    "batch_statistics_layers",
    "get_method",
    "input_hessian",
    "list_methods",
    "method_from_config",
    "method_row",
    "normalize_scores",
    "profile_kl",
    "ranking_gap",
    "register_method",
    "registered_method",
    "saliency_profile",
    "score_scale",
    "ssr_term",
    "topk_gap_of",
    "unregister_method",
    "warn_batch_statistics",
]
