"""Layers shared by several zoo architectures."""

from __future__ import annotations

from torch import nn

NORMS = ("batch", "layer", "none")


def conv_norm_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1,
                   padding: int | None = None, norm: str = "batch") -> nn.Sequential:
    """Convolution, normalization and ReLU. ``norm``: ``batch`` (BatchNorm), ``layer``
    (GroupNorm with one group: each image's channels and positions normalised together, as
    REPAIR's LayerNorm networks) or ``none`` (the convolution gets a bias)."""
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r}: choose one of {', '.join(NORMS)}")
    pad = kernel // 2 if padding is None else padding
    conv = nn.Conv2d(cin, cout, kernel, stride, pad, bias=norm == "none")
    if norm == "none":
        return nn.Sequential(conv, nn.ReLU(inplace=True))
    layer = nn.BatchNorm2d(cout) if norm == "batch" else nn.GroupNorm(1, cout)
    return nn.Sequential(conv, layer, nn.ReLU(inplace=True))


def scaled(channels: int, width: float) -> int:
    """Channels scaled by the width multiplier, at least one."""
    return max(1, int(round(channels * width)))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions, unit BN, zero biases: the usual CIFAR initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.zeros_(m.bias)
