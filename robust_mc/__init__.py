"""robust-mc: robust mode connectivity between adversarially trained networks.

Public API (imported lazily by the modules that need it; nothing heavy runs at import):

- data: ``load_data``; models: ``create_model``, ``list_models``;
- checkpoints: ``load_checkpoint``, ``save_checkpoint``, ``build_model``;
- evaluation: ``evaluate_model`` with attacks from ``attacks.build_attack``.
"""

from pathlib import Path as _Path

from robust_mc.run.provenance import version

__version__ = version()


def _find_checkout_packages() -> None:
    """``robust_mc.attacks`` and ``robust_mc.configs`` are the repository's top-level ``attacks/``
    and ``configs/``. A wheel holds them inside the package (pyproject's ``package-dir``); in a
    source checkout they sit beside it, so the package's search path takes in that folder too."""
    package = _Path(__file__).resolve().parent
    checkout = package.parent
    if (package / "attacks").is_dir() or not (checkout / "attacks" / "__init__.py").is_file():
        return
    if (checkout / "pyproject.toml").is_file():
        __path__.append(str(checkout))


_find_checkout_packages()
