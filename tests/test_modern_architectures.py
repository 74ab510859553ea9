"""Transformers and modern convnets: for each family (random weights, small inputs) the spec is
traced, a random permutation leaves the function unchanged, and it moves every weight that can be
moved. Models are built small (few blocks, narrow) where the family's constructor allows, so the
whole file runs in seconds."""

import copy
import json

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.resnet import Bottleneck

from robust_mc.core.permutation import (
    apply_permutation,
    permute_model,
    random_permutation,
    trace_permutation_spec,
)
from robust_mc.models import create_model

timm = pytest.importorskip("timm")

SHUFFLE = "the channel shuffle reorders units across the two branches"
TOKENS = "token-mixing outputs are positions, added to the token axis"


def _tv(factory, **kwargs):
    return lambda: factory(num_classes=7, **kwargs)


def _timm(name, **kwargs):
    return lambda: timm.create_model(name, pretrained=False, num_classes=7, **kwargs)


def _zoo(arch):
    return lambda: create_model(arch, num_classes=7, in_channels=3, mean=(0.5,) * 3,
                                std=(0.25,) * 3, width=0.5, image_size=32)


# name -> (build, image side, share of parameter entries moved where some stay, why they stay);
# elsewhere every parameter moves but the logits' bias
FAMILIES = {
    "torchvision:vit": (_tv(tvm.VisionTransformer, image_size=32, patch_size=8, num_layers=2,
                            num_heads=2, hidden_dim=16, mlp_dim=32), 32, 1.0, None),
    "torchvision:swin": (_tv(tvm.SwinTransformer, patch_size=[4, 4], embed_dim=8,
                             depths=[2, 2], num_heads=[2, 2], window_size=[2, 2]),
                         32, 1.0, None),
    "torchvision:convnext": (_tv(tvm.ConvNeXt, block_setting=[CNBlockConfig(8, 16, 1),
                                                              CNBlockConfig(16, None, 1)]),
                             32, 1.0, None),
    "torchvision:resnext": (_tv(tvm.ResNet, block=Bottleneck, layers=[1, 1, 1, 1], groups=4,
                                width_per_group=2), 32, 1.0, None),
    "torchvision:regnet": (_tv(tvm.regnet_y_400mf), 32, 1.0, None),
    "torchvision:shufflenet": (_tv(tvm.shufflenet_v2_x0_5), 32, 0.9, SHUFFLE),
    "torchvision:efficientnet": (_tv(tvm.efficientnet_b0), 32, 1.0, None),
    "torchvision:mobilenet_v2": (_tv(tvm.mobilenet_v2, width_mult=0.25), 32, 1.0, None),
    "torchvision:mobilenet_v3": (_tv(tvm.mobilenet_v3_small), 32, 1.0, None),
    "torchvision:googlenet": (_tv(tvm.GoogLeNet, aux_logits=False, init_weights=False),
                              32, 1.0, None),
    "torchvision:densenet": (_tv(tvm.DenseNet, growth_rate=4, block_config=(2, 2),
                                 num_init_features=8), 32, 1.0, None),
    "timm:vit": (_timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2,
                       embed_dim=16, num_heads=2), 32, 1.0, None),
    "timm:vit_qk_norm": (_timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2,
                               embed_dim=16, num_heads=2, qk_norm=True), 32, 1.0, None),
    "timm:deit": (_timm("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=2,
                        embed_dim=16, num_heads=2), 32, 1.0, None),
    "timm:mixer": (lambda: timm.models.mlp_mixer.MlpMixer(
        num_classes=7, img_size=32, patch_size=8, num_blocks=2, embed_dim=16), 32, 0.99, TOKENS),
    "timm:convnext": (_timm("convnext_atto", dims=(8, 16, 16, 16)), 32, 1.0, None),
    "timm:regnetx": (_timm("regnetx_002"), 32, 1.0, None),
    "timm:efficientnet": (_timm("efficientnet_b0"), 32, 1.0, None),
    "timm:mobilenetv3": (_timm("mobilenetv3_small_050"), 32, 1.0, None),
    "timm:resnet": (_timm("resnet10t"), 32, 1.0, None),
    "timm:swin": (_timm("swin_tiny_patch4_window7_224", img_size=32, window_size=4,
                        embed_dim=8, depths=(2, 2), num_heads=(2, 2)), 32, 1.0, None),
    "zoo:vit_cifar": (_zoo("vit_cifar"), 32, 1.0, None),
    "zoo:convnext_cifar": (_zoo("convnext_cifar"), 32, 1.0, None),
}


def randomized(model: nn.Module) -> nn.Module:
    """Every parameter and buffer random (biases, norms and zero-initialised heads included), so
    that a wrongly permuted tensor of any kind changes the outputs; float64, so that the
    comparison measures permutation errors, not float32 rounding."""
    generator = torch.Generator().manual_seed(0)
    model = model.double().eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            if "running_var" in name:
                tensor.copy_(noise.abs() + 0.5)
            elif tensor.dim() > 1 and tensor.abs().max() > 0:
                tensor.add_(0.1 * tensor.std() * noise)
            else:
                tensor.copy_(0.1 * noise + (1.0 if "weight" in name else 0.0))
    return model


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_permutation_keeps_the_function(family):
    build, side, share, why = FAMILIES[family]
    torch.manual_seed(0)
    model = randomized(build())
    x = torch.rand(2, 3, side, side, dtype=torch.float64)
    spec = trace_permutation_spec(model, x.float())
    moved = {a.name for s in spec for a in s.axes}
    if why is None:
        assert spec.fixed == []
        still = [n for n, p in model.named_parameters() if n not in moved]
        assert all(model.get_parameter(n).shape == (7,) for n in still), still
    else:
        assert spec.fixed and spec.moved_share(model) >= share, f"{family}: {why}"
    perm = random_permutation(spec, torch.Generator().manual_seed(1))
    permuted = randomized(build())
    permuted.load_state_dict(apply_permutation(model.state_dict(), spec, perm))
    after = permuted.state_dict()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, after[k])]
    assert len(changed) > len(spec) / 2  # the weights did move
    with torch.no_grad():
        reference = model(x)
        error = (permuted(x) - reference).abs().max() / reference.abs().max()
    # float64 sums in another order: relative rounding ~1e-15; a wrong permutation is O(1)
    assert error < 1e-5, f"{family}: relative output change {error:.1e}"


@pytest.mark.parametrize("family", ["timm:vit", "timm:vit_qk_norm", "torchvision:swin",
                                    "zoo:vit_cifar"])
def test_attention_heads_are_permuted_as_wholes(family):
    build, side, _, _ = FAMILIES[family]
    model = randomized(build())
    spec = trace_permutation_spec(model, torch.rand(2, 3, side, side))
    grouped = [s for s in spec if s.blocks is not None]
    assert grouped and all(s.blocks.space is not None for s in grouped)
    perm = random_permutation(spec, torch.Generator().manual_seed(3))
    for space in grouped:  # whole heads move: each block maps onto one block
        p = perm[space.name].view(-1, space.blocks.size) // space.blocks.size
        assert (p == p[:, :1]).all()


RESNEXT = '''
from torch import nn
from torchvision.models.resnet import Bottleneck


class SmallResNeXt(nn.Module):
    """Two of torchvision's ResNeXt bottlenecks (4 groups), the second downsampling."""

    def __init__(self, num_classes: int = 10, **_):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        self.blocks = nn.Sequential(Bottleneck(16, 4, groups=4),
                                    Bottleneck(16, 8, stride=2, downsample=down, groups=4))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))
'''


@pytest.fixture(scope="module")
def resnext(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("resnext")
    (folder / "resnext.py").write_text(RESNEXT)
    return f"{folder / 'resnext.py'}:SmallResNeXt"


@pytest.mark.parametrize("arch, kwargs", [("vit_cifar", "{width: 0.5}"),
                                          ("convnext_cifar", "{width: 0.25}"),
                                          ("resnext", "{}")])
def test_a_permuted_copy_is_recovered_exactly_from_the_cli(arch, kwargs, resnext, tmp_path,
                                                           runtime):
    """Heads, units within heads, MLP units, convolution groups: all permuted at random, and
    ``robust-mc align --align-method corr`` puts every weight back where it was."""
    import yaml
    from robust_mc_testkit import assert_units_separable

    from robust_mc import cli
    from robust_mc.config import DataConfig
    from robust_mc.data import as_float, batches, load_data

    arch = resnext if arch == "resnext" else arch
    data = load_data(DataConfig(dataset="synthetic:32"))
    torch.manual_seed(0)
    model = randomized(create_model(arch, num_classes=data.info.num_classes, in_channels=3,
                                    mean=(0.5,) * 3, std=(0.25,) * 3, image_size=32,
                                    kwargs=yaml.safe_load(kwargs))).float()
    images = data.train.take(400)
    spec = trace_permutation_spec(model, as_float(images.images[:2]))
    assert_units_separable(model, spec, list(batches(images, 100)), runtime)
    shuffled = {k: v.clone() for k, v in model.state_dict().items()}
    shuffled = apply_permutation(shuffled, spec, random_permutation(
        spec, torch.Generator().manual_seed(4)))
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for path, state in zip(paths, (model.state_dict(), shuffled), strict=True):
        torch.save({k.removeprefix("net."): v for k, v in state.items()
                    if k.startswith("net.")}, path)
    out = tmp_path / "aligned.pt"
    assert cli.main(["align", *map(str, paths), "--arch", arch, "--model-kwargs", kwargs,
                     "--normalization", "0.5:0.25", "--dataset", "synthetic:32",
                     "--align-method", "corr", "--align-samples", "400", "--out", str(out),
                     "--device", "cpu", "--json"]) == 0
    aligned = torch.load(out, weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        if key.startswith("net."):  # the network's own state (the input normalisation aside)
            assert torch.equal(aligned[key.removeprefix("net.")], value), key


ROLLED = '''
import torch
from torch import nn


class Rolled(nn.Module):
    """Channels rolled by one between two convolutions: no permutation commutes with that."""

    def __init__(self, num_classes: int = 10, **_):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.c, self.fc = nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.roll(torch.relu(self.b(torch.relu(self.a(x)))), 1, 1)
        return self.fc(torch.relu(self.c(x)).mean((2, 3)))
'''


def test_partial_alignment_leaves_what_it_cannot_follow_and_says_so(tmp_path, capsys):
    from robust_mc import cli

    (tmp_path / "rolled.py").write_text(ROLLED)
    arch = f"{tmp_path / 'rolled.py'}:Rolled"
    torch.manual_seed(0)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = create_model(arch, num_classes=4, in_channels=3, mean=(0.5,) * 3,
                             std=(0.25,) * 3)
        paths.append(str(tmp_path / f"{seed}.pt"))
        torch.save({k.removeprefix("net."): v for k, v in model.state_dict().items()
                    if k.startswith("net.")}, paths[-1])
    common = [*paths, "--arch", arch, "--normalization", "0.5:0.25", "--dataset", "synthetic",
              "--align-samples", "100", "--device", "cpu", "--out", str(tmp_path / "x.pt")]
    assert cli.main(["align", *common]) == 2  # stops by default, naming the operation and flag
    err = capsys.readouterr().err
    assert "roll in module 'net'" in err and "--partial-alignment" in err
    assert "Traceback" not in err
    assert cli.main(["align", *common, "--partial-alignment", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # each node left alone: operation and module
    assert any("roll in module 'net'" in op for op in report["left_alone"])
    assert report["function_error"] < 1e-5  # what is aligned still computes the same function
    moved = {space["name"] for space in report["spaces"]}
    assert "net.a" in moved and "net.b" not in moved and "net.c" in moved


VIT_TRAIN = ["--dataset", "synthetic", "--epochs", "2", "--attack-steps", "2", "--eps", "0.05",
             "--optimizer", "adamw", "--lr", "0.002", "--eval-attack", "pgd:steps=2",
             "--device", "cpu", "--json"]
CONNECT = ["--epochs", "1", "--points", "3", "--attack-steps", "1", "--eval-attack", "none",
           "--align-samples", "200", "--optimizer", "adamw", "--lr", "0.001", "--device", "cpu",
           "--json"]
TIMM_VIT = ["--arch", "timm:vit_tiny_patch16_224", "--model-kwargs",
            "{img_size: 12, patch_size: 4, depth: 2, embed_dim: 32, num_heads: 2}"]


@pytest.mark.slow
def test_connect_between_two_pgd_trained_vits(tmp_path, capsys):
    """Two small ViTs trained by ``robust-mc train`` (PGD), then connected: the zoo's vit_cifar
    from its checkpoints, and timm's ViT from bare state dicts."""
    from robust_mc import cli

    for name, arch in (("zoo", ["--arch", "vit_cifar", "--width", "0.5"]), ("timm", TIMM_VIT)):
        paths = [tmp_path / f"{name}{seed}.pt" for seed in (0, 1)]
        for seed, path in enumerate(paths):
            assert cli.main(["train", *arch, "--seed", str(seed), "--out", str(path),
                             *VIT_TRAIN]) == 0
        capsys.readouterr()
        given: list[str] = []
        if name == "timm":  # as another codebase would save them: the network's state alone
            for path in paths:
                torch.save(torch.load(path, weights_only=True)["state_dict"], path)
            given = [*TIMM_VIT, "--normalization", "0.5:0.25", "--dataset", "synthetic"]
        out = tmp_path / f"run-{name}"
        assert cli.main(["connect", *map(str, paths), *given, *CONNECT, "--out", str(out)]) == 0
        capsys.readouterr()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["alignment"]["function_error"] < 1e-4
        assert any(space["name"].endswith("/groups") for space in summary["alignment"]["spaces"])
        for file in ("curve.pt", "summary.json", "path.json", "path.csv", "best.pt"):
            assert (out / file).is_file(), file


class RecurrentMixer(nn.Module):
    """Tokens mixed by an LSTM (whose gates no permutation of its units commutes with), and an
    MLP on the residual stream."""

    def __init__(self):
        super().__init__()
        self.embed, self.rnn = nn.Conv2d(3, 16, 4, 4), nn.LSTM(16, 16, batch_first=True)
        self.norm, self.fc = nn.LayerNorm(16), nn.Linear(16, 5)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        mixed, _ = self.rnn(self.norm(x))  # the (h, c) pair is a nested tuple
        x = x + mixed
        return self.fc((x + self.mlp(self.norm(x))).mean(1))


def test_a_recurrent_token_mixer_is_refused_in_one_line_or_left_alone():
    from robust_mc.errors import UserError
    from robust_mc.models.normalize import Classifier, Normalize

    model = randomized(Classifier(Normalize((0.5,) * 3, (0.25,) * 3), RecurrentMixer()))
    example = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(UserError, match=r"module 'net.rnn' \(LSTM\)"):
        trace_permutation_spec(model, example)
    spec = trace_permutation_spec(model, example, partial=True)
    assert [space.name for space in spec] == ["net.mlp.0"]
    assert "net.rnn" in spec.left_alone(model)
    shuffled = copy.deepcopy(model)
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(0)))
    with torch.no_grad():
        assert torch.allclose(shuffled(example), model(example), rtol=1e-10, atol=1e-12)


def test_rotary_heads_move_as_wholes():
    """EVA-02's rotary embedding rotates pairs of each head's dimensions by position, so no
    permutation within a head commutes with it; whole heads still do, and are permuted."""
    model = randomized(timm.create_model(
        "eva02_tiny_patch14_224", pretrained=False, num_classes=7, img_size=32, patch_size=8,
        depth=2, embed_dim=32, num_heads=4))
    example = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    spec = trace_permutation_spec(model, example)
    heads = [s for s in spec if any(a.name == "blocks.0.attn.qkv.weight" and a.repeat == 8
                                    for a in s.axes)]
    assert len(heads) == 1 and heads[0].size == 4  # q and k rows moved a head (8 rows) at a time
    shuffled = copy.deepcopy(model)
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(2)))
    with torch.no_grad():
        assert torch.allclose(shuffled(example), model(example), rtol=1e-10, atol=1e-12)
    before = model.state_dict()["blocks.0.attn.q_bias"].reshape(4, 8)  # rows: no stream axis
    after = shuffled.state_dict()["blocks.0.attn.q_bias"].reshape(4, 8)
    order = [next(j for j in range(4) if torch.equal(after[i], before[j])) for i in range(4)]
    assert sorted(order) == [0, 1, 2, 3] and order != [0, 1, 2, 3]
