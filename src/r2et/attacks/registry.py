"""The attacks by name (kept for ``from r2et.attacks.registry import ...``): the registry and
its functions live in :mod:`r2et.attacks.base`; the built-in attacks are registered by
:mod:`r2et.attacks`."""

from r2et.attacks.base import ATTACKS, create_attack, list_attacks, register_attack

__all__ = ["ATTACKS", "create_attack", "list_attacks", "register_attack"]
