"""The weight average (``train --ema DECAY``): of a constant model it is the model, each step
moves it by (1 - decay), and the endpoint saved is the average."""

from __future__ import annotations

import copy

import torch

from robust_mc import cli
from robust_mc.models import create_model
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.train.ema import WeightAverage

QUICK = ["train", "--dataset", "synthetic", "--arch", "cnn", "--width", "0.5", "--epochs", "2",
         "--attack-steps", "1", "--eval-attack", "none", "--device", "cpu",
         "--json"]


def net():
    torch.manual_seed(0)
    return create_model("cnn", num_classes=4, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3)


def test_the_average_of_a_constant_model_is_the_model():
    model = net()
    average = WeightAverage(model, 0.9)
    for _ in range(5):
        average.update()
    for name, param in model.named_parameters():
        assert torch.equal(average.average[name], param), name


def test_each_step_moves_the_average_by_one_minus_decay():
    model = net()
    before = copy.deepcopy(model)
    average = WeightAverage(model, 0.75)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    average.update()
    target = copy.deepcopy(model)
    average.copy_to(target)
    for (name, old), new, avg in zip(before.named_parameters(), model.parameters(),
                                     target.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.75 * old + 0.25 * new, msg=name)


def test_the_endpoint_saved_is_the_average(tmp_path, capsys):
    paths = {name: tmp_path / f"{name}.pt" for name in ("live", "decay0", "decay1")}
    assert cli.main([*QUICK, "--out", str(paths["live"])]) == 0
    assert cli.main([*QUICK, "--ema", "0", "--out", str(paths["decay0"])]) == 0
    assert cli.main([*QUICK, "--ema", "1", "--out", str(paths["decay1"])]) == 0
    live, decay0, decay1 = (load_checkpoint(paths[n]) for n in ("live", "decay0", "decay1"))
    assert decay0.meta.objective.ema == 0.0
    for name, value in live.state_dict.items():  # decay 0: the average is the last weights
        assert torch.equal(decay0.state_dict[name], value), name
    torch.manual_seed(0)  # decay 1: the average never moves from the initial weights
    start = create_model("cnn", num_classes=4, in_channels=3, mean=[0.5] * 3,
                         std=[0.25] * 3, width=0.5)
    for name, param in start.net.named_parameters():
        assert torch.equal(decay1.state_dict[name], param.detach()), name
