"""CIFAR ResNets (He et al. 2016), PreAct ResNet-18 and Wide ResNet-28-10."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from robust_mc.models._registry import register_model
from robust_mc.models.blocks import init_weights, scaled


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # projection shortcut: a 1x1 conv and BN
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):  # in place where nothing else reads the tensor: fewer memory passes
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) with stages of 16, 32, 64 channels."""

    def __init__(self, depth: int, num_classes: int, in_channels: int, width: float) -> None:
        super().__init__()
        n = (depth - 2) // 6
        widths = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, cin = [], widths[0]
        for stage, cout in enumerate(widths):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.layers(out)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


class PreActResNet(nn.Module):
    def __init__(self, stage_blocks: tuple[int, ...], stage_widths: tuple[int, ...],
                 num_classes: int, in_channels: int, stem: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        blocks, cin = [], stem
        for stage, (count, cout) in enumerate(zip(stage_blocks, stage_widths, strict=True)):
            for i in range(count):
                blocks.append(PreActBlock(cin, cout, 2 if stage > 0 and i == 0 else 1, dropout))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x):
        out = self.layers(self.conv1(x))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _cifar_resnet(depth: int, num_classes: int, in_channels: int, width: float) -> nn.Module:
    return CifarResNet(depth, num_classes, in_channels, width)


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return _cifar_resnet(20, num_classes, in_channels, width)


@register_model
def resnet32(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return _cifar_resnet(32, num_classes, in_channels, width)


@register_model
def resnet56(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return _cifar_resnet(56, num_classes, in_channels, width)


@register_model
def preact_resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0
                    ) -> nn.Module:
    widths = tuple(scaled(c, width) for c in (64, 128, 256, 512))
    return PreActResNet((2, 2, 2, 2), widths, num_classes, in_channels, widths[0])


@register_model(bounds={"dropout": (0.0, 0.99)})
def wrn28_10(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
             dropout: float = 0.0) -> nn.Module:
    """Wide ResNet-28-10 (Zagoruyko & Komodakis 2016); ``width`` scales the widen factor 10."""
    widths = tuple(scaled(c * 10, width) for c in (16, 32, 64))
    return PreActResNet((4, 4, 4), widths, num_classes, in_channels, scaled(16, width), dropout)
