import pytest
import torch

from robust_mc.errors import UserError
from robust_mc.models import create_model, list_models
from robust_mc.store.checkpoint import checkpoint_from_model, save_checkpoint
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_model


def tiny(arch: str, **kw):
    width = 0.1 if arch in ("wrn28_10", "vgg16_bn", "vgg11_bn", "preact_resnet18") else 0.5
    return create_model(arch, num_classes=5, in_channels=3, mean=(0.5,) * 3, std=(0.25,) * 3,
                        width=width, image_size=16, **kw), width


@pytest.mark.parametrize("arch", list_models())
def test_every_model_learns_and_round_trips(arch, tmp_path):
    torch.manual_seed(0)
    model, width = tiny(arch)
    x = torch.rand(4, 3, 16, 16)
    out = model(x)
    assert out.shape == (4, 5)
    out.logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    model.eval()
    ckpt = checkpoint_from_model(model, arch, {"num_classes": 5, "in_channels": 3,
                                               "width": width, "image_size": 16})
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    again = build_model(load_checkpoint(path)).eval()
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    assert torch.equal(model(x), again(x))


def test_user_architecture_from_file(tmp_path):
    (tmp_path / "mynet.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes, hidden=7):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Flatten(), nn.Linear(48, hidden), nn.ReLU(),\n"
        "                                  nn.Linear(hidden, num_classes))\n"
        "    def forward(self, x):\n"
        "        return self.body(x)\n")
    model = create_model(f"{tmp_path / 'mynet.py'}:Net", num_classes=3, in_channels=3,
                         mean=(0.5,) * 3, std=(0.5,) * 3, image_size=4, kwargs={"hidden": 5})
    assert model(torch.rand(2, 3, 4, 4)).shape == (2, 3)
    assert model.net.body[1].out_features == 5


@pytest.mark.parametrize("arch", list_models())
def test_folded_batchnorm_is_the_same_function(arch):
    from robust_mc.core.fold import fold_batchnorm

    model, _ = tiny(arch)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, 16, 16))
    model.eval()
    folded = fold_batchnorm(model)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
        assert (folded(x) - reference).abs().max() < 1e-5 * max(1.0, reference.abs().max())
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) and arch != "mlp":
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) < \
            sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_every_zoo_architecture_names_its_arguments_and_their_ranges():
    """A zoo factory swallows no unknown argument (no ``**kwargs``): every argument has a
    default of a checkable type, and every bound or choice it registers names one of them."""
    import inspect

    from robust_mc.models._registry import MODELS

    for arch in list_models():
        entry = MODELS.entry(arch)
        parameters = inspect.signature(MODELS.get(arch)).parameters.values()
        assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters), arch
        assert all(type(p.default) in (int, float, str, bool) for p in parameters), arch
        names = {p.name for p in parameters}
        assert {"num_classes", "in_channels", "width"} <= names, arch
        assert set(entry.meta["bounds"]) | set(entry.meta["choices"]) <= names, arch


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 0}, "depth: 0 is outside"), ({"heads": 2.5}, "heads: 2.5 is not a whole number"),
    ({"depth": True}, "depth: True is not a number"), ({"width": float("inf")}, "not a finite"),
    ({"dim": 8}, "takes no argument 'dim'"), ({"depth": 10**40}, "more than 19 digits")])
def test_zoo_arguments_are_checked_before_anything_is_built(kwargs, message):
    with pytest.raises(UserError, match=message):
        create_model("vit_cifar", num_classes=10, in_channels=3, mean=[0.0], std=[1.0],
                     kwargs=kwargs)
