"""Layer-wise barriers: the second-order prediction is exact on a quadratic, HVPs are right,
and a model against itself has no barrier anywhere."""

import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from robust_mc import cli
from robust_mc.evaluation.layers import (
    gradient_and_hvp,
    interpolated,
    parameter_groups,
    predicted_barrier,
)
from robust_mc.store.checkpoint import save_checkpoint


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
    from robust_mc.store.checkpoint import build_model

    groups = parameter_groups(build_model(digits_endpoints[0]), "modules")
    conv = next(g for g in groups.values() if any("features.0.0" in n for n in g))
    assert any("features.0.1" in n for n in conv)


def test_a_model_against_itself_has_no_barrier_anywhere(digits_endpoints, tmp_path, capsys):
    path = str(save_checkpoint(digits_endpoints[0], tmp_path / "a.pt"))
    code = cli.main(["layers", path, path, "--no-align", "--samples", "128", "--points", "3",
                     "--out", str(tmp_path / "out"), "--device", "cpu", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)["unaligned"]["groups"]
    assert rows and rows[-1]["group"] == "(whole network)"
    for row in rows:
        for key, value in row.items():
            if "barrier" in key or "midpoint" in key:  # the same weights at every t: the
                assert abs(value) < 1e-6, (row["group"], key, value)  # same arithmetic
    assert (tmp_path / "out" / "layers.csv").is_file()
