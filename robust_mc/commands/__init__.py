"""CLI commands: each module with a ``HELP`` is one, with ``add_arguments(parser)`` and
``run(args) -> int``; ``ORDER`` places it in ``robust-mc --help`` (workflow order);
``DISTRIBUTED = True`` lets torchrun launch it (its pipeline shares work through
``run.distributed``). A new command is one module here."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def commands() -> dict[str, ModuleType]:
    """Every command module by name, in ``--help`` order."""
    found = [importlib.import_module(f"{__name__}.{m.name}")
             for m in pkgutil.iter_modules(__path__)]
    modules = [m for m in found if hasattr(m, "HELP")]
    modules.sort(key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
    return {m.__name__.rpartition(".")[2]: m for m in modules}
