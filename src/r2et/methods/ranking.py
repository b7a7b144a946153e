"""Ranking terms: R2ET's top-k gap (:class:`RankingGap`, also R2ET-mm's boundary form), its
exponential pair form (:class:`PairwiseExp`), the one-sample thickness (:class:`PathThickness`),
the gap around the anchor model's top-k (:class:`AnchoredGap`) and the population's saliency
profile held at the anchor's (:class:`ProfileAnchor`, :func:`saliency_profile`,
:func:`profile_kl`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from r2et._checks import check_k
from r2et.methods.base import AffineTerm, Step, Term
from r2et.methods.gaps import normalize_scores, ranking_gap, topk_gap_affine
from r2et.metrics import topk_mask


@dataclass(frozen=True)
class RankingGap(AffineTerm):
    """``R = mean_n gap_T(ŝ(x_n))`` (log ``gap``, weight ``−lam``): R2ET's top-k margin of the
    step's scores, scale-free by ``normalize``; T = the current top-k (one ``topk``, O(F) per
    row, :func:`topk_gap_of`), or ``step.fixed_mask`` when a point provider fixed it (``at``:
    the clean top-k, :func:`ranking_gap`). With ``m`` (``boundary=True`` adds the default
    ``m=1``): R2ET-mm's gap of the ``m`` weakest top-k against the ``m`` strongest others."""

    boundary: bool = False
    name: ClassVar[str] = "gap"
    weight_key: ClassVar[str | None] = "lam"
    sign: ClassVar[float] = -1.0
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"lam": 0.01, "normalize": "mean", **({"m": 1} if self.boundary else {})}

    def optional(self) -> tuple[str, ...]:
        return ("m",)

    def affine(self, step: Step) -> tuple[torch.Tensor, float, float]:
        m, normalize = step.hp.get("m"), step.hp["normalize"]
        if step.fixed_mask is not None:
            return ranking_gap(step.scores, step.fixed_mask, m, normalize).mean(), 1.0, 0.0
        t, a, b = topk_gap_affine(step.scores, step.k, m, normalize)
        return t.mean(), a, b


@dataclass(frozen=True)
class PairwiseExp(Term):
    """``R = mean_n mean_{i∈T, j∉T} exp(−(ŝ_i − ŝ_j))`` (log ``pair_exp``, weight ``lam``):
    the exponential (soft) form of R2ET's pairwise ranking objective on scale-free scores
    ``ŝ`` (``normalize``), T the current top-k (detached). It weighs the pairs closest to
    swapping most, between the plain gap (every pair alike) and R2ET-mm (the closest pair
    only). The pair mean factorises, ``mean_i exp(−ŝ_i) · mean_j exp(ŝ_j)``: O(F) per row."""

    name: ClassVar[str] = "pair_exp"
    weight_key: ClassVar[str | None] = "lam"
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"lam": 0.01, "normalize": "mean"}

    def value(self, step: Step) -> torch.Tensor:
        s = normalize_scores(step.scores, step.hp["normalize"])
        top = topk_mask(step.scores.detach(), step.k).to(s.dtype)
        k, f = step.k, s.shape[1]
        inside = (torch.exp(-s) * top).sum(1) / k
        outside = (torch.exp(s) * (1 - top)).sum(1) / (f - k)
        return (inside * outside).mean()


@dataclass(frozen=True)
class PathThickness(AffineTerm):
    """``R = mean_n gap_T(ŝ(x_n + u_n))`` (log ``thick``, weight ``−nu``): a one-sample
    estimate of the explanation thickness (Chen et al., Def. 4.1) as a training term, the
    official code's ``tx``: the clean top-k ``T`` (detached) kept ranked above the rest at a
    point ``u_n`` drawn uniformly from the l_inf ball of radius ``tx_radius`` around ``x_n``
    (the global RNG, seeded by :func:`r2et.fit`), scale-free by ``normalize``. Costs one more
    saliency (no logits)."""

    name: ClassVar[str] = "thick"
    weight_key: ClassVar[str | None] = "nu"
    sign: ClassVar[float] = -1.0
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"nu": 0.01, "tx_radius": 0.3, "normalize": "mean"}

    def affine(self, step: Step) -> tuple[torch.Tensor, float, float]:
        r = step.hp["tx_radius"]
        x = step.x.detach()
        x2 = x + (torch.rand_like(x) * 2 - 1) * r
        scores2 = step.explainer.reduce_attr(step.attribution_at(x2))
        mask = topk_mask(step.scores.detach(), step.k)
        return ranking_gap(scores2, mask, None, step.hp["normalize"]).mean(), 1.0, 0.0


@dataclass(frozen=True)
class AnchoredGap(AffineTerm):
    """``R = mean_n gap_{A_n}(ŝ(x_n))`` (log ``anchor_gap``, weight ``−rho``): R2ET's top-k gap
    of the current scores around the *anchor's* top-k, ``A_n = top-k(s_ref(x_n))``, where
    ``s_ref`` is the method's explainer on a frozen copy of the model taken when training
    starts (:meth:`TrainingMethod.prepare`, or the first loss when ``prepare`` was not called),
    explaining the anchor's own predicted class; scale-free by ``normalize``.

    Why (issue 28): with the current top-k ``T_n`` (:class:`RankingGap`) a feature that enters
    many inputs' top-k is then pushed up for all of them, and the cheapest way to widen every
    gap is one top-k set for everybody (a constant explanation). ``A_n`` does not move with the
    model, so each input keeps its own ranking: a feature is pushed up only for the inputs
    whose pre-trained ranking had it. Meant for fine-tuning a trained model (``r2et train``
    refuses it without ``--pretrained``); costs one first-order saliency of the anchor per
    batch."""

    name: ClassVar[str] = "anchor_gap"
    weight_key: ClassVar[str | None] = "rho"
    sign: ClassVar[float] = -1.0
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True
    needs_anchor: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"rho": 0.3, "normalize": "mean"}

    def affine(self, step: Step) -> tuple[torch.Tensor, float, float]:
        s_ref = _anchor_scores(step)
        mask = topk_mask(s_ref, check_k(step.method.k, s_ref.shape[1]))
        return ranking_gap(step.scores, mask, None, step.hp["normalize"]).mean(), 1.0, 0.0


def _anchor_scores(step: Step) -> torch.Tensor:
    """The method's explainer on the frozen anchor (:meth:`TrainingMethod.anchor_for`) at the
    step's inputs, explaining the anchor's own predicted class; detached."""
    ref = step.method.anchor_for(step.model, step.x)
    x = step.x.detach()
    with torch.no_grad():
        target = step.explained_class(ref(x, **step.fkw))
    return step.explainer.scores(ref, x, target, **step.fkw).detach()


def saliency_profile(scores: torch.Tensor) -> torch.Tensor:
    """The population's saliency profile ``P = mean_n s_n / Σ_a s_na``, shape ``(F,)``: the
    mean share of each unit in the rows' saliency (a row of zeros counts as uniform, 1/F);
    differentiable, sums to 1."""
    total = scores.sum(1, keepdim=True)
    shares = torch.where(total > 0, scores / total.clamp_min(1e-30), 1.0 / scores.shape[1])
    return shares.mean(0)


def profile_kl(scores: torch.Tensor, ref_scores: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``KL(P_ref ‖ P) = Σ_a P_ref,a · log(P_ref,a / P_a)`` between the
    :func:`saliency_profile` of ``ref_scores`` (detached) and of ``scores`` (``eps`` added to
    both keeps the logs finite); 0 when the profiles agree."""
    p = saliency_profile(ref_scores.detach()) + eps
    q = saliency_profile(scores) + eps
    return (p * (p.log() - q.log())).sum()


@dataclass(frozen=True)
class ProfileAnchor(Term):
    """``R = KL(P_ref ‖ P)`` (log ``profile``, weight ``rho``): the batch's saliency profile
    ``P = mean_n ŝ_n / Σ_a ŝ_na`` (:func:`saliency_profile`; the share of each unit in the
    rows' saliency, averaged over the batch) held at the profile ``P_ref`` of a frozen copy of
    the model taken when training starts (the anchor of :class:`AnchoredGap`), on the same
    batch (:func:`profile_kl`).

    Why (issue 28): R2ET's gap (:class:`RankingGap`) is cheapest when a few units take the
    saliency of every input, one top-k set for everybody. Holding the *population's* profile
    at the pre-trained model's closes that route: if every input concentrated on the same k
    units, ``P`` would concentrate and ``R`` grow; when each input concentrates on its own
    units, ``P`` can stay ``P_ref``. Unlike the anchored gap it does not fix any input's
    ranking. Meant for fine-tuning (``r2et train`` refuses it without ``--pretrained``); costs
    one first-order saliency of the anchor per batch."""

    name: ClassVar[str] = "profile"
    weight_key: ClassVar[str | None] = "rho"
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True
    needs_anchor: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"rho": 1.0}

    def value(self, step: Step) -> torch.Tensor:
        return profile_kl(step.scores, _anchor_scores(step))
