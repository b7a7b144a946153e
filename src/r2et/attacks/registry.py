"""The attacks by name: one list, one builder (what the CLI and the bench runner call).

``create_attack(name, explainer, k, eps, **options)`` builds a registered attack, passing each
option only to the attacks that take it (``steps`` to the PGD and search attacks, ``preset``
to the ensemble); :func:`register_attack` adds one.
"""

from __future__ import annotations

import inspect
from typing import Any

from r2et._registry import Registry
from r2et.attacks.ensemble import EnsembleAttack
from r2et.attacks.pgd import ERAttack, MSEAttack
from r2et.attacks.search import RandomSearchAttack

ATTACKS: Registry[type] = Registry("attack")
for _name, _cls in (
    ("ensemble", EnsembleAttack),
    ("erattack", ERAttack),
    ("mse", MSEAttack),
    ("search", RandomSearchAttack),
):
    ATTACKS.register(_name, _cls)


def register_attack(name: str, cls: type) -> type:
    """Register an attack class ``cls(explainer, k, eps, **options)`` under ``name``."""
    if not isinstance(cls, type):
        raise ValueError(f"register_attack needs an attack class, got {cls!r}")
    ATTACKS.register(name, cls)
    return cls


def list_attacks() -> list[str]:
    """Names accepted by :func:`create_attack` (and ``r2et evaluate --attack``)."""
    return ATTACKS.names()


def create_attack(name: str, explainer: Any, k: int, eps: float, **options: Any) -> Any:
    """Attack ``name`` on ``explainer``'s top-``k`` within ``eps``. ``options`` (``norm``,
    ``bounds``, ``seed``, ``steps``, ``preset``...) go to the attacks whose constructor takes
    them; None values are left out (the attack's default); an option no registered attack
    takes raises ``ValueError``."""
    cls = ATTACKS.get(name)
    params = inspect.signature(cls).parameters
    known = {p for c in (ATTACKS.get(n) for n in ATTACKS) for p in inspect.signature(c).parameters}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown attack option(s) {unknown}; allowed: {sorted(known)}")
    kwargs = {key: v for key, v in options.items() if key in params and v is not None}
    return cls(explainer, k, eps, **kwargs)
