"""What the robust models people connect are made of, written the way their codebases write
them (wide residual networks with pre-activation blocks, normalization buffers inside the model,
``F.pad``, a Swish ``autograd.Function``, GroupNorm and LayerNorm): each traces, a random
permutation of it computes the same function, and aligning a permuted copy recovers it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from robust_mc_testkit import assert_units_separable
from torch import nn

from robust_mc.core.align import align
from robust_mc.core.permutation import (
    apply_permutation,
    permute_model,
    random_permutation,
    trace_permutation_spec,
)


class _SwishFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s * (1 + x * (1 - s)))


class Swish(nn.Module):
    def forward(self, x):
        return _SwishFunction.apply(x)


class WideBlock(nn.Module):
    """A pre-activation wide block: BN, activation, conv, twice, with a 1x1 shortcut when the
    width or stride changes."""

    def __init__(self, cin, cout, stride, act, pad=False):
        super().__init__()
        self.pad = pad
        self.bn1, self.act1 = nn.BatchNorm2d(cin), act()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=0 if pad else 1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(cout), act()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if cin != cout or stride != 1 else None)

    def forward(self, x):
        out = self.act1(self.bn1(x))
        x = x if self.shortcut is None else self.shortcut(out)
        if self.pad:  # DeepMind's blocks pad explicitly before a strided convolution
            out = F.pad(out, (1, 1, 1, 1))
        out = self.conv1(out)
        out = self.conv2(F.dropout(self.act2(self.bn2(out)), 0.0, self.training))
        return out + x


class WideResNet(nn.Module):
    """RobustBench's WideResNet / DMWideResNet shape at depth 10, width 1."""

    def __init__(self, act=nn.ReLU, pad=False, normalize_inside=False, num_classes=10):
        super().__init__()
        if normalize_inside:  # inputs in [0, 1], normalization as buffers of the model
            self.register_buffer("mean", torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1))
        self.normalize_inside = normalize_inside
        self.init_conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.layer = nn.Sequential(WideBlock(16, 16, 1, act, pad), WideBlock(16, 32, 2, act, pad),
                                   WideBlock(32, 64, 2, act, pad))
        self.bn, self.act = nn.BatchNorm2d(64), act()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        if self.normalize_inside:
            x = (x - self.mean) / self.std
        out = self.act(self.bn(self.layer(self.init_conv(x))))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.fc(out.view(-1, 64))


class NormedNet(nn.Module):
    """GroupNorm over all channels, LayerNorm over features, SiLU and GELU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(3, 12, 3, padding=1), nn.GroupNorm(1, 12)
        self.pad = nn.ZeroPad2d(1)
        self.conv2, self.norm2 = nn.Conv2d(12, 12, 3), nn.GroupNorm(12, 12)
        self.fc1, self.ln = nn.Linear(12, 16), nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.silu(self.norm1(self.conv1(x)))
        x = F.gelu(self.norm2(self.conv2(self.pad(x))))
        return self.fc2(F.softplus(self.ln(self.fc1(torch.flatten(x.mean((2, 3)), 1)))))


def randomised(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return model.eval()


ARCHITECTURES = {
    "wide_resnet": lambda: WideResNet(),
    "dm_wide_resnet": lambda: WideResNet(act=Swish, pad=True, normalize_inside=True),
    "silu_wide_resnet": lambda: WideResNet(act=nn.SiLU, normalize_inside=True),
    "group_and_layer_norm": NormedNet,
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_robust_architecture_traces_permutes_and_is_recovered(name, runtime):
    torch.manual_seed(0)
    model = randomised(ARCHITECTURES[name]())
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    spec = trace_permutation_spec(model, x)
    assert len(spec) >= 3
    shuffled = copy.deepcopy(model)
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(2)))
    with torch.no_grad():
        # the same sums in a permuted order, through a dozen layers: float32 rounding
        torch.testing.assert_close(shuffled(x), model(x), atol=1e-4, rtol=1e-4)
    labels = torch.zeros(16, dtype=torch.long)
    assert_units_separable(model, spec, [(x, labels)], runtime)
    result = align(model, shuffled, [(x, labels)], spec=spec, runtime=runtime)
    permute_model(shuffled, spec, result.perm)
    for key, value in model.state_dict().items():
        assert torch.equal(shuffled.state_dict()[key], value), key


def test_group_norm_groups_are_permuted_as_wholes():
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.norm(self.conv(x))).mean((2, 3)))

    model, x = Grouped().eval(), torch.rand(4, 3, 8, 8)
    spec = trace_permutation_spec(model, x)
    conv = spec.space("conv")
    assert conv.blocks is not None and conv.blocks.size == 4 and not spec.fixed
    groups = spec.space(conv.blocks.space)  # the two groups, permuted as wholes
    perm = random_permutation(spec, torch.Generator().manual_seed(0))
    perm[groups.name] = torch.tensor([1, 0])
    perm[conv.name] = torch.tensor([5, 4, 7, 6, 1, 0, 3, 2])
    permuted = Grouped().eval()
    permuted.load_state_dict(apply_permutation(model.state_dict(), spec, perm))
    with torch.no_grad():  # the same sums in another order: float32 rounding
        assert torch.allclose(permuted(x), model(x), atol=1e-5, rtol=1e-5)
