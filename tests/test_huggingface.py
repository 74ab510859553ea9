"""Hugging Face ``transformers`` image classifiers as endpoints: model directories written by
``save_pretrained`` are read offline (config, weights, the preprocessor's normalization), a
permuted copy is aligned back exactly from the CLI, ``train --arch hf:DIR`` makes PGD-trained
endpoints that ``connect`` joins, ``export --format huggingface`` writes a directory the library
reads back, and a directory never chooses code to run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from robust_mc_testkit import QUICK_CONNECT

from robust_mc import cli
from robust_mc.core.permutation import permute_model, random_permutation, trace_permutation_spec
from robust_mc.data import Normalization
from robust_mc.store.checkpoint import checkpoint_from_model
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.huggingface_dir import write_model_dir
from robust_mc.store.model_building import build_model

transformers = pytest.importorskip("transformers")

DIGITS = dict(image_size=8, num_channels=1, num_labels=10)  # the built-in digits: 1x8x8
QUICK_TRAIN = ["--dataset", "digits", "--epochs", "1", "--attack-steps", "1", "--eval-attack",
               "none", "--device", "cpu", "--json"]


def _vit():
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        patch_size=2, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, **DIGITS))


def _deit():
    return transformers.DeiTForImageClassification(transformers.DeiTConfig(
        patch_size=2, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, **DIGITS))


def _swin():
    return transformers.SwinForImageClassification(transformers.SwinConfig(
        patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=2, **DIGITS))


def _convnext():
    return transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        patch_size=2, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, **DIGITS))


FAMILIES = {"vit": _vit, "deit": _deit, "convnext": _convnext,
            "swin": pytest.param(_swin, marks=pytest.mark.slow)}  # its graph needs an export


def save_randomized(net: torch.nn.Module, folder: Path, seed: int = 0) -> Path:
    """``net`` with every floating weight and buffer moved off its initial value (unit gains
    and zero shifts would hide a wrongly moved tensor), saved with ``save_pretrained`` and a
    preprocessor config of its own normalization."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point() and "position_index" not in name:
                tensor.add_(0.2 * torch.randn(tensor.shape, generator=generator))
    net.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "image_mean": [0.3], "image_std": [0.4]}))
    return folder


@pytest.mark.parametrize("family", list(FAMILIES.values()), ids=list(FAMILIES))
def test_a_permuted_model_directory_is_aligned_back_exactly(family, tmp_path, capsys):
    folder = save_randomized(family().eval(), tmp_path / "a")
    ckpt = load_checkpoint(folder)
    assert ckpt.arch == f"transformers:{type(family()).__name__}"
    assert ckpt.normalization == Normalization.of([0.3], [0.4])
    model = build_model(ckpt).eval()
    example = torch.rand(4, 1, 8, 8)
    spec = trace_permutation_spec(model, example)
    shuffled = copy.deepcopy(model)
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        assert torch.allclose(shuffled(example), model(example), atol=1e-5)
    moved = [k for k, v in model.net.state_dict().items()
             if not torch.equal(v, shuffled.net.state_dict()[k])]
    assert len(moved) > len(model.net.state_dict()) // 2
    write_model_dir(checkpoint_from_model(shuffled, ckpt.arch, ckpt.arch_kwargs,
                                          model_kwargs=ckpt.model_kwargs), tmp_path / "b")

    out = tmp_path / "b_aligned.pt"
    assert cli.main(["align", str(folder), str(tmp_path / "b"), "--dataset", "digits",
                     "--align-maps", "permutations", "--align-samples", "300",
                     "--out", str(out), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["function_error"] < 1e-4
    aligned = load_checkpoint(out).state_dict
    for key, value in model.net.state_dict().items():
        assert torch.equal(aligned[key], value), key


@pytest.fixture(scope="module")
def hf_endpoints(tmp_path_factory) -> list[Path]:
    """Two PGD-trained tiny ViTs made from one model directory's config."""
    folder = tmp_path_factory.mktemp("hf")
    _vit().save_pretrained(folder / "config")
    paths = [folder / f"vit{seed}.pt" for seed in (0, 1)]
    for seed, path in enumerate(paths):
        assert cli.main(["train", "--arch", f"hf:{folder / 'config'}", "--seed", str(seed),
                         "--optimizer", "adamw", "--lr", "0.002", "--out", str(path),
                         *QUICK_TRAIN]) == 0
    return paths


def test_trained_model_directories_connect_and_export_back(hf_endpoints, tmp_path, capsys):
    a, b = map(str, hf_endpoints)
    assert load_checkpoint(a).arch == "transformers:ViTForImageClassification"
    capsys.readouterr()
    run = tmp_path / "run"
    assert cli.main(["connect", a, b, *QUICK_CONNECT, "--points", "3", "--out", str(run),
                     "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "robust_loss_barrier" in json.dumps(summary)
    for name in ("best.pt", "curve.pt", "path.csv", "summary.json"):
        assert (run / name).is_file(), name

    assert cli.main(["export", str(run / "best.pt"), "--format", "huggingface",
                     "-o", str(tmp_path / "best")]) == 0
    ours = build_model(load_checkpoint(run / "best.pt")).eval()
    theirs = transformers.ViTForImageClassification.from_pretrained(tmp_path / "best").eval()
    processor = json.loads((tmp_path / "best" / "preprocessor_config.json").read_text())
    images = torch.rand(5, 1, 8, 8)
    normalized = (images - torch.tensor(processor["image_mean"]).view(1, -1, 1, 1)) / \
        torch.tensor(processor["image_std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(theirs(pixel_values=normalized).logits, ours(images), atol=1e-5)
    assert cli.main(["eval", str(tmp_path / "best"), "--dataset", "digits", "--eval-attack",
                     "none", "--eval-test-limit", "50", "--device", "cpu"]) == 0


def test_a_directory_never_chooses_code(tmp_path, capsys):
    folder = tmp_path / "remote"
    _vit().save_pretrained(folder)
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "class Evil: pass\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "evil.Evil"}
    config["attn_implementation"] = "kernels-community/flash-attn"
    (folder / "config.json").write_text(json.dumps(config))
    assert cli.main(["info", str(folder)]) == 0  # the library's own class, built as data says
    assert not marker.exists()

    config["architectures"] = ["evil.Evil"]
    (folder / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert cli.main(["info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "ForImageClassification" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").unlink(), "holds no safetensors weights"),
    (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "is a pickle"),
    (lambda f: (f / "config.json").write_text("{"), "not JSON"),
    (lambda f: (f / "config.json").write_text('{"architectures": ["BertModel"]}'),
     "image classifiers"),
    (lambda f: (f / "config.json").write_text(
        '{"architectures": ["NoSuchForImageClassification"]}'), "has no image classifier"),
    (lambda f: (f / "preprocessor_config.json").write_text(
        '{"image_mean": [0.5], "image_std": [0]}'), "std positive"),
])
def test_a_damaged_directory_is_one_line(damage, message, tmp_path, capsys):
    folder = tmp_path / "m"
    _vit().save_pretrained(folder)
    damage(folder)
    assert cli.main(["info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_arch_hf_reads_a_plain_state_dict_with_the_directory_s_config(tmp_path, capsys):
    net = _vit().eval()
    net.save_pretrained(tmp_path / "config")
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    assert cli.main(["info", str(tmp_path / "weights.pt"), "--arch",
                     f"hf:{tmp_path / 'config'}", "--json"]) == 0
    ckpt = load_checkpoint(tmp_path / "weights.pt", _options(f"hf:{tmp_path / 'config'}"))
    images = torch.rand(3, 1, 8, 8)
    with torch.no_grad():  # one float32 network; the attention kernel robust-mc picks may
        # differ from the library's default (sdpa / eager): rounding of ~1e-7, not a weight
        assert torch.allclose(build_model(ckpt).eval()(images), net(pixel_values=images).logits,
                              rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert cli.main(["info", str(tmp_path / "weights.pt"), "--arch", "hf:nowhere"]) == 2
    assert "no such directory" in capsys.readouterr().err


def _options(arch: str):
    from robust_mc.store.checkpoint import LoadOptions

    return LoadOptions(arch=arch)
