"""Models for people without robust-mc: safetensors (weights plus metadata) and plain state
dicts, read back by robust-mc and by plain torch/safetensors code with identical logits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from robust_mc import cli
from robust_mc.data import Normalization
from robust_mc.store.checkpoint import LoadOptions
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_model
from robust_mc.store.safetensors_format import safetensors_bytes

ROUND_TRIP = """
import sys, json, torch
from safetensors import safe_open
from safetensors.torch import load_file
from robust_mc.models import create_model
path = sys.argv[1]
with safe_open(path, framework="pt") as f:
    record = json.loads(f.metadata()["robust-mc"])
kwargs = dict(record["arch_kwargs"])
model = create_model(record["arch"], mean=record["normalization"]["mean"],
                     std=record["normalization"]["std"], kwargs=record["model_kwargs"],
                     **kwargs)
model.net.load_state_dict(load_file(path))
x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
print(json.dumps(model.eval()(x).tolist()))
"""


def logits_of(model) -> list:
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x).tolist()


def test_safetensors_round_trip_in_a_fresh_process(tiny_endpoint_files, tmp_path, capsys):
    out = tmp_path / "a.safetensors"
    assert cli.main(["export", str(tiny_endpoint_files["a"]), "--format", "safetensors",
                     "-o", str(out)]) == 0
    original = build_model(load_checkpoint(tiny_endpoint_files["a"]))
    again = build_model(load_checkpoint(out))  # every command reads it like a .pt file
    assert logits_of(again) == logits_of(original)
    fresh = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(out)], capture_output=True,
                           text=True, check=True)
    assert torch.allclose(torch.tensor(json.loads(fresh.stdout)),
                          torch.tensor(logits_of(original)))
    assert cli.main(["info", str(out)]) == 0


def test_a_plain_state_dict_export_has_its_metadata_beside_it(tiny_endpoint_files, tmp_path,
                                                              capsys):
    out = tmp_path / "a_weights.pt"
    assert cli.main(["export", str(tiny_endpoint_files["a"]), "--format", "state-dict",
                     "-o", str(out)]) == 0
    record = json.loads((tmp_path / "a_weights.pt.json").read_text())
    state = torch.load(out, weights_only=True)
    assert record["arch"] == "cnn" and set(state) == set(
        load_checkpoint(tiny_endpoint_files["a"]).state_dict)
    options = LoadOptions(arch=record["arch"], arch_kwargs=record["arch_kwargs"],
                          normalization=Normalization.of(**record["normalization"]))
    again = build_model(load_checkpoint(out, options))
    assert logits_of(again) == logits_of(build_model(load_checkpoint(tiny_endpoint_files["a"])))


def test_a_safetensors_file_is_held_to_the_same_trust_rules(tiny_endpoint_files, tmp_path,
                                                            capsys):
    native = torch.load(tiny_endpoint_files["a"], weights_only=True)
    record = {k: v for k, v in native.items() if k != "state_dict"}
    record["arch"] = "subprocess:Popen"
    (tmp_path / "evil.safetensors").write_bytes(safetensors_bytes(native["state_dict"], record))
    assert cli.main(["info", str(tmp_path / "evil.safetensors")]) == 2
    assert "a file never chooses code to run" in capsys.readouterr().err


def test_a_plain_safetensors_state_dict_reads_with_arch(tiny_endpoint_files, tmp_path, capsys):
    from safetensors.torch import save_file

    state = torch.load(tiny_endpoint_files["a"], weights_only=True)["state_dict"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    assert cli.main(["info", str(tmp_path / "w.safetensors"), "--arch", "cnn",
                     "--model-kwargs", "{width: 0.25, in_channels: 1}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["arch"] == "cnn"


@pytest.mark.parametrize("extra, message", [
    ([], "give its shape"),
])
def test_export_refuses_what_it_cannot_write(extra, message, tiny_endpoint_files, tmp_path,
                                             capsys):
    state = torch.load(tiny_endpoint_files["a"], weights_only=True)["state_dict"]
    torch.save(state, tmp_path / "bare.pt")
    code = cli.main(["export", str(tmp_path / "bare.pt"), "--arch", "cnn", "--format",
                     "safetensors", "-o", str(tmp_path / "x.safetensors"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()
