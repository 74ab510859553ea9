"""CLI commands: each module with a ``HELP`` is one, with ``add_arguments(parser)`` and
``run(args) -> int``; ``ORDER`` places it in ``robust-mc --help`` (workflow order);
``DISTRIBUTED = True`` lets torchrun launch it (its pipeline shares work through
``run.distributed``). A new command is one module here.

``HELP``, ``ORDER`` and ``DISTRIBUTED`` are plain literals, read from each module's source
without importing it: listing the commands (``robust-mc --help``, torchrun's check) imports
none of them, and running one imports that one alone."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from types import ModuleType

DECLARED = {"HELP": str, "ORDER": int, "DISTRIBUTED": bool}


@dataclass(frozen=True)
class Command:
    """One command as its module declares it, before the module is imported."""

    name: str
    help: str
    order: int = 100
    distributed: bool = False

    def module(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.name}")


def commands() -> dict[str, Command]:
    """Every command by name, in ``--help`` order."""
    found = [_declared(m.name) for m in pkgutil.iter_modules(__path__)]
    listed = sorted((c for c in found if c is not None), key=lambda c: (c.order, c.name))
    return {c.name: c for c in listed}


def _declared(name: str) -> Command | None:
    """The command module ``name`` declares, or None for a helper module (no ``HELP``)."""
    spec = importlib.util.find_spec(f"{__name__}.{name}")
    source = spec.loader.get_source(spec.name) if spec and spec.loader else None  # type: ignore[attr-defined]
    if source is None:  # installed without sources: the module itself says
        module = importlib.import_module(f"{__name__}.{name}")
        values = {key: getattr(module, key) for key in DECLARED if hasattr(module, key)}
    else:
        values = _literals(ast.parse(source), name)
    if "HELP" not in values:
        return None
    return Command(name=name, help=values["HELP"], order=values.get("ORDER", 100),
                   distributed=values.get("DISTRIBUTED", False))


def _literals(tree: ast.Module, name: str) -> dict[str, object]:
    """The module-level ``NAME = literal`` assignments of the declared names."""
    values: dict[str, object] = {}
    for statement in tree.body:
        if not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
            continue
        target = statement.targets[0]
        if isinstance(target, ast.Name) and target.id in DECLARED:
            value = ast.literal_eval(statement.value)
            if not isinstance(value, DECLARED[target.id]):
                raise TypeError(f"commands/{name}.py: {target.id} must be a "
                                f"{DECLARED[target.id].__name__} literal")
            values[target.id] = value
    return values
