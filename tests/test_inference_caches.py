"""Weights changed in place drop what a module derived from them for inference (timm's attention
biases in TinyViT, LeViT and EfficientFormer: gathered once in eval mode, cleared in training):
the averaged endpoint, a repaired layer and the network a curve step attacks compute with the
weights they hold, whatever mode they were in."""

import copy

import torch
import torch.nn.functional as F
from robust_mc_testkit import InferenceCache
from torch import nn

from robust_mc.attacks.pgd import cross_entropy_sum
from robust_mc.config import AttackConfig, CurveConfig
from robust_mc.core.curves import Curve
from robust_mc.core.repair import Correction, Site, fold
from robust_mc.train.ema import WeightAverage
from robust_mc.train.tasks import CurveTask


class CachedWeight(InferenceCache, nn.Module):
    """A linear classifier of flattened images whose weight, gathered through an index, is kept
    for inference once computed and cleared when the module is set to training."""

    def __init__(self, features: int = 12, classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(features, classes)
        self.register_buffer("order", torch.arange(features), persistent=False)

    def forward(self, x):
        weight = self.cached("weight", lambda: self.fc.weight[:, self.order])
        return F.linear(x.flatten(1), weight, self.fc.bias)


def evaluated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` in eval mode with its cache filled by a pass over ``x``."""
    with torch.no_grad():
        model.eval()(x)
    return model


def fresh_output(model: CachedWeight, x: torch.Tensor) -> torch.Tensor:
    """What ``model``'s weights compute, from a copy that never cached anything."""
    clean = CachedWeight(model.fc.in_features, model.fc.out_features).eval()
    clean.load_state_dict(model.state_dict())
    with torch.no_grad():
        return clean(x)


def test_the_averaged_weights_put_into_an_evaluated_network_are_the_ones_it_computes_with():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 2, 2)
    model = evaluated(CachedWeight(), x)
    average = WeightAverage(model, decay=0.5)
    for value in average.average.values():
        value.normal_()
    average.copy_to(model)
    with torch.no_grad():
        assert torch.equal(model(x), fresh_output(model, x))


def test_a_repair_folded_into_an_evaluated_network_is_the_one_it_computes_with():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 2, 2)
    model = evaluated(CachedWeight(), x)
    with torch.no_grad():
        before = model(x)
    scale, shift = torch.tensor([2.0, 0.5, 1.0]), torch.tensor([0.25, -1.0, 0.0])
    fold(model, Correction(Site("fc", 1, 3), scale, shift))
    with torch.no_grad():
        after = model(x)
    # one multiply and one add per logit in float32: a few units in the last place
    assert torch.allclose(after, before * scale + shift, rtol=1e-5, atol=1e-6)


def test_a_curve_step_attacks_the_network_at_its_own_t_in_eval_mode(runtime):
    """The attacked copy holds the weights at each step's t; in eval mode its cache would keep
    the first t's weights for every later step."""
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 2, 2), torch.randint(0, 3, (8,))
    a, b = evaluated(CachedWeight(), x), CachedWeight()
    curve = Curve.between("bezier", a, a.state_dict(), b.state_dict(), 1)
    attack = AttackConfig(eps=0.1, steps=3, random_start=False, mode="eval")
    task = CurveTask(copy.deepcopy(a), curve, attack, CurveConfig(), runtime,
                     torch.Generator().manual_seed(0))
    for t in (0.0, 1.0):
        weights = {name: value.detach() for name, value in curve.weights_at(t).items()}
        attacked = task.network_at(weights).attack(x, y, cross_entropy_sum)
        reference = CachedWeight().eval()
        reference.load_state_dict({**a.state_dict(), **weights})
        expected = task.attack(reference, x, y, None, loss_fn=cross_entropy_sum)
        assert torch.equal(attacked, expected), t
