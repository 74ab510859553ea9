"""``vit_cifar``: a small vision transformer for 32x32 images (and 8x8 digits), trainable on a CPU.

Patches of 4x4 pixels (2x2 below 16x16 images) are embedded by a strided convolution; a class
token and learned position embeddings are added; pre-norm blocks of multi-head self-attention and
a GELU MLP follow; the class token's final state, normalised, gives the logits. No batch norm: the
interpolated networks between two of these get no statistics reset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robust_mc.models._registry import register_model
from robust_mc.models.blocks import scaled


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # (B, N, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, D / heads)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 image_size: int = 32, depth: int = 4, heads: int = 4,
                 patch_size: int | None = None) -> None:
        super().__init__()
        patch = patch_size or (4 if image_size >= 16 else 2)
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size "
                             f"{patch}")
        dim = heads * scaled(16, width)  # 16 units per head at width 1
        tokens = (image_size // patch) ** 2
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):  # (B, C, H, W) normalized -> (B, classes)
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


@register_model(bounds={"depth": (1, 64), "heads": (1, 64)})
def vit_cifar(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
              image_size: int = 32, depth: int = 4, heads: int = 4) -> nn.Module:
    """A 4-block, 4-head vision transformer (64 features at width 1, ~0.14M parameters)."""
    return ViT(num_classes, in_channels, width, image_size, depth, heads)
