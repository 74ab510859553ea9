"""The reference implementation's per-t evaluation procedure, re-expressed for side-by-side timing.

What it reproduces (NeuronAlignment, ``evaluation/eval_adversarial_curve.py`` with its
``utils.update_bn`` and ``utils/attack_curve.AttackPGD``, TinyTen on CIFAR-10):

- a curve network whose every convolution, batch norm and linear layer holds the three Bezier
  bends' parameters and combines them with the t-coefficients at every forward pass;
- BN statistics reset, then one pass over the BN images in train mode in batches of 512, each
  batch's cumulative-average momentum set, the PGD-5 (8/255, 2/255, random start) attack run on
  the network in train mode, and every forward of the attack (five) and the final one updating
  the running statistics;
- then, in eval mode and batches of 512, a clean pass over the test images and a PGD-5 pass
  followed by a forward on the adversarial images;
- float32, NCHW (the reference sets neither autocast nor channels-last).

The images are tensors in memory here (the reference decodes them in loader workers), so the
figure is the reference's compute alone: a lower bound on its time per t.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

BATCH = 512
EPS, STEP, STEPS = 8 / 255, 2 / 255, 5


class Bends(nn.Module):
    """Three copies of a layer's parameters, combined as sum(c_i * p_i) at each call."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        for name, shape in shapes.items():
            for i in range(3):
                self.register_parameter(f"{name}_{i}", nn.Parameter(torch.randn(shape) * 0.1))

    def combined(self, name: str, coeffs: torch.Tensor) -> torch.Tensor:
        return sum(coeffs[i] * getattr(self, f"{name}_{i}") for i in range(3))


class CurveConv(Bends):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__({"weight": (cout, cin, kernel, kernel), "bias": (cout,)})
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.combined("weight", coeffs), self.combined("bias", coeffs),
                        self.stride, self.padding)


class CurveNorm(Bends):
    def __init__(self, channels: int) -> None:
        super().__init__({"weight": (channels,), "bias": (channels,)})
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.momentum = 0.1

    def forward(self, x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var,
                            self.combined("weight", coeffs), self.combined("bias", coeffs),
                            self.training, self.momentum, 1e-5)


class CurveLinear(Bends):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__({"weight": (cout, cin), "bias": (cout,)})

    def forward(self, x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.combined("weight", coeffs), self.combined("bias", coeffs))


TINYTEN = [(3, 16, 3, 1, 1), (16, 16, 3, 1, 1), (16, 32, 3, 2, 1), (32, 32, 3, 1, 1),
           (32, 32, 3, 1, 1), (32, 64, 3, 2, 1), (64, 64, 3, 1, 0), (64, 64, 1, 1, 0)]


class CurveTinyTen(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.convs = nn.ModuleList(CurveConv(*spec) for spec in TINYTEN)
        self.norms = nn.ModuleList(CurveNorm(spec[1]) for spec in TINYTEN)
        self.dense = CurveLinear(64, num_classes)

    def forward(self, x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x, coeffs), coeffs))
        return self.dense(F.avg_pool2d(x, x.shape[-1]).flatten(1), coeffs)


def attack(model: CurveTinyTen, x: torch.Tensor, y: torch.Tensor,
           coeffs: torch.Tensor) -> torch.Tensor:
    """The reference's PGD: random start, signed steps on the mean cross-entropy; returns the
    logits on the adversarial images (one more forward)."""
    adv = x + torch.empty_like(x).uniform_(-EPS, EPS)
    for _ in range(STEPS):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(adv, coeffs), y)
        (grad,) = torch.autograd.grad(loss, [adv])
        adv = adv.detach() + STEP * grad.sign()
        adv = torch.clamp(torch.min(torch.max(adv, x - EPS), x + EPS), 0, 1)
    return model(adv, coeffs)


def seconds_per_t(model: CurveTinyTen, t: float, bn_x: torch.Tensor, bn_y: torch.Tensor,
                  test_x: torch.Tensor, test_y: torch.Tensor, adversarial_bn: bool = True
                  ) -> dict[str, float]:
    """One t of the reference's evaluation; seconds split into BN, clean and attack. Without
    ``adversarial_bn`` the BN statistics come from one forward of the clean images."""
    coeffs = torch.tensor([(1 - t) ** 2, 2 * t * (1 - t), t ** 2])
    seconds = {}
    start = time.perf_counter()
    model.train()
    norms = list(model.norms)
    for norm in norms:
        norm.running_mean.zero_()
        norm.running_var.fill_(1)
    seen = 0
    with torch.no_grad():
        for i in range(0, len(bn_x), BATCH):
            x, y = bn_x[i:i + BATCH], bn_y[i:i + BATCH]
            for norm in norms:
                norm.momentum = len(x) / (seen + len(x))
            if adversarial_bn:
                attack(model, x, y, coeffs)
            else:
                model(x, coeffs)
            seen += len(x)
    model.eval()
    seconds["bn"] = time.perf_counter() - start
    mark = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(test_x), BATCH):
            F.cross_entropy(model(test_x[i:i + BATCH], coeffs), test_y[i:i + BATCH])
    seconds["clean"] = time.perf_counter() - mark
    mark = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(test_x), BATCH):
            F.cross_entropy(attack(model, test_x[i:i + BATCH], test_y[i:i + BATCH], coeffs),
                            test_y[i:i + BATCH])
    seconds["attack"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - start
    return seconds
