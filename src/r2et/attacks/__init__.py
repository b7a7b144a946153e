"""Attacks on explanations that keep the prediction: each moves an input inside an ``eps``-ball
(and the valid input box) to change its saliency top-k, and reports P@k, the overlap of the
top-k sets before and after.

* :class:`ERAttack` (the paper's explanation-ranking attack) and :class:`MSEAttack` — PGD;
* :class:`ExplanationPGD` — APGD or PGD on any registered objective
  (:mod:`r2et.attacks.objectives`), raw or scale-free scores, through a Softplus surrogate;
* :class:`RandomSearchAttack` — gradient-free search on the original model;
* :class:`RandomNoiseAttack` — the random-noise baseline;
* :class:`EnsembleAttack` — per input, the lowest P@k over a portfolio of the above: the
  evaluation r2et reports by default (presets ``"fast"``, ``"standard"``, ``"thorough"``).

Every attack satisfies the :class:`Attack` protocol (:mod:`r2et.attacks.base`: the contract,
what a registration provides and the test every registered attack passes): it is called as
``atk(model, x, y=None, **forward_kwargs)`` and returns an :class:`AttackResult`. Attacks are
registered by name (``list_attacks()``, ``create_attack(name, explainer, k, eps,
**options)``, ``register_attack(name, cls)``).
"""

from r2et.attacks.base import (
    ATTACKS,
    Attack,
    AttackResult,
    create_attack,
    list_attacks,
    register_attack,
    summarize_metrics,
)
from r2et.attacks.ensemble import PRESETS, EnsembleAttack, Member, list_presets
from r2et.attacks.objectives import OBJECTIVES, get_objective, list_objectives
from r2et.attacks.pgd import DEFAULT_SURROGATE_BETA, ERAttack, ExplanationPGD, MSEAttack
from r2et.attacks.search import RandomNoiseAttack, RandomSearchAttack

# the built-in attacks, in this order (list_attacks() lists them so)
for _name, _cls in (
    ("ensemble", EnsembleAttack),
    ("erattack", ERAttack),
    ("mse", MSEAttack),
    ("search", RandomSearchAttack),
):
    register_attack(_name, _cls)
del _name, _cls

__all__ = [
    "ATTACKS",
    "DEFAULT_SURROGATE_BETA",
    "OBJECTIVES",
    "PRESETS",
    "Attack",
    "AttackResult",
    "ERAttack",
    "EnsembleAttack",
    "ExplanationPGD",
    "MSEAttack",
    "Member",
    "RandomNoiseAttack",
    "RandomSearchAttack",
    "create_attack",
    "get_objective",
    "list_attacks",
    "list_objectives",
    "list_presets",
    "register_attack",
    "summarize_metrics",
]
