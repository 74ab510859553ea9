"""Registries at the extension points (architectures, datasets, curve kinds, alignment methods,
training objectives, training attacks, evaluation attacks): a decorator registers a thing under a
name with what the rest of the program needs to know of it (its metadata), a lookup by name raises
on an unknown one (suggesting the closest), and ``names()`` lists them for flags and configs (a
setting hands its registry to the settings engine as its ``choices``)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from robust_mc.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered thing: its name, the thing, and its metadata (e.g. an alignment method's
    ``needs_data``, an evaluation attack's ``doc`` and parameters)."""

    name: str
    item: T
    meta: Mapping[str, Any] = field(default_factory=dict)


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
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator: register the thing under ``name`` (default: its ``__name__``)."""

        def wrap(item: T) -> T:
            key = name if name is not None else getattr(item, "__name__")  # noqa: B009  (T is any object)
            self._entries[key] = Entry(key, item, MappingProxyType(dict(meta)))
            return item

        return wrap

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else \
                f"choose one of {', '.join(self.labels())}"
            raise UserError(f"unknown {self.kind} {name!r}; {hint}")
        return self._entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).item

    def entries(self) -> list[Entry[T]]:
        return [self._entries[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    # a value may name an entry with an argument: ``imagefolder:PATH``, ``synthetic[:SIZE]``
    # (metadata ``argument``: its label; ``argument_required``: the bare name is not enough)

    def split(self, value: str) -> tuple[Entry[T], str | None]:
        """The entry ``value`` names, and the argument after ``name:`` (None without one);
        an unknown name, or an argument where none is taken or missing, raises."""
        name, sep, argument = value.partition(":")
        entry = self.entry(name)
        label = entry.meta.get("argument")
        if sep and label is None:
            raise UserError(f"{self.kind} {name!r} takes no argument; write {name}")
        if not sep and entry.meta.get("argument_required"):
            raise UserError(f"{self.kind} {name!r} needs an argument; write {name}:{label}")
        return entry, argument if sep else None

    def check(self, value: str) -> None:
        """Raise the :class:`UserError` that says why ``value`` names no entry, if it does not."""
        self.split(value)

    def accepts(self, value: str) -> bool:
        try:
            self.check(value)
        except UserError:
            return False
        return True

    def labels(self) -> list[str]:
        """The names as a user writes them, with their arguments."""
        out = []
        for entry in self.entries():
            label = entry.meta.get("argument")
            if label is None:
                out.append(entry.name)
            elif entry.meta.get("argument_required"):
                out.append(f"{entry.name}:{label}")
            else:
                out.append(f"{entry.name}[:{label}]")
        return out

    @contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Registrations made inside the block are undone when it ends (tests, plugins tried
        out in one process)."""
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = saved
