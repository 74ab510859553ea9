"""VGG with batch norm for small images (Simonyan & Zisserman 2015)."""

from __future__ import annotations

from torch import nn

from robust_mc.models._registry import register_model
from robust_mc.models.blocks import conv_norm_relu, init_weights, scaled

VGG_STAGES = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


class VGG(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int, width: float,
                 image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = in_channels, image_size
        for stage in VGG_STAGES[depth]:
            for cout in stage:
                layers.append(conv_norm_relu(cin, scaled(cout, width)))
                cin = scaled(cout, width)
            if size >= 2:  # small inputs keep their last pixels instead of pooling to nothing
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@register_model
def vgg11_bn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
             image_size: int = 32) -> nn.Module:
    return VGG(11, num_classes, in_channels, width, image_size)


@register_model
def vgg16_bn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
             image_size: int = 32) -> nn.Module:
    return VGG(16, num_classes, in_channels, width, image_size)
