"""What a network expects of its [0, 1] inputs: per-channel normalization, the named ones a
foreign model may expect, and ``--normalization``'s parser."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from robust_mc.errors import UserError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# per-channel (mean, std) a foreign model may expect of its [0, 1] inputs, by name
NORMALIZATIONS = {"none": ((0.0,), (1.0,)), "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
                  "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
                  "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


@dataclass(frozen=True)
class Normalization:
    """What a network expects of its [0, 1] inputs: ``(x - mean) / std`` per channel (one
    value each for all channels, or one per channel). A model's own; never interpolated."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, mean: Sequence[float], std: Sequence[float]) -> Normalization:
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def same_as(self, other: Normalization) -> bool:
        """The same normalization as a model applies it: values equal in float32, its buffers'
        precision (0.3 read from a JSON file is the 0.30000001... a network's buffer holds)."""
        def stored(values: tuple[float, ...]) -> list[float]:
            return torch.tensor(values, dtype=torch.float32).tolist()

        return (stored(self.mean), stored(self.std)) == (stored(other.mean), stored(other.std))


NO_NORMALIZATION = Normalization((0.0,), (1.0,))


def parse_normalization(text: str) -> Normalization:
    """``none``, ``cifar10``, ``cifar100``, ``imagenet``, or ``MEAN,MEAN,...:STD,STD,...``
    (one value per channel, or one for all)."""
    if text in NORMALIZATIONS:
        return Normalization.of(*NORMALIZATIONS[text])
    means, sep, stds = text.partition(":")
    try:
        values = [[float(v) for v in part.split(",")] for part in (means, stds)]
    except ValueError:
        values = []
    if not sep or len(values) != 2 or len(values[0]) != len(values[1]) or not all(
            math.isfinite(v) for v in values[0] + values[1]) or any(s <= 0 for s in values[1]):
        raise UserError(f"--normalization {text!r}: give {', '.join(NORMALIZATIONS)} or "
                        "MEAN,...:STD,... (finite numbers, positive stds, one per channel)")
    return Normalization.of(values[0], values[1])
