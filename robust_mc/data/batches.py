"""Batches of a split, with augmentation done on whole batches on the split's device."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from robust_mc.data.splits import DatasetInfo, Split, as_float


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched augmentation: a random crop from a zero-padded image, then a random flip.

    ``images`` (B, C, H, W) float; returns a new tensor of the same shape.
    """
    batch, _, height, width = images.shape
    device = images.device
    out = images
    if padding > 0:
        padded = F.pad(images, (padding,) * 4)  # (B, C, H+2p, W+2p)
        dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(device)
        dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(device)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]
        out = padded[torch.arange(batch, device=device)[:, None, None, None],
                     torch.arange(images.shape[1], device=device)[None, :, None, None],
                     rows, cols]
    if flip:
        mask = (torch.rand(batch, generator=generator) < 0.5).to(device)
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out


def batches(split: Split, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None, info: DatasetInfo | None = None,
            augment: bool = False, drop_last: bool = False, order: torch.Tensor | None = None,
            start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images float (B, C, H, W) in [0, 1], labels (B,)) on the split's device.

    ``order`` (a permutation of the split) fixes the shuffle; ``start`` skips that many batches,
    which is how an interrupted epoch continues where it stopped."""
    count = len(split)
    if order is None and shuffle:
        order = torch.randperm(count, generator=generator)
    stop = count - count % batch_size if drop_last and count >= batch_size else count
    for first in range(start * batch_size, stop, batch_size):
        if order is not None:
            index = order[first:first + batch_size].to(split.images.device)
            images, labels = split.images[index], split.labels[index]
        else:
            images = split.images[first:first + batch_size]
            labels = split.labels[first:first + batch_size]
        images = as_float(images)
        if augment and info is not None:
            images = random_crop_flip(images, info.crop_padding, info.flip, generator)
        yield images, labels


def num_batches(split: Split, batch_size: int, drop_last: bool = False) -> int:
    if drop_last and len(split) >= batch_size:
        return len(split) // batch_size
    return -(-len(split) // batch_size)
