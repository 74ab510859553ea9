"""``convnext_cifar``: a small ConvNeXt-style network for 32x32 images (and 8x8 digits).

A patchify stem (2x2, stride 2), then stages of ConvNeXt blocks: a depthwise convolution, a
LayerNorm over channels (channels-last), an inverted MLP with GELU, a learned per-channel layer
scale and a residual addition; stages are joined by a LayerNorm and a 2x2 strided convolution.
No batch norm anywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robust_mc.models._registry import register_model
from robust_mc.models.blocks import scaled


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x):  # (B, C, H, W)
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels last
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 image_size: int = 32, dims: tuple[int, ...] = (32, 64),
                 depths: tuple[int, ...] = (2, 2)) -> None:
        super().__init__()
        dims = tuple(scaled(d, width) for d in dims)
        kernel = 7 if image_size >= 32 else 3
        self.stem = nn.Sequential(nn.Conv2d(in_channels, dims[0], 2, stride=2),
                                  LayerNorm2d(dims[0]))
        stages: list[nn.Module] = []
        for k, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            if k:
                stages += [LayerNorm2d(dims[k - 1]), nn.Conv2d(dims[k - 1], dim, 2, stride=2)]
            stages += [ConvNeXtBlock(dim, kernel) for _ in range(depth)]
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):  # (B, C, H, W) normalized -> (B, classes)
        return self.head(self.norm(self.stages(self.stem(x)).mean((2, 3))))


@register_model
def convnext_cifar(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                   image_size: int = 32) -> nn.Module:
    """Two ConvNeXt stages of 2 blocks (32 and 64 channels at width 1, ~0.1M parameters)."""
    return ConvNeXt(num_classes, in_channels, width, image_size)
