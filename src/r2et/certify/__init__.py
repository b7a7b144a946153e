"""Certified top-k explanations: a radius within which an explanation's top-k set provably
stays the same.

An attack can only show that an explanation is fragile; a certificate shows that it is stable.
:func:`certified_radius` returns, for every input, a radius and a certified P@k lower bound
at a grid of radii, by one of two methods:

``"deterministic"`` (l_inf, exact arithmetic bounds; ReLU or Softplus MLPs and small
sequential CNNs, logit saliency)
    Interval bound propagation (IBP; Gowal et al. 2018) of the input box
    ``B = {x' : ‖x' − x‖_∞ <= r}`` (intersected with the data box ``bounds`` if given)
    through the network gives each hidden unit an interval ``[l, u]`` of pre-activations.
    Units with ``l > 0`` are active on all of ``B`` and units with ``u <= 0`` inactive, so
    their ReLU derivative (mask) is fixed; the others are *unstable*, with mask in ``{0, 1}``.
    The logit gradient of class ``c`` is ``g(x') = W_L[c] D_{L−1}(x') W_{L−1} … D_1(x') W_1``;
    propagating the row vector backwards with interval arithmetic (fixed masks exact,
    unstable masks ``[min(0, v_l), max(0, v_u)]``, a linear map in centre-radius form
    ``c·W, r·|W|``) gives ``g_j(x') ∈ [g_l, g_u]`` for every ``x' ∈ B`` (interval bounds on the
    gradient, as in Wicker et al., ICLR 2023). Scores ``s_j = |g_j|`` (or ``|x_j g_j|``,
    summed over groups/channels) then lie in ``[s_l, s_u]``. A top-k feature ``i ∈ T`` (T =
    top-k of ``s(x)``) is certified to stay in the top-k on ``B`` when fewer than k other
    features ``j`` can reach it, ``#{j ≠ i : s_u_j >= s_l_i} <= k − 1``; the top-k *set* is
    certified when every ``i ∈ T`` is. When the explainer explains the predicted class
    (``target=None``), the prediction must also be certified, by IBP on the logit margins
    ``z_c − z_j > 0``: otherwise the explained output itself could change. The interval
    bounds are inclusion-monotone in ``r``, so the largest certified radius is found by
    bisection (``n_bisect`` halvings of ``[0, max_radius]``); the result is a sound *lower*
    bound on the exact radius, which on tiny networks can be computed by enumerating the
    linear regions (``tests/test_certify.py`` does that and checks the bound never exceeds it).
    Computed in float64; a top-k feature must beat a competitor by ``rtol · max_j s_j(x)``, a
    unit is stable only if its bound clears 0 by ``rtol`` of its magnitude, and so do the
    logit margins, so that float32 rounding of the deployed model cannot undo a certificate.

``"smoothed"`` (l2, probabilistic; any model and explainer)
    Randomized smoothing of the top-k membership (Anani et al., "Pixel-level Certified
    Explanations via Randomized Smoothing", ICML 2025): ``h_j(z) = 1[j ∈ topk(s(z))]`` and the
    smoothed explanation ``m_j(x) = P_{ε∼N(0, σ²I)}[h_j(x + ε) = 1]`` (the membership
    frequency; ``Σ_j m_j = k``). The smoothed top-k is the top-k of ``m``. Per feature, ``n0``
    *selection* samples choose its label (in: ``m_j > 1/2`` by majority, or out), ``n``
    independent *estimation* samples count that label, and the one-sided Clopper-Pearson bound
    ``p_j`` at level ``alpha / F`` (Bonferroni over the F features, so all F statements hold
    together with probability >= ``1 − alpha``) lower-bounds the label's probability. By the
    Gaussian-smoothing Lipschitz argument (Cohen et al., ICML 2019; Salman et al., NeurIPS
    2019: ``Φ⁻¹(m_j(x + δ))`` is ``1/σ``-Lipschitz in δ) the label holds for every
    ``‖δ‖₂ < R_j = σ Φ⁻¹(p_j)`` when ``p_j > 1/2`` (else the feature abstains, ``R_j = 0``).
    At a radius r let I (certified in), O (certified out), U (the rest) have sizes a, o, u.
    Every I feature outranks every O feature at every point of the ball, so every top-k set
    there lies inside ``I ∪ U`` or contains all of I; the smallest overlap of two such sets
    (:func:`smoothed_p_at_k_bound`, checked by brute force in the tests), divided by k, is the
    certified P@k lower bound between the smoothed top-k at ``x`` and at any ``x + δ``. The
    whole smoothed top-k is certified iff ``a = k`` and ``u = 0``; its radius
    is ``min_j R_j`` then. The certificate is about the *smoothed* explanation (whose top-k
    may differ from ``s(x)``'s), with confidence ``1 − alpha`` per input. When
    ``target=None``, each noisy input explains its own predicted class, so ``h`` is a function
    of the noisy input alone, as the argument needs.

Small CNNs (issue 25, :mod:`r2et.certify.conv`): sequential networks of ``Conv2d``,
``ReLU``/``Softplus``, ``MaxPool2d``, ``AvgPool2d``, ``Flatten``, ``Linear`` and the fixed
``Standardize`` layer (the ``cnn`` model entry is one) get the same interval certificate. The
box goes forward through a convolution in centre-radius form (``W ⋆ c + b``, ``|W| ⋆ r``),
through average pooling and Standardize as monotone affine maps, and through max-pooling as
``[maxpool(l), maxpool(u)]``; the gradient row goes back through the transposed convolutions
(centre with ``W``, radius with ``|W|``) and the ReLU masks as above. A max-pool routes the
gradient to its window's argmax: entry ``j`` can be the argmax somewhere in the box only if
``u_j >= max_i l_i`` (a *candidate*); a sole candidate receives the window's gradient exactly,
several each receive ``[min(0, v_l), max(0, v_u)]``, non-candidates 0, and contributions of
overlapping windows are summed. A CNN has no activation patterns here: ``bound="patterns"``
falls back to the interval bound (``params["bound"]`` says ``"interval"``, ``params["network"]``
``"cnn"``). Caveat, measured on mnist5k (``docs/certify.md``): on images with constant
regions (MNIST's black background) max-pool windows hold *exact* ties at ``x``, so the
gradient is discontinuous there; an arbitrarily small perturbation re-routes it and often
moves the top-k, and the certified radius is then rightly 0.

Both run on the device of the model and inputs, batched (noise samples in chunks of
``batch_size`` rows; bisection steps over the whole batch at once).

Modules: :mod:`r2et.certify.core` (:func:`certified_radius`), :mod:`r2et.certify.result`
(:class:`CertificateResult`), :mod:`r2et.certify.conv` (the CNN bounds),
:mod:`r2et.certify.intervals` (interval steps shared by MLPs and CNNs),
:mod:`r2et.certify.deterministic` and
:mod:`r2et.certify.smoothed` (the two methods), :mod:`r2et.certify.patterns` (the
deterministic method's default bound, ``bound="patterns"``: instead of intervals through the
backward pass, every on/off choice of the units the box leaves unstable is enumerated, the
network being affine on each; per pattern the gradient is exact, and the top-k and the class
are checked jointly for every pattern; inputs with more than ``max_patterns`` patterns keep
the ``"crown"`` bound, and the stronger of the two is reported), :mod:`r2et.certify.crown`
(``bound="crown"``: each pre-activation and logit margin bounded by linear relaxation,
CROWN, Zhang et al. 2018: every activation enclosed between two lines on its pre-activation
interval, ReLU ``α z <= relu(z) <= u (z − l)/(u − l)``, Softplus between a tangent and the
chord, and the lines substituted backwards to the input box, intersected with IBP; the
gradient's backward pass then runs from these tighter masks and derivative intervals, in
interval arithmetic and in centred form, :mod:`r2et.certify.centred`: the gradient is
multilinear in the layers' derivatives, its first-order terms around their midpoints are
bounded exactly, those of Softplus layers also through CROWN as functions of the input). A Softplus
layer (``sp``, ``r2et-sp``) passes the box through the monotone softplus, and its derivative
``σ(β z)`` lies in ``[σ(β l), σ(β u)]``, a positive interval that multiplies the backward row
vector as an interval product (softplus has no activation patterns: ``bound="patterns"``
gives ``"crown"`` there).
"""

from __future__ import annotations

from r2et.certify.conv import conv_gradient_bounds, conv_layers
from r2et.certify.core import METHODS, certified_radius
from r2et.certify.crown import crown_preactivations
from r2et.certify.deterministic import (
    BOUNDS,
    gradient_bounds,
    mlp_layers,
    network_layers,
    relu_layers,
    score_bounds,
)
from r2et.certify.result import CertificateResult
from r2et.certify.smoothed import clopper_pearson_lower, smoothed_p_at_k_bound

__all__ = [
    "BOUNDS",
    "METHODS",
    "CertificateResult",
    "certified_radius",
    "clopper_pearson_lower",
    "conv_gradient_bounds",
    "conv_layers",
    "crown_preactivations",
    "gradient_bounds",
    "mlp_layers",
    "network_layers",
    "relu_layers",
    "score_bounds",
    "smoothed_p_at_k_bound",
]
