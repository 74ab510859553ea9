"""Curves: control points, coefficients, and the network at t run on the user's own module."""

import copy

import pytest
import torch
from torch.func import functional_call

from robust_mc.config import AttackConfig, CurveConfig
from robust_mc.core.curves import Curve, list_curves
from robust_mc.store.model_building import build_model
from robust_mc.train.tasks import CurveTask


@pytest.mark.parametrize("kind", list_curves())
@pytest.mark.parametrize("bends", [1, 3])
def test_curves_start_and_end_at_the_endpoints_and_begin_on_the_line(kind, bends):
    start, end = torch.randn(50), torch.randn(50)
    curve = Curve(kind, ["w"], [(5, 10)], start, end, bends)
    assert torch.equal(curve.flat_at(0.0), start) and torch.allclose(curve.flat_at(1.0), end)
    for t in (0.0, 0.3, 0.5, 0.9, 1.0):
        assert float(curve.coefficients(t).sum()) == pytest.approx(1.0)
        assert torch.allclose(curve.flat_at(t), torch.lerp(start, end, t), atol=1e-5)
    assert curve.weights_at(0.5)["w"].shape == (5, 10)


def test_bends_move_the_middle_but_not_the_ends():
    start, end = torch.zeros(4), torch.ones(4)
    curve = Curve("bezier", ["w"], [(4,)], start, end, 1)
    with torch.no_grad():
        curve.bends.fill_(3.0)
    assert torch.equal(curve.flat_at(0.0), start) and torch.equal(curve.flat_at(1.0), end)
    assert torch.allclose(curve.flat_at(0.5), torch.full((4,), 0.25 * 0 + 0.5 * 3 + 0.25 * 1))
    rebuilt = Curve.from_state(curve.state())
    assert torch.equal(rebuilt.flat_at(0.5), curve.flat_at(0.5))


def test_a_trained_curve_reproduces_the_endpoints_exactly(digits_endpoints, digits, runtime):
    a, b = (build_model(c).eval() for c in digits_endpoints)
    curve = Curve.between("bezier", a, a.state_dict(), b.state_dict(), 1)
    with torch.no_grad():
        curve.bends.add_(torch.randn_like(curve.bends))  # as if trained
    x = digits.test.images[:64]
    for t, endpoint in ((0.0, a), (1.0, b)):
        with torch.no_grad():
            out = functional_call(endpoint, curve.weights_at(t), (x,))  # endpoint's BN buffers
            assert torch.equal(out, endpoint(x))


def test_curve_step_attacks_through_fixed_weights_and_trains_every_bend(digits_endpoints,
                                                                         digits, runtime):
    a, b = (build_model(c) for c in digits_endpoints)
    curve = Curve.between("polychain", a, a.state_dict(), b.state_dict(), 2)
    template = copy.deepcopy(a)
    task = CurveTask(template, curve, AttackConfig(eps=0.1, steps=2), CurveConfig(), runtime,
                     torch.Generator().manual_seed(0))
    loss, correct = task(digits.train.images[:32], digits.train.labels[:32])
    assert curve.bends.grad is None  # the attack never touched the bends' graph
    loss.backward()
    assert curve.bends.grad is not None and (curve.bends.grad.abs().sum(1) > 0).all()
    assert all(p.grad is None for p in template.parameters())  # only the bends are trained


def test_a_curve_kind_says_whether_it_has_bends():
    from robust_mc.core.curves import CURVES, has_bends, register_curve

    assert not has_bends("line") and has_bends("bezier") and has_bends("polychain")
    with CURVES.scoped():
        @register_curve("straight", bends=False)
        def _straight(t, points):
            return torch.stack([1 - torch.as_tensor(t), torch.as_tensor(t)])

        assert not has_bends("straight")  # what connect, PAM and saving decide by
