"""Robust models robust-mc did not make: a user's class with its own ``width``, plain state
dicts in other codebases' layouts, and factories such as torchvision's."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from robust_mc_testkit import assert_units_separable

from robust_mc import cli
from robust_mc.core.align import align
from robust_mc.core.permutation import permute_model, random_permutation, trace_permutation_spec
from robust_mc.data import batches
from robust_mc.errors import UserError
from robust_mc.models import create_model

USER_NET = '''
import torch
from torch import nn


class Net(nn.Module):
    """A user's network: its own ``width`` is a channel count, with a residual add and a
    concatenation of two branches."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.BatchNorm2d(width))
        self.left = nn.Conv2d(width, width // 2, 1)
        self.right = nn.Conv2d(width, width - width // 2, 3, padding=1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.body(x))
        x = torch.relu(torch.cat([self.left(x), self.right(x)], dim=1))
        return self.head(x.mean(dim=(2, 3)))
'''
QUICK_TRAIN = ["--dataset", "digits", "--epochs", "1", "--attack-steps", "1", "--eval-attack",
               "none", "--device", "cpu", "--json"]


@pytest.fixture(scope="module")
def user_net(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("user")
    (folder / "user_net.py").write_text(USER_NET)
    return f"{folder / 'user_net.py'}:Net"


@pytest.fixture(scope="module")
def user_endpoints(user_net, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("user-endpoints")
    paths = [folder / f"e{seed}.pt" for seed in (0, 1)]
    for seed, path in enumerate(paths):
        assert cli.main(["train", "--arch", user_net, "--model-kwargs", "{width: 12}",
                         "--seed", str(seed), "--out", str(path), *QUICK_TRAIN]) == 0
    return paths


def test_a_user_class_keeps_its_own_width_and_trains_aligns_and_connects(
        user_net, user_endpoints, tmp_path, capsys):
    from robust_mc.store.checkpoint import LoadOptions
    from robust_mc.store.checkpoint_files import load_checkpoint
    from robust_mc.store.model_building import build_model

    model = build_model(load_checkpoint(user_endpoints[0], LoadOptions(arch=user_net)))
    assert model.net.stem[0].out_channels == 12  # its own width, not robust-mc's multiplier
    a, b = map(str, user_endpoints)
    assert cli.main(["align", a, b, "--arch", user_net, "--align-samples", "300",
                     "--out", str(tmp_path / "b_aligned.pt"), "--device", "cpu",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["function_error"] < 1e-4
    assert cli.main(["connect", a, b, "--arch", user_net, "--epochs", "1", "--points", "3",
                     "--attack-steps", "1", "--eval-attack", "none", "--bn-images", "100",
                     "--align-samples", "300", "--out", str(tmp_path / "run"),
                     "--device", "cpu", "--json"]) == 0
    assert (tmp_path / "run" / "best.pt").is_file()


def test_a_permuted_copy_of_a_user_class_is_recovered_exactly(user_net, user_endpoints, digits,
                                                              runtime):
    from robust_mc.store.checkpoint import LoadOptions
    from robust_mc.store.checkpoint_files import load_checkpoint
    from robust_mc.store.model_building import build_model

    model = build_model(load_checkpoint(user_endpoints[0], LoadOptions(arch=user_net))).eval()
    with torch.no_grad():  # dead units: zero after the ReLU that follows the concatenation
        model.net.left.bias[:3] = -1e4
    spec = trace_permutation_spec(model, digits.train.images[:2])
    shuffled = copy.deepcopy(model)
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(3)))
    assert_units_separable(model, spec, list(batches(digits.train, 256)), runtime)
    result = align(model, shuffled, list(batches(digits.train, 256)), spec=spec,
                   runtime=runtime)
    assert any(space.no_signal for space in result.spaces)
    permute_model(shuffled, spec, result.perm)
    for key, value in model.state_dict().items():
        assert torch.equal(shuffled.state_dict()[key], value), key


def test_robust_mc_s_width_multiplier_is_refused_for_a_user_class(user_net):
    with pytest.raises(UserError, match="--model-kwargs"):
        create_model(user_net, num_classes=10, in_channels=1, mean=[0.0], std=[1.0], width=0.5)


@pytest.mark.parametrize("arch", ["torchvision.models:resnet18", "timm:resnet18"])
def test_a_library_factory_builds_with_only_what_it_accepts(arch):
    if arch.startswith("timm"):
        pytest.importorskip("timm")
    model = create_model(arch, num_classes=7, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3,
                         image_size=32)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("layout", ["bare", "model_state", "module_prefixed", "safetensors"])
def test_plain_state_dicts_are_read_by_every_command_with_arch(layout, tiny_endpoint_files,
                                                               tmp_path, capsys):
    files = []
    for name in ("a", "b"):
        state = torch.load(tiny_endpoint_files[name], weights_only=True)["state_dict"]
        if layout == "model_state":
            state = {"model_state": state}
        elif layout == "module_prefixed":
            state = {f"module.{k}": v for k, v in state.items()}
        if layout == "safetensors":
            from safetensors.torch import save_file

            files.append(str(tmp_path / f"{name}.safetensors"))
            save_file({k: v.contiguous() for k, v in state.items()}, files[-1])
            continue
        files.append(str(tmp_path / f"{name}.pt"))
        torch.save(state, files[-1])
    # the zoo's width is --width here as in train, where the file does not record it
    given = ["--arch", "cnn", "--width", "0.25", "--model-kwargs", "{in_channels: 1}",
             "--normalization", "0.5:0.25"]
    common = [*given, "--device", "cpu", "--json"]
    assert cli.main(["info", files[0], *given, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert cli.main(["eval", files[0], *common, "--eval-attack", "none"]) == 0
    assert cli.main(["align", *files, *common, "--align-samples", "200",
                     "--out", str(tmp_path / "aligned.pt")]) == 0
    assert cli.main(["layers", *files, *given, "--points", "3", "--samples", "100",
                     "--groups", "blocks", "--attack-steps", "1", "--device", "cpu",
                     "--out", str(tmp_path / "layers")]) == 0
    assert cli.main(["connect", *files, *common, "--epochs", "1", "--points", "2",
                     "--attack-steps", "1", "--eval-attack", "none", "--bn-images", "100",
                     "--align-samples", "200", "--out", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--normalization", "imagenet"], "drop --width, --model-kwargs and --normalization"),
    (["--model-kwargs", "{depth: 3}"], "drop --width, --model-kwargs and --normalization"),
    (["--width", "0.5"], "drop --width, --model-kwargs and --normalization"),
    (["--width", "0"], "--width 0: give a multiplier from 0.01 to 64"),
    (["--model-kwargs", "[1, 2]"], "--model-kwargs: give a mapping"),
    (["--normalization", "0.5:-1"], "--normalization '0.5:-1'"),
])
def test_bad_foreign_settings_are_one_line_errors(extra, message, tiny_endpoint_files, capsys):
    assert cli.main(["info", str(tiny_endpoint_files["a"]), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err



def test_a_bench_config_reads_plain_state_dict_pairs(tiny_endpoint_files, tmp_path, capsys):
    files = []
    for name in ("a", "b"):
        files.append(tmp_path / f"{name}.pt")
        torch.save(torch.load(tiny_endpoint_files[name], weights_only=True)["state_dict"],
                   files[-1])
    config = tmp_path / "bench.yaml"
    config.write_text(
        f"data: {{dataset: digits}}\n"
        f"bench: {{pairs: [[{files[0]}, {files[1]}]], methods: [line], arch: cnn,\n"
        f"        model_kwargs: {{width: 0.25}}, normalization: '0.305:0.377'}}\n"
        "connect: {path: {points: 2, attack: none, bn_images: 100}}\n")
    assert cli.main(["bench", "--config", str(config), "--out", str(tmp_path / "bench"),
                     "--device", "cpu", "--json"]) == 0
    assert "line" in json.loads(capsys.readouterr().out)["table"]
