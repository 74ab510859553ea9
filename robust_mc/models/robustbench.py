"""RobustBench's model zoo as architectures: ``robustbench:<dataset>/<threat>/<ModelName>``
(e.g. ``robustbench:cifar10/Linf/Carmon2019Unlabeled``) builds that entry's network from the
installed ``robustbench`` package (the ``robustbench`` extra); its weights come from a local file
in RobustBench's format (``{"state_dict": ...}``, often ``module.``-prefixed), never from the
network. The spec only selects an entry of RobustBench's own table, so a file may record one.

RobustBench's networks take [0, 1] images and some normalize inside (``mean``/``std``
buffers): robust-mc adds no normalization of its own for them and never aligns or interpolates
those buffers as weights.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from robust_mc.errors import UserError

PREFIX = "robustbench:"
INSTALL = "pip install 'robust-mc[robustbench]'"


def is_robustbench(arch: str) -> bool:
    return arch.startswith(PREFIX)


def import_robustbench(module: str = "robustbench") -> Any:
    """Import ``module`` of the installed robustbench, which itself imports ``autoattack``
    (installed as ``pyautoattack``) and ``pkg_resources`` (gone from recent setuptools): both
    are made to resolve first."""
    if "autoattack" not in sys.modules:
        try:
            importlib.import_module("autoattack")
        except ImportError:
            try:
                sys.modules["autoattack"] = importlib.import_module("pyautoattack")
            except ImportError:
                pass  # robustbench's own import names what is missing
    if "pkg_resources" not in sys.modules:
        try:
            importlib.import_module("pkg_resources")
        except ImportError:  # used by robustbench only to locate its ImageNet file lists
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
            sys.modules["pkg_resources"] = shim
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(f"{module} is not importable ({exc}); install it with {INSTALL}") \
            from None


def _resource_filename(package: str, path: str) -> str:
    from importlib import resources

    return str(resources.files(package.rpartition(".")[0] or package) / path)


def parse_spec(arch: str) -> tuple[str, str, str]:
    """(dataset, threat model, model name) of ``robustbench:<dataset>/<threat>/<name>``."""
    parts = arch[len(PREFIX):].split("/")
    if len(parts) != 3 or not all(parts):
        raise UserError(f"--arch {arch}: write robustbench:<dataset>/<threat>/<ModelName>, "
                        "e.g. robustbench:cifar10/Linf/Carmon2019Unlabeled")
    return parts[0], parts[1], parts[2]


def robustbench_factory(arch: str) -> Callable[[], nn.Module]:
    """The zoo entry's model builder (the architecture only: no weights are loaded)."""
    dataset, threat, name = parse_spec(arch)
    import_robustbench()
    zoo = import_robustbench("robustbench.model_zoo.models")
    enums = import_robustbench("robustbench.model_zoo.enums")
    try:
        entries = zoo.model_dicts[enums.BenchmarkDataset(dataset)][enums.ThreatModel(threat)]
    except (ValueError, KeyError):
        raise UserError(f"--arch {arch}: RobustBench has no {dataset}/{threat} zoo; e.g. "
                        "cifar10/Linf, cifar10/L2, cifar100/Linf") from None
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"--arch {arch}: no model {name!r} in RobustBench's {dataset}/{threat} "
                        f"zoo{hint}")
    return entries[name]["model"]


def checkpoint_file(arch: str, model_dir: str | Path) -> Path:
    """Where RobustBench keeps the entry's weights under ``model_dir``:
    ``<dataset>/<threat>/<ModelName>.pt``."""
    dataset, threat, name = parse_spec(arch)
    return Path(model_dir) / dataset / threat / f"{name}.pt"
