"""The model zoo: ``create_model(arch, ...)`` builds any registered or user architecture with its
input normalization; ``list_models()`` names the registered ones."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence

from robust_mc.errors import UserError
from robust_mc.models._registry import (
    build_architecture,
    list_models,
    register_model,
    smallest_image_size,
)
from robust_mc.models.normalize import Classifier, Normalize

# every module of this package is imported, so that a new architecture is one file here with
# ``@register_model`` on its factory (the package's own files only, never a user's)
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Classifier", "Normalize", "create_model", "list_models", "register_model",
           "smallest_image_size"]


def create_model(arch: str, *, num_classes: int, in_channels: int, mean: Sequence[float],
                 std: Sequence[float], width: float = 1.0, image_size: int = 32,
                 kwargs: dict | None = None, factory_ok: bool = True,
                 source: str | None = None) -> Classifier:
    """Build ``arch`` as a :class:`Classifier` mapping [0, 1] images to logits.

    Args:
        arch: a registered name (``list_models()``), ``path/to/file.py:ClassName`` or
            ``package.module:ClassName``; an import spec runs that code, so pass only one the
            user chose (files are checked by :class:`~robust_mc.models.trust.CodeTrust` first).
        num_classes, in_channels, width, image_size: the standard arguments; a user class
            gets those its signature takes.
        mean, std: per-channel input normalization applied to [0, 1] images.
        kwargs: more keyword arguments of the architecture.
        factory_ok: accept a function that builds the network (the user named it), not only
            an ``nn.Module`` class.
        source: what to name in error messages (a file, a flag).

    Returns:
        ``Classifier(Normalize(mean, std), net)``; parameter names are ``net.<the
        architecture's own names>``.

    Raises:
        UserError: unknown name, a target that is not a network, arguments that do not fit.

    Example::

        model = create_model("resnet20", num_classes=10, in_channels=3,
                             mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
        logits = model(torch.rand(8, 3, 32, 32))  # (8, 10)
    """
    if len(mean) not in (1, in_channels):
        raise UserError(f"{source or 'the model'}: its normalization has {len(mean)} channels "
                        f"but the network takes {in_channels}; pass --normalization with one "
                        "mean and std per channel (or one for all), e.g. none")
    standard = {"num_classes": num_classes, "in_channels": in_channels, "width": width,
                "image_size": image_size}
    net = build_architecture(arch, standard, kwargs or {}, factory_ok=factory_ok, source=source)
    return Classifier(Normalize(mean, std), net)
