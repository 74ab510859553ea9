"""Adversarial weight perturbation (``train --awp GAMMA``): each layer moves by gamma times its
norm up the adversarial loss, the step's gradient is taken there, and the weights come back
exactly, with the step's update applied."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from robust_mc import cli
from robust_mc.models import create_model
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.train.awp import WeightPerturbation


def net():
    torch.manual_seed(0)
    return create_model("cnn", num_classes=4, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3)


def batch():
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(16, 3, 8, 8, generator=generator),
            torch.randint(0, 4, (16,), generator=generator))


def test_each_layer_moves_by_gamma_of_its_norm_and_comes_back_exactly():
    model, (x, y) = net(), batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    awp = WeightPerturbation(model, gamma=0.01)
    awp.perturb(x, y)
    for name, param in model.named_parameters():
        moved = (param - before[name]).norm()
        if param.dim() > 1:
            assert (moved / before[name].norm()).item() == pytest.approx(0.01, rel=1e-3), name
        else:
            assert moved == 0, name  # biases and BN parameters stay
    awp.restore()
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_the_step_is_taken_at_the_perturbed_weights_and_applied_to_the_original():
    model, (x, y) = net(), batch()
    awp = WeightPerturbation(model, gamma=0.01)
    original = copy.deepcopy(model)
    awp.perturb(x, y)
    perturbed = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    awp.restore()
    perturbed.train()
    loss = F.cross_entropy(perturbed(x), y)
    grads = torch.autograd.grad(loss, list(perturbed.parameters()))
    for (name, param), start, grad in zip(model.named_parameters(), original.parameters(), grads,
                                          strict=True):
        torch.testing.assert_close(param, start - 0.1 * grad, msg=name)


def test_train_with_awp_records_it_and_refuses_objectives_without_labels(tmp_path, capsys):
    out = tmp_path / "a.pt"
    args = ["train", "--dataset", "synthetic", "--arch", "cnn", "--width", "0.5", "--epochs",
            "2", "--attack-steps", "1", "--eval-attack", "none", "--device", "cpu", "--json"]
    assert cli.main([*args, "--awp", "0.005", "--awp-warmup", "1", "--out", str(out)]) == 0
    assert load_checkpoint(out).meta.objective.awp == 0.005
    assert cli.main([*args, "--awp", "0.005", "--objective", "trades",
                     "--out", str(tmp_path / "b.pt")]) == 2
    err = capsys.readouterr().err
    assert "--objective adversarial, madry or mart" in err and len(err.strip().splitlines()) == 1
