"""The one way a typed record (a frozen dataclass) is written into a file and read back.

:func:`write_record` turns a record into plain values (what ``torch.load(weights_only=True)``
and JSON read back); :func:`read_record` checks a mapping read from a file against the record's
field types, field by field, and builds the record, or raises ``ValueError`` naming the field:
files are untrusted, and a renamed or retyped field fails here, at the boundary, not later in a
``KeyError``. Fields a file lacks take their defaults (older files); keys a record does not know
are kept in its ``extra`` field where it has one, else dropped.

Field types understood: ``str``, ``int``, ``float``, ``bool``, ``Any``, ``X | None``,
``Literal[...]``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]`` and nested records.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar

import torch

R = TypeVar("R")
EXTRA = "extra"  # the field that keeps keys a record does not know


def write_record(record: Any) -> dict[str, Any]:
    """The record as plain values; ``None`` fields are left out, ``extra``'s keys written
    beside the known ones."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(type(record))
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name == EXTRA:
            out.update({k: v for k, v in value.items() if k not in out})
        elif isinstance(value, tuple) and typing.get_origin(hints[f.name]) is tuple:
            out[f.name] = [_plain(v) for v in value]  # a typed sequence is written as a list
        elif value is not None:
            out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return write_record(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # a tuple stays one (random.getstate's)
        return type(value)(_plain(v) for v in value)
    return value


def read_record(cls: type[R], value: Any, where: str = "record") -> R:
    """``cls`` built from ``value``, each field checked against its type (see the module)."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, not {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name in names - {EXTRA}:
        if name in value:
            kwargs[name] = _read(value[name], hints[name], f"{where}.{name}")
    if EXTRA in names:
        kwargs[EXTRA] = {k: v for k, v in value.items() if k not in names}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a field without a default that the file lacks
        missing = sorted(n for n in names - {EXTRA} - set(kwargs)
                         if _required(cls, n))
        raise ValueError(f"{where} lacks {', '.join(missing) or exc}") from None


def _required(cls: type, name: str) -> bool:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]  # type: ignore[arg-type]
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _read(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _read(value, option, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else
                         f"{where} must be {' or '.join(map(_describe, options))}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where} must be one of {', '.join(map(repr, typing.get_args(tp)))}"
                             f", not {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return read_record(tp, value, where)  # type: ignore[arg-type]
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, not {type(value).__name__}")
        element = (typing.get_args(tp) or (Any,))[0]
        items = [_read(v, element, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where} must be a mapping with string keys")
        inner = (typing.get_args(tp) or (str, Any))[1]
        return {k: _read(v, inner, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, not {value!r}"[:200])
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, not {type(value).__name__}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, not {type(value).__name__}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, not {type(value).__name__}")
        return value
    if tp is torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where} must be a tensor, not {type(value).__name__}")
        return value
    raise TypeError(f"{where}: read_record does not know the type {_describe(tp)}")
