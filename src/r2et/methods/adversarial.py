"""The point provider of adversarial training (:class:`AdversarialPoint`, ``at``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from r2et._checks import check_k
from r2et.methods.base import Step, Term
from r2et.metrics import topk_mask


@dataclass(frozen=True)
class AdversarialPoint(Term):
    """The point provider of adversarial training: ``setup`` runs an inner
    :class:`r2et.attacks.ERAttack` (``at_steps`` steps of size ``at_step_size`` in the l_inf
    ball of radius ``at_eps``, random start, prediction kept) from the batch and moves the step
    to ``x' = x_adv``, explaining the class predicted at x and ranking against the clean top-k
    ``T = top-k(s(x))``. The loss terms of the row (``at``: :class:`RankingGap`) and the
    cross-entropy are then evaluated at ``x'``."""

    needs_k: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"at_steps": 10, "at_eps": 0.3, "at_step_size": None}

    def setup(self, step: Step) -> None:
        from r2et.attacks import ERAttack  # a higher-level sibling: imported when used

        model, x, fkw, ex, hp = step.model, step.x, step.fkw, step.explainer, step.hp
        with torch.no_grad():
            target = step.explained_class(model(x, **fkw))
        s_clean = ex.scores(model, x.detach(), target, **fkw).detach()
        k = check_k(step.method.k, s_clean.shape[1])
        atk = ERAttack(
            ex,
            k,
            hp["at_eps"],
            steps=hp["at_steps"],
            step_size=hp["at_step_size"],
            keep_prediction=True,
            random_start=True,
        )
        x_adv = atk(model, x.detach(), target, **fkw).x_adv.detach()
        step.move_to(x_adv, target, topk_mask(s_clean, k))
