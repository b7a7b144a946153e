"""The built-in training methods: one :class:`~r2et.methods.base.MethodRow` per recipe,
registered in the design's order (:func:`r2et.methods.list_methods` lists them so); see
:mod:`r2et.methods` for the table of their losses."""

from __future__ import annotations

from r2et.methods.adversarial import AdversarialPoint
from r2et.methods.base import MethodRow, register_method
from r2et.methods.certified import CertifiedGap
from r2et.methods.hessian import ExactHessian, FiniteDifferenceHessian
from r2et.methods.ranking import (
    AnchoredGap,
    PairwiseExp,
    PathThickness,
    ProfileAnchor,
    RankingGap,
)
from r2et.methods.simple import CEWeight, SoftplusActivations, WeightDecay
from r2et.methods.smoothing import SmoothedGeometry

_R2ET_DEFAULTS = {"lam": 0.01, "mu": 0.1, "h": 0.3, "normalize": "mean", "adaptive": False}
_NOH_DEFAULTS = {k: v for k, v in _R2ET_DEFAULTS.items() if k not in ("mu", "h")}
_AT_DEFAULTS = {"lam": 0.1, "at_steps": 10, "at_eps": 0.3, "at_step_size": None,
                "normalize": "mean", "adaptive": False}  # fmt: skip

for _name, _row in {
    "vanilla": MethodRow("cross-entropy"),
    "wd": MethodRow("cross-entropy + optimiser weight decay", (WeightDecay(),), {}, "weight_decay"),
    "sp": MethodRow(
        "cross-entropy on a Softplus(beta) copy of a ReLU model",
        (SoftplusActivations(),),
        {},
        "beta",
    ),
    "est-h": MethodRow(
        "CE + mu * finite-difference input-Hessian norm along sign(g)",
        (FiniteDifferenceHessian(),),
        {"mu": 0.01, "h": 0.3, "adaptive": False},
        "mu",
        output="loss",
    ),
    "exact-h": MethodRow(
        "CE + mu * Frobenius norm of the exact per-sample input Hessian",
        (ExactHessian(),),
        {"mu": 0.01, "max_features": 512, "adaptive": False},
        "mu",
        output="loss",
    ),
    "ssr": MethodRow(
        "(1 - alpha) CE + alpha * beta * top eigenvalue of the Gauss-Newton input Hessian",
        (CEWeight("alpha", complement=True), SmoothedGeometry()),
        {"alpha": 0.5, "beta": 0.01, "adaptive": False},
        "beta",
    ),
    "at": MethodRow(
        "CE at an ERAttack point x' + lam * (-scale-free top-k gap at x')",
        (AdversarialPoint(), RankingGap()),
        _AT_DEFAULTS,
        "lam",
    ),
    "r2et": MethodRow(
        "CE + lam * (-top-k gap) on the data's own explanation, no Hessian term (on one-hot "
        "tables every Hessian probe tried bought stability with locality); lam 0.03, a "
        "dataset may suggest its own (one-hot tables: 0.3)",
        (RankingGap(),),
        {**_NOH_DEFAULTS, "lam": 0.03},
        "lam",
    ),
    "r2et-paper": MethodRow(
        "the paper's R2ET: CE + lam * (-top-k gap) + mu * est-h term along sign(attribution)",
        (RankingGap(), FiniteDifferenceHessian()),
        _R2ET_DEFAULTS,
        "lam",
    ),
    "r2et-data": MethodRow(
        "CE + lam * (-top-k gap) + mu * finite-difference curvature of the model's gradient "
        "towards the next input of the batch (a data direction, not sign(a))",
        (RankingGap(), FiniteDifferenceHessian(direction="data", on="gradient")),
        {**_R2ET_DEFAULTS, "lam": 0.3},
        "lam",
    ),
    "r2et-anchor": MethodRow(
        "CE + rho * (-top-k gap) around each input's top-k under the model as training "
        "started (fine-tuning: the pre-trained ranking is kept and thickened)",
        (AnchoredGap(),),
        {"rho": 0.3, "normalize": "mean", "adaptive": False},
        "rho",
    ),
    "r2et-keep": MethodRow(
        "CE + lam * (-top-k gap) + rho * (-top-k gap around the starting model's top-k): "
        "R2ET's gap with each input's pre-trained ranking held (fine-tuning)",
        (RankingGap(), AnchoredGap()),
        {**_NOH_DEFAULTS, "lam": 0.03, "rho": 0.3},
        "lam",
    ),
    "r2et-profile": MethodRow(
        "CE + lam * (-top-k gap) + rho * KL(the starting model's saliency profile || the "
        "model's): R2ET's gap with the population's profile held (fine-tuning)",
        (RankingGap(), ProfileAnchor()),
        {**_NOH_DEFAULTS, "lam": 0.5, "rho": 1.0},
        "lam",
    ),
    "r2et-mm": MethodRow(
        "CE + lam * (-gap of the m weakest top-k vs m strongest others) + mu * est-h term",
        (RankingGap(boundary=True), FiniteDifferenceHessian()),
        {**_R2ET_DEFAULTS, "m": 1},
        "lam",
    ),
    "r2et-noh": MethodRow(
        "CE + lam * (-top-k gap) (R2ET without the Hessian term)",
        (RankingGap(),),
        _NOH_DEFAULTS,
        "lam",
    ),
    "r2et-mm-noh": MethodRow(
        "CE + lam * (-gap of the m weakest top-k vs m strongest others)",
        (RankingGap(boundary=True),),
        {**_NOH_DEFAULTS, "m": 1},
        "lam",
    ),
    "r2et-sp": MethodRow(
        "the official code's default: Softplus(beta) activations + lam * (-top-k gap) "
        "+ mu * est-h term + nu * (-one-sample thickness), adaptive weights",
        (SoftplusActivations(), RankingGap(), FiniteDifferenceHessian(), PathThickness()),
        {**_R2ET_DEFAULTS, "nu": 0.01, "tx_radius": 0.3, "adaptive": True},
        "lam",
    ),
    "r2et-loss": MethodRow(
        "CE + lam * (-top-k gap) + mu * est-h term, on the loss-gradient saliency",
        (RankingGap(), FiniteDifferenceHessian()),
        _R2ET_DEFAULTS,
        "lam",
        output="loss",
    ),
    "r2et-exp": MethodRow(
        "CE + lam * mean over top-k/other pairs of exp(-(s_i - s_j)) + mu * est-h term",
        (PairwiseExp(), FiniteDifferenceHessian()),
        {**_R2ET_DEFAULTS},
        "lam",
    ),
    "r2et-exp-noh": MethodRow(
        "CE + lam * mean over top-k/other pairs of exp(-(s_i - s_j)), no Hessian term: a "
        "pair's push fades once it is apart, so an input whose ranking is already thick "
        "is left alone",
        (PairwiseExp(),),
        {**_NOH_DEFAULTS, "lam": 1.0},
        "lam",
    ),
    "r2et-adaptive": MethodRow(
        "R2ET with adaptive weights: w * (CE + 1)/|R| per term (detached)",
        (RankingGap(), FiniteDifferenceHessian()),
        {**_R2ET_DEFAULTS, "adaptive": True},
        "lam",
    ),
    "r2et-cert": MethodRow(
        "CE + lam * (-scale-free top-k gap of certified score bounds over the cert_eps ball)",
        (CertifiedGap(),),
        {"lam": 0.1, "cert_eps": 0.05, "normalize": "mean", "adaptive": False},
        "lam",
    ),
}.items():
    register_method(_name, _row)
del _name, _row
