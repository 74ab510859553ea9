"""Small networks for the 8x8 digits and tests: ``tinyten``, ``cnn`` and ``mlp``."""

from __future__ import annotations

from torch import nn

from robust_mc.models._registry import register_model
from robust_mc.models.blocks import conv_norm_relu, init_weights, scaled

# (out channels, stride, kernel, padding) of TinyTen's eight conv-BN-ReLU blocks (Tatro et al.)
TINYTEN_BLOCKS = ((16, 1, 3, 1), (16, 1, 3, 1), (32, 2, 3, 1), (32, 1, 3, 1),
                  (32, 1, 3, 1), (64, 2, 3, 1), (64, 1, 3, 0), (64, 1, 1, 0))


class TinyTen(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 norm: str = "batch") -> None:
        super().__init__()
        layers, cin = [], in_channels
        for cout, stride, kernel, padding in TINYTEN_BLOCKS:
            cout = scaled(cout, width)
            layers.append(conv_norm_relu(cin, cout, kernel, stride, padding, norm))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x):  # (B, C, H, W) normalized -> (B, classes)
        return self.fc(self.pool(self.features(x)).flatten(1))


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> None:
        super().__init__()
        c1, c2 = scaled(32, width), scaled(64, width)
        self.features = nn.Sequential(
            conv_norm_relu(in_channels, c1), conv_norm_relu(c1, c2), nn.MaxPool2d(2),
            conv_norm_relu(c2, c2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c2, num_classes)
        init_weights(self)

    def forward(self, x):
        return self.fc(self.features(x))


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0,
                 image_size: int = 8, hidden: int = 128) -> None:
        super().__init__()
        h = scaled(hidden, width)
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size * image_size, h), nn.ReLU(),
            nn.Linear(h, h), nn.ReLU(), nn.Linear(h, num_classes))

    def forward(self, x):
        return self.layers(x)


# the smallest input side TinyTen takes: two stride-2 convolutions leave ceil(ceil(s/2)/2)
# pixels, which the unpadded 3x3 convolution needs to be at least 3
@register_model(min_image_size=9, choices={"norm": ("batch", "layer", "none")})
def tinyten(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
            norm: str = "batch") -> nn.Module:
    """The 0.09M-parameter CNN of Tatro et al. (2020); ``norm``: batch (theirs), layer or
    none (``--model-kwargs '{norm: none}'``: a network without batch norm, for repair)."""
    return TinyTen(num_classes, in_channels, width, norm)


@register_model
def cnn(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> nn.Module:
    """Three conv-BN-ReLU blocks, for 8x8 digits."""
    return SmallCNN(num_classes, in_channels, width)


@register_model(bounds={"hidden": (1, 65_536)})
def mlp(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, image_size: int = 8,
        hidden: int = 128) -> nn.Module:
    """Two hidden layers of ``hidden * width`` units."""
    return MLP(num_classes, in_channels, width, image_size, hidden)
