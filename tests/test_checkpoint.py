import os
import pickle

import pytest
import torch

from robust_mc.data import Normalization
from robust_mc.errors import UserError
from robust_mc.models import create_model
from robust_mc.store.checkpoint import LoadOptions, checkpoint_from_model, save_checkpoint
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_model

KW = {"num_classes": 4, "in_channels": 3, "width": 0.5, "image_size": 12}
NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}


def model():
    torch.manual_seed(0)
    return create_model("tinyten", mean=NORM["mean"], std=NORM["std"], **KW).eval()


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model_state": sd, "epoch": 3},
    lambda sd: {"state_dict": sd},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
], ids=["bare", "model_state", "state_dict", "dataparallel", "ddp-in-dict"])
def test_foreign_formats_load(tmp_path, wrap):
    m = model()
    torch.save(wrap(m.net.state_dict()), tmp_path / "f.pt")
    ckpt = load_checkpoint(tmp_path / "f.pt", LoadOptions(arch="tinyten", arch_kwargs=KW,
                                                       normalization=Normalization.of(**NORM)))
    again = build_model(ckpt).eval()
    x = torch.rand(2, 3, 12, 12)
    assert torch.equal(m(x), again(x))


def test_foreign_state_dict_needs_arch(tmp_path):
    torch.save(model().net.state_dict(), tmp_path / "f.pt")
    with pytest.raises(UserError, match="--arch"):
        load_checkpoint(tmp_path / "f.pt")


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = "/tmp/robust-mc-test-pwned"


def test_malicious_pickle_is_refused_without_running(tmp_path):
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Exploit()}, f)
    with pytest.raises(UserError, match="--trust-checkpoint"):
        load_checkpoint(path)
    assert not os.path.exists(MARKER)
    torch.save({"payload": Exploit()}, tmp_path / "evil2.pt")
    with pytest.raises(UserError, match="--trust-checkpoint"):
        load_checkpoint(tmp_path / "evil2.pt")
    assert not os.path.exists(MARKER)


def native(tmp_path, edit):
    ckpt = checkpoint_from_model(model(), "tinyten", KW)
    edit(ckpt)
    return save_checkpoint(ckpt, tmp_path / "n.pt")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.state_dict.pop("fc.bias"), "missing key 'fc.bias'"),
    (lambda c: c.state_dict.__setitem__("extra.w", torch.zeros(1)), "unexpected key 'extra.w'"),
    (lambda c: c.state_dict.__setitem__("fc.bias", torch.zeros(7)), "shape mismatch at 'fc.bias'"),
    (lambda c: c.state_dict["fc.weight"].__setitem__((0, 0), float("nan")),
     "non-finite values in 'fc.weight'"),
    (lambda c: c.arch_kwargs.__setitem__("width", 1.0), "shape mismatch"),
])
def test_bad_weights_name_the_first_offending_key(tmp_path, edit, message):
    with pytest.raises(UserError, match=message):
        build_model(load_checkpoint(native(tmp_path, edit)))


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"), (b"not a checkpoint at all", "not a PyTorch checkpoint"),
    (b"PK\x03\x04 cut short", "truncated or corrupt"),
    (b"\x80\x04 garbage", "not a readable checkpoint")])
def test_garbage_files(tmp_path, content, message):
    (tmp_path / "g.pt").write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_checkpoint(tmp_path / "g.pt")


def test_truncated_file(tmp_path):
    path = native(tmp_path, lambda c: None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_checkpoint(path)
