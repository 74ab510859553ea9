"""Registries at the extension points (curve kinds, alignment methods, training objectives,
training attacks): a decorator registers a thing under a name, a lookup by name raises on an
unknown one (suggesting the closest), and ``names()`` lists them for flags and configs."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from robust_mc.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Things of one ``kind`` by name.

    Example::

        CURVES = Registry[CurveFactory]("curve kind")

        @CURVES.register("line")
        def _line(t, points): ...

        CURVES.get("bezeir")  # UserError: unknown curve kind 'bezeir'; did you mean 'bezier'?
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(item: T) -> T:
            self._items[name] = item
            return item

        return wrap

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else \
                f"choose one of {', '.join(self.names())}"
            raise UserError(f"unknown {self.kind} {name!r}; {hint}")
        return self._items[name]

    def remove(self, name: str) -> None:
        del self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items
