"""The settings engine: typed, validated configuration from defaults, a YAML file and flags.

A component's settings are a frozen dataclass whose fields are made by :func:`setting`; a run's
settings compose them. :func:`build_config` merges, in increasing precedence, the dataclass
defaults, a YAML mapping (``--config``) and dotted overrides from the command line
(``{"attack.eps": "8/255"}``). Unknown keys, wrong types and out-of-range values raise
:class:`UserError` naming the dotted key.

Values in pixel units (eps, step sizes) are fractions of the [0, 1] image range and accept
``8/255`` or ``0.031``.

This module knows no domain: the valid values of a setting come from the registry object its
field names (anything with ``names()``), and presets are the YAML files of ``configs/``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import yaml

from robust_mc.errors import UserError
from robust_mc.limits import check_bounded, check_regular_file

T = TypeVar("T")


class Choices(Protocol):
    """What lists a setting's valid values: a :class:`~robust_mc.registry.Registry`."""

    def check(self, value: str) -> None: ...  # raises UserError saying why value is not valid

    def accepts(self, value: str) -> bool: ...

    def labels(self) -> list[str]: ...


def setting(default: Any, *, lo: float | None = None, hi: float | None = None, pixel: bool = False,
            help: str | Callable[[], str] = "", may_change: bool = False,
            choices: Choices | None = None) -> Any:
    """A dataclass field with a range check, pixel-unit parsing and a help string (which the
    command-line flag that sets it shows). ``may_change``: a run may continue with another value
    (where it runs, how its work is batched, laid out or saved: results change at most by float
    rounding). ``choices``: the registry that lists the valid values (curve kinds, alignment
    methods, objectives), so that registering one is all it takes to offer it."""
    meta = {"lo": lo, "hi": hi, "pixel": pixel, "help": help, "may_change": may_change,
            "choices": choices}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def parse_pixel_value(raw: Any, key: str = "value") -> float:
    """Parse an eps or step size in [0, 1] pixel units: ``8/255``, ``0.031`` or ``0``."""
    if isinstance(raw, bool):
        raise UserError(f"{key}: expected a number such as 8/255 or 0.031, got {raw!r}")
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:
            value = float("inf")
    else:
        text = str(raw).strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                if float(den) == 0:
                    raise UserError(f"{key}: division by zero in {text!r}; write e.g. 8/255")
                value = float(Fraction(num.strip()) / Fraction(den.strip()))
            else:
                value = float(text)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise UserError(f"{key}: {text!r} is not a number; write e.g. 8/255 or 0.031") from None
    if value != value or value < 0:
        raise UserError(f"{key}: {raw!r} must be a non-negative number in [0, 1] pixel units")
    if value > 1:
        raise UserError(f"{key}: {raw!r} is above 1, but values are in [0, 1] pixel units; "
                        f"did you mean {raw}/255?")
    return value


# --- building -----------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, meta)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if meta.get("pixel"):
        return parse_pixel_value(value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        try:
            number = value if isinstance(value, int) else int(str(value))
        except ValueError:
            raise UserError(f"{key}: expected an integer, got {value!r}") from None
        if not -2**63 <= number < 2**63:  # seeds and counts are 64-bit integers in torch
            raise UserError(f"{key}: {value!r} does not fit in 64 bits")
        return number
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"{key}: expected a number, got {value!r}")
        try:
            out = float(Fraction(str(value))) if isinstance(value, str) else float(value)
        except (ValueError, ZeroDivisionError, TypeError, OverflowError):
            raise UserError(f"{key}: expected a finite number, got {value!r}") from None
        if not math.isfinite(out):
            raise UserError(f"{key}: expected a finite number, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is list or origin is list:
        if isinstance(value, str):  # from the command line: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list, got {value!r}")
        element = typing.get_args(tp)
        if not element:
            return list(value)
        return [_coerce(v, element[0], f"{key}[{i}]", {}) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if isinstance(value, str):  # from the command line: YAML or JSON
            value = parse_yaml(value, f"{key} ({value[:40]!r}; write e.g. '{{depth: 16}}')")
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    raise UserError(f"{key}: unsupported type {_type_name(tp)}")


def _check_range(value: Any, key: str, meta: dict) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo:
        raise UserError(f"{key}: {value} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise UserError(f"{key}: {value} is above the maximum {hi}")


def _check_choice(value: Any, key: str, choices: Choices | None) -> None:
    if choices is None:
        return
    try:
        choices.check(value)
    except UserError as exc:
        raise UserError(f"{key}: {exc}") from None


def _build(cls: type[T], values: dict, prefix: str, default: Any = None) -> T:
    """Build ``cls`` from ``values``; fields not given keep ``default``'s value (the field's
    default_factory instance for nested sections) or the class default."""
    if not isinstance(values, dict):
        raise UserError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise UserError(f"unknown config key '{prefix}{unknown[0]}'; known keys here: "
                        f"{', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            inner = getattr(default, name) if default is not None else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            kwargs[name] = _build(tp, values.get(name) or {}, key + ".", inner)  # type: ignore
        elif name in values:
            value = _coerce(values[name], tp, key, dict(f.metadata))
            _check_range(value, key, dict(f.metadata))
            _check_choice(value, key, f.metadata.get("choices"))
            kwargs[name] = value
        elif default is not None:
            kwargs[name] = getattr(default, name)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def find_preset(name: str) -> Path:
    """Resolve ``--config``: a YAML path, or the name of a preset shipped in ``configs/``."""
    path = Path(name)
    if path.is_file():
        return path
    stem = name[:-5] if name.endswith(".yaml") else name
    preset = resources.files("robust_mc.configs").joinpath(f"{Path(stem).name}.yaml")
    if preset.is_file():
        return Path(str(preset))
    available = sorted(p.name[:-5] for p in resources.files("robust_mc.configs").iterdir()
                       if p.name.endswith(".yaml"))
    raise UserError(f"config file {name!r} not found; give a YAML path or one of the presets: "
                    f"{', '.join(available)}")


def parse_yaml(text: str, what: str) -> Any:
    """YAML (or JSON) a user wrote, or one line naming ``what`` and what is wrong with it."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{what} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except ValueError:  # an integer longer than Python converts from text
        raise UserError(f"{what} holds an integer of more than {sys.get_int_max_str_digits()} "
                        "digits; no setting takes one") from None
    except RecursionError:
        raise UserError(f"{what} nests deeper than Python can read; a configuration has "
                        "sections and settings, two or three levels deep") from None


def load_yaml(path: str | Path) -> dict:
    try:
        text = check_regular_file(path, f"config {path}").read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"config {path} is not UTF-8 text; save it as UTF-8") from None
    data = check_bounded(parse_yaml(text, f"config {path}"), f"config {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def build_config(cls: type[T], yaml_file: str | None = None,
                 overrides: dict[str, Any] | None = None, base: dict | None = None) -> T:
    """Defaults < ``base`` (e.g. from a checkpoint) < YAML file < dotted CLI overrides."""
    tree: dict = {}
    for source in (base or {}), (load_yaml(find_preset(yaml_file)) if yaml_file else {}):
        for dotted, value in flatten(source).items():
            _set_dotted(tree, dotted, value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value)
    return _build(cls, tree, "")


def given_settings(yaml_file: str | None, overrides: dict[str, Any] | None,
                   section: str = "") -> dict[str, str]:
    """The dotted keys under ``section`` (``"connect."``: bench's connect section) that the
    YAML file or the command line sets, each with which of the two set it (the command line
    where both do): what a run may take from elsewhere, such as the endpoints' recipe, only
    where the user chose nothing."""
    given: dict[str, str] = {}
    if yaml_file:
        name = f"--config {Path(yaml_file).stem}"
        given.update({k: name for k in flatten(load_yaml(find_preset(yaml_file)))})
    given.update({k: "the command line" for k, v in (overrides or {}).items() if v is not None})
    return {k[len(section):]: where for k, where in given.items() if k.startswith(section)}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; mappings inside a ``kwargs`` key stay whole."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "kwargs":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def to_dict(config: Any) -> dict:
    """The resolved configuration as plain values (for JSON, YAML and checkpoints)."""
    return dataclasses.asdict(config)


def settings_that_may_change(cls: type) -> set[str]:
    """The dotted keys of ``cls``'s settings marked ``may_change`` (see :func:`setting`)."""
    hints = typing.get_type_hints(cls)
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        inner = hints[f.name]
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            keys |= {f"{f.name}.{k}" for k in settings_that_may_change(inner)}
        elif f.metadata.get("may_change"):
            keys.add(f.name)
    return keys


@dataclass(frozen=True)
class SettingInfo:
    """What the command line needs to offer one setting: its type, default (in the run config
    that holds it), help text and valid values."""

    key: str
    type: Any
    default: Any
    help: str
    choices: list[str] | None  # the values as written; argparse checks them when ``exact``
    pixel: bool
    exact: bool = True  # False: a choice may carry an argument (``imagefolder:PATH``)


def describe_setting(cls: type, key: str) -> SettingInfo:
    """The setting at dotted ``key`` of the run config ``cls``, its default as ``cls`` sets it
    (an unknown key raises ``KeyError``)."""
    *sections, name = key.split(".")
    owner: Any = cls
    defaults: Any = cls()
    for section in sections:
        owner = typing.get_type_hints(owner)[section]
        defaults = getattr(defaults, section)
    field_ = {f.name: f for f in dataclasses.fields(owner)}[name]
    tp = typing.get_type_hints(owner)[name]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    meta = field_.metadata
    exact = True
    if typing.get_origin(tp) is Literal:
        valid: list[str] | None = [str(v) for v in typing.get_args(tp)]
    elif meta.get("choices") is not None:
        valid = meta["choices"].labels()
        exact = all(meta["choices"].accepts(label) for label in valid)
    else:
        valid = None
    text = meta.get("help", "")  # a function: a help that lists a registry as it is now
    return SettingInfo(key, tp, getattr(defaults, name), text() if callable(text) else text, valid,
                       bool(meta.get("pixel")), exact)
