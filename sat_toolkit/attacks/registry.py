"""A tiny named registry for the parts attacks are built from.

Losses, step rules, initialisations, projections and target rules each live in one
:class:`Registry`, so a plugin adds a part (``LOSSES.register("my_loss", ...)``) and a
recipe uses it by name (``{name = "pgd", loss = "my_loss"}``) without copying an attack.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sat_toolkit.errors import SatError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> part, with one-line errors that list the known names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None, *, replace: bool = False) -> T | Callable[[T], T]:
        """Add ``item`` under ``name``; without ``item``, return a decorator that does."""

        def add(obj: T) -> T:
            if name in self._items and not replace:
                raise ValueError(f"{self.kind} '{name}' is already registered (pass replace=True)")
            self._items[name] = obj
            return obj

        return add if item is None else add(item)

    def get(self, name: str) -> T:
        """The part called ``name``, or a :class:`SatError` naming the known ones."""
        if isinstance(name, str) and name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(str(name), list(self._items), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SatError(f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
