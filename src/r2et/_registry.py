"""One registry helper for every kind of named thing: datasets, models, explainers, attacks and
training methods (after timm's model registry: a name maps to a builder, listing is sorted by
registration order, and an unknown name is one clear line naming the allowed ones)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names of one ``kind`` (``"dataset"``, ``"model"``...) mapped to objects.

    ``register(name, obj)`` adds one (or, without ``obj``, returns a decorator); a name taken
    twice raises ``ValueError`` unless ``overwrite=True``; ``get(name)`` returns it (names are
    case-insensitive) or raises ``ValueError: name='x' is not a known <kind>; allowed: [...]``;
    ``names()`` lists them in registration order; ``unregister(name)`` removes one (tests)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(
        self, name: str, obj: T | None = None, *, overwrite: bool = False
    ) -> T | Callable[[T], T]:
        """Register ``obj`` as ``name``; without ``obj``, a decorator that does it."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        key = name.strip().lower()

        def add(item: T) -> T:
            if key in self._items and not overwrite:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (``ValueError`` when it is not registered)."""
        self._items.pop(self._key(name))

    def get(self, name: str) -> T:
        """The object registered as ``name``; ``ValueError`` naming the allowed ones."""
        return self._items[self._key(name)]

    def __getitem__(self, name: str) -> T:
        """``registry[name]``: the same as :meth:`get` (a registry reads like a dict)."""
        return self.get(name)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        """Registered names, in registration order (as :meth:`names`)."""
        return self.names()

    def values(self) -> list[T]:
        """Registered objects, in registration order."""
        return list(self._items.values())

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` pairs, in registration order."""
        return list(self._items.items())

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def _key(self, name: str) -> str:
        if name not in self:
            raise ValueError(f"name={name!r} is not a known {self.kind}; allowed: {self.names()}")
        return str(name).strip().lower()
