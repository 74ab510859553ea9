"""A dataset in memory: its facts (:class:`DatasetInfo`), its splits as tensors, and images as
float32 in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # pixels of zero padding for random crops; 0 disables cropping
    flip: bool  # horizontal flips are label-preserving


@dataclass(frozen=True)
class Split:
    """Images (N, C, H, W) as uint8 in [0, 255] or float in [0, 1], labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def take(self, count: int | None) -> Split:
        if count is None or count >= len(self):
            return self
        return Split(self.images[:count], self.labels[:count])

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Data:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split

    def to(self, device: torch.device | str) -> Data:
        return replace(self, train=self.train.to(device), val=self.val.to(device),
                       test=self.test.to(device))


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()
