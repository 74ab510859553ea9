"""Layer-wise barriers: the second-order prediction is exact on a quadratic, HVPs are right,
a model against itself has no barrier anywhere, and the whole network's segment is the path's
straight line, statistics repair included."""

import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from robust_mc import cli
from robust_mc.config import ConnectRunConfig, build_config
from robust_mc.core.curves import Curve
from robust_mc.data import as_float
from robust_mc.evaluation.layers import (
    GroupSegment,
    gradient_and_hvp,
    interpolated,
    parameter_groups,
    predicted_barrier,
)
from robust_mc.evaluation.path import PathNetworks
from robust_mc.store.checkpoint import save_checkpoint
from robust_mc.store.model_building import build_model


def quadratic_problem():
    torch.manual_seed(0)
    model = nn.Linear(6, 3).double()
    x, y = torch.randn(40, 6, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64)

    def loss(params, which=None):
        return ((functional_call(model, params, (x,)) - y) ** 2).mean()

    a = {n: p.detach().clone() for n, p in model.named_parameters()}
    b = {n: p + torch.randn_like(p) for n, p in a.items()}
    return loss, a, b


@pytest.mark.parametrize("names", [["weight"], ["bias"], ["weight", "bias"]])
def test_prediction_is_exact_for_a_quadratic_loss(names):
    loss, a, b = quadratic_problem()
    far = {**a, **{n: b[n] for n in names}}  # the group's segment ends at a with the group from b
    measured = float(loss(interpolated(a, far, names, 0.5)) - (loss(a) + loss(far)) / 2)
    # exact in exact arithmetic; float32 Hessian-vector products of a loss of order 10 round
    # at 1e-6 to 1e-5
    assert predicted_barrier(loss, a, far, names) == pytest.approx(measured, abs=1e-4)


def test_hessian_vector_product_matches_finite_differences():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 2, (16,))

    def loss(params, which=None):
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    params = {n: p.detach() for n, p in model.named_parameters()}
    names = list(params)
    v = {n: torch.randn_like(p) for n, p in params.items()}
    _, hv = gradient_and_hvp(loss, params, names, v, "a")
    eps = 1e-5
    plus, _ = gradient_and_hvp(loss, {n: params[n] + eps * v[n] for n in names}, names, v, "a")
    minus, _ = gradient_and_hvp(loss, {n: params[n] - eps * v[n] for n in names}, names, v, "a")
    for n in names:
        assert torch.allclose(hv[n], (plus[n] - minus[n]) / (2 * eps), atol=1e-6), n


def test_batchnorm_goes_with_its_convolution(digits_endpoints):
    from robust_mc.store.model_building import build_model

    groups = parameter_groups(build_model(digits_endpoints[0]), "modules")
    conv = next(g for g in groups.values() if any("features.0.0" in n for n in g))
    assert any("features.0.1" in n for n in conv)


@pytest.mark.parametrize("repair", ["off", "reset", "repair"])
def test_a_model_against_itself_has_no_barrier_anywhere(digits_endpoints, tmp_path, capsys,
                                                         repair):
    path = str(save_checkpoint(digits_endpoints[0], tmp_path / "a.pt"))
    code = cli.main(["layers", path, path, "--no-align", "--samples", "128", "--points", "3",
                     "--repair", repair, "--repair-images", "100",
                     "--out", str(tmp_path / "out"), "--device", "cpu", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)["unaligned"]["groups"]
    assert rows and rows[-1]["group"] == "(whole network)"
    for row in rows:
        for key, value in row.items():
            if "barrier" in key or "midpoint" in key:  # the same weights at every t: the
                assert abs(value) < 1e-6, (row["group"], key, value)  # same arithmetic
    assert (tmp_path / "out" / "layers.csv").is_file()


def test_the_whole_networks_segment_is_the_paths_straight_line(digits_endpoints, digits, runtime):
    """With repair, the whole network's segment at t is the network connect evaluates at t on
    the straight line from a to b: the same weights, batch norm and repair target."""
    a, b = (build_model(c) for c in digits_endpoints)
    cfg = build_config(ConnectRunConfig, None, {"path.repair": "repair",
                                                 "path.repair_images": 200,
                                                 "path.bn_images": 200})
    state_a, state_b = a.state_dict(), b.state_dict()
    names = [n for n, _ in a.named_parameters()]
    segment = GroupSegment(a, state_a, state_b, names, digits, cfg.path, cfg.attack, runtime)
    line = PathNetworks(Curve.between("line", a, state_a, state_b), a, digits, cfg.path,
                        cfg.attack, runtime, b)
    x = as_float(digits.test.take(128).images)
    with torch.no_grad():
        for t in (0.5,):
            # lerp(a, b, t) and (1 - t) a + t b differ in the last float32 bit of a weight,
            # which batch norm and repair carry to the outputs at that relative size
            torch.testing.assert_close(segment.at(t).eval()(x), line.at(t).eval()(x),
                                       rtol=1e-4, atol=1e-4)
