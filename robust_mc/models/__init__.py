"""The model zoo: ``create_model(arch, ...)`` builds any registered or user architecture with its
input normalization; ``list_models()`` names the registered ones."""

from __future__ import annotations

from collections.abc import Sequence

from robust_mc.models import resnet, small, vgg  # noqa: F401  (registers the zoo)
from robust_mc.models._registry import build_architecture, list_models, register_model
from robust_mc.models.normalize import Classifier, Normalize

__all__ = ["Classifier", "Normalize", "create_model", "list_models", "register_model"]


def create_model(arch: str, *, num_classes: int, in_channels: int, mean: Sequence[float],
                 std: Sequence[float], width: float = 1.0, image_size: int = 32,
                 kwargs: dict | None = None) -> Classifier:
    """Build ``arch`` as a :class:`Classifier` mapping [0, 1] images to logits."""
    standard = {"num_classes": num_classes, "in_channels": in_channels, "width": width,
                "image_size": image_size}
    net = build_architecture(arch, standard, kwargs or {})
    return Classifier(Normalize(mean, std), net)
