"""Permutation specs: a permuted network computes the same function, for every architecture."""

import pytest
import torch
from robust_mc_testkit import UserNet
from torch import nn

from robust_mc.core.permutation import (
    apply_permutation,
    inverse,
    permute_model,
    random_permutation,
    trace_permutation_spec,
)
from robust_mc.errors import UserError
from robust_mc.models import Classifier, Normalize, create_model, list_models


def build(arch):
    torch.manual_seed(0)
    if arch == "user":
        return Classifier(Normalize((0.5,) * 3, (0.25,) * 3), UserNet()), 8
    wide = arch in ("wrn28_10", "vgg16_bn", "vgg11_bn", "preact_resnet18")
    return create_model(arch, num_classes=5, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3,
                        width=0.1 if wide else 0.5, image_size=16), 16


@pytest.mark.parametrize("arch", [*list_models(), "user"])
def test_permuted_network_is_the_same_function(arch):
    model, size = build(arch)
    x = torch.rand(8, 3, size, size)
    spec = trace_permutation_spec(model, x)
    assert len(spec) > 0 and all(s.taps or spec.members(s.name) for s in spec)  # heads: none
    model.train()
    with torch.no_grad():
        for _ in range(3):  # realistic running statistics
            model(torch.rand(16, 3, size, size))
    model.eval()
    with torch.no_grad():
        reference = model(x)
    perm = random_permutation(spec, torch.Generator().manual_seed(1))
    state = model.state_dict()
    permuted, _ = build(arch)
    permuted.load_state_dict(apply_permutation(state, spec, perm))
    permuted.eval()
    assert any(not torch.equal(permuted.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():  # the same sums in a permuted order: float32 rounding of logits
        assert (permuted(x) - reference).abs().max() < 1e-4  # of order 10 is about 1e-6
    # training mode: batch statistics and the updated running statistics agree too
    model.train()
    permuted.train()
    batch = torch.rand(16, 3, size, size)
    with torch.no_grad():
        assert (permuted(batch) - model(batch)).abs().max() < 1e-4
    expected = apply_permutation(model.state_dict(), spec, perm)
    for key, value in permuted.state_dict().items():
        if "running" in key:
            assert torch.allclose(value, expected[key], atol=1e-5), key
    # and the inverse permutation restores the original weights exactly
    permute_model(permuted, spec, inverse(perm))
    for key, value in permuted.state_dict().items():
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(value, state[key]), key


def test_input_and_logits_are_never_permuted():
    model, size = build("tinyten")
    spec = trace_permutation_spec(model, torch.rand(2, 3, size, size))
    axes = {(a.name, a.axis) for s in spec for a in s.axes}
    assert ("net.features.0.0.weight", 1) not in axes  # input channels of the first conv
    assert ("net.fc.weight", 0) not in axes and ("net.fc.bias", 0) not in axes
    assert ("net.fc.weight", 1) in axes


def test_residual_spaces_are_tied():
    model, size = build("resnet20")
    spec = trace_permutation_spec(model, torch.rand(2, 3, size, size))
    stem = next(s for s in spec if s.name == "net.conv1")
    names = {a.name for a in stem.axes}
    assert {"net.layers.0.bn2.weight", "net.layers.1.bn2.weight", "net.bn1.weight"} <= names
    assert len(stem.taps) == 4  # the stem ReLU and the ReLU after each of the 3 first-stage adds


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):  # rolls the channels: no permutation of them commutes with it
        return self.fc(torch.roll(self.conv(x), 1, 1).mean((2, 3)))


class Transposes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).transpose(1, 3).mean((1, 2)))


@pytest.mark.parametrize("net, message", [(Unsupported, "roll")])
def test_unsupported_operations_are_named(net, message):
    model = Classifier(Normalize((0.5,) * 3, (0.5,) * 3), net())
    with pytest.raises(UserError, match=message):
        trace_permutation_spec(model, torch.rand(2, 3, 8, 8))
