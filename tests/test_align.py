"""Alignment: known answers (a permuted copy is recovered exactly) and real improvements."""

import copy
import json

import pytest
import torch

import cli
from robust_mc.align import align, align_models
from robust_mc.checkpoint import build_model, load_checkpoint, save_checkpoint
from robust_mc.config import AlignConfig, AttackConfig
from robust_mc.data import batches
from robust_mc.permutation import permute_model, random_permutation, trace_permutation_spec


@pytest.mark.parametrize("method", ["corr", "weights"])
@pytest.mark.parametrize("inputs", ["clean", "adversarial"])
def test_aligning_a_permuted_copy_recovers_it_exactly(digits_endpoints, digits, runtime, method,
                                                      inputs):
    model = build_model(digits_endpoints[0]).eval()
    spec = trace_permutation_spec(model, digits.train.images[:2])
    shuffled = copy.deepcopy(model)
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(5)))
    from attacks import PGD

    result = align(model, shuffled, list(batches(digits.train, 256)), method=method,
                   inputs=inputs, attack=PGD(eps=0.1, step_size=0.025, steps=2), spec=spec,
                   runtime=runtime)
    permute_model(shuffled, spec, result.perm)
    for key, value in model.state_dict().items():
        assert torch.equal(shuffled.state_dict()[key], value), key
    for space in result.spaces:
        assert space.corr_after == pytest.approx(1.0, abs=1e-5)
        assert space.corr_before < 0.9


def test_alignment_raises_correlation_of_independent_models(digits_endpoints, digits, runtime):
    a, b = (build_model(c) for c in digits_endpoints)
    result = align_models(a, b, digits.train, AlignConfig(samples=1000), AttackConfig(eps=0.1),
                          runtime)
    for space in result.alignment.spaces:
        assert space.corr_after > space.corr_before, space
    assert result.function_error < 1e-4


def test_align_command(digits_endpoints, tmp_path, capsys):
    paths = [save_checkpoint(c, tmp_path / f"{i}.pt") for i, c in enumerate(digits_endpoints)]
    out = tmp_path / "b_aligned.pt"
    code = cli.main(["align", str(paths[0]), str(paths[1]), "-o", str(out), "--json",
                     "--align-samples", "500", "--device", "cpu"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mean_corr_after"] > result["mean_corr_before"]
    assert result["function_error"] < 1e-4
    aligned = load_checkpoint(out)
    assert set(aligned.meta["alignment"]["permutation"]) == {s["name"] for s in result["spaces"]}
    code = cli.main(["align", str(paths[0]), str(paths[1]), "-o", str(tmp_path / "t.pt"),
                     "--device", "cpu", "--align-method", "weights"])
    assert code == 0 and "corr after" in capsys.readouterr().out


def test_align_refuses_different_architectures(digits_endpoints, tmp_path, capsys):
    a = save_checkpoint(digits_endpoints[0], tmp_path / "a.pt")
    other = copy.deepcopy(digits_endpoints[1])
    other.arch_kwargs = {**other.arch_kwargs, "width": 1.0}
    b = save_checkpoint(other, tmp_path / "b.pt")
    code = cli.main(["align", str(a), str(b), "-o", str(tmp_path / "x.pt")])
    assert code == 2 and "differ in width" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
