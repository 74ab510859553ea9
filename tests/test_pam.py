"""PAM: the relaxed permutation is the hard one at its vertices, and a correct start stays put."""

from __future__ import annotations

import json

import pytest
import torch
from robust_mc_testkit import UserNet

from robust_mc import cli
from robust_mc.core.permutation import (
    apply_permutation,
    permute_model,
    random_permutation,
    trace_permutation_spec,
)
from robust_mc.models import create_model
from robust_mc.store.checkpoint import checkpoint_from_model, save_checkpoint
from robust_mc.store.model_building import build_model
from robust_mc.train.pam import compose, moved_fraction, sinkhorn, soft_permute


def permutation_matrix(perm: torch.Tensor) -> torch.Tensor:
    matrix = torch.zeros(len(perm), len(perm))
    matrix[torch.arange(len(perm)), perm] = 1.0  # new unit i = old unit perm[i]
    return matrix


@pytest.mark.parametrize("make", [
    lambda: create_model("resnet20", num_classes=10, in_channels=3, mean=[0.5] * 3,
                         std=[0.25] * 3, width=0.25),
    lambda: UserNet(),
], ids=["resnet20", "user-net"])
def test_soft_permutation_at_a_vertex_is_the_hard_permutation(make):
    model = make().eval()
    spec = trace_permutation_spec(model, torch.rand(2, 3, 8, 8) if isinstance(model, UserNet)
                                  else torch.rand(2, 3, 32, 32))
    perm = random_permutation(spec, torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    soft = soft_permute(params, spec, {n: permutation_matrix(p) for n, p in perm.items()})
    hard = apply_permutation(model.state_dict(), spec, perm)
    for name in params:
        torch.testing.assert_close(soft[name], hard[name], rtol=0, atol=0)


def test_sinkhorn_makes_matrices_doubly_stochastic():
    m = sinkhorn(torch.rand(7, 7) - 0.2, iters=200)
    assert (m >= 0).all()
    torch.testing.assert_close(m.sum(0), torch.ones(7))
    torch.testing.assert_close(m.sum(1), torch.ones(7), atol=1e-5, rtol=0)


def test_compose_and_moved_fraction():
    first = {"s": [2, 0, 1, 3]}
    then = {"s": torch.tensor([1, 0, 2, 3])}
    assert compose(first, then) == {"s": [0, 2, 1, 3]}
    assert compose(None, then) == {"s": [1, 0, 2, 3]}
    assert moved_fraction({"s": [0, 2, 1, 3]}, None) == {"s": 0.5}
    assert moved_fraction({"s": [2, 0, 1, 3]}, first) == {"s": 0.0}


def test_pam_from_the_correct_permutation_of_a_permuted_copy_stays_there(
        digits_endpoints, digits, tmp_path, capsys):
    model = build_model(digits_endpoints[0])
    spec = trace_permutation_spec(model, digits.train.images[:2].float())
    shuffled = build_model(digits_endpoints[0])
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(1)))
    ckpt = digits_endpoints[0]
    a = save_checkpoint(ckpt, tmp_path / "a.pt")
    b = save_checkpoint(checkpoint_from_model(shuffled, ckpt.arch, ckpt.arch_kwargs, ckpt.meta),
                        tmp_path / "b.pt")
    out = tmp_path / "run"
    assert cli.main(["connect", str(a), str(b), "--pam", "--pam-outer", "2", "--epochs", "3",
                     "--attack-steps", "2", "--points", "3", "--eval-attack", "pgd:steps=2",
                     "--bn-images", "300", "--align-samples", "500", "--device", "cpu",
                     "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    pam = summary["pam"]
    assert len(pam["updates"]) == 2 and [u["after_epoch"] for u in pam["updates"]] == [1, 2]
    assert set(pam["moved_from_start"]) == {s.name for s in spec}
    assert all(v == 0.0 for v in pam["moved_from_start"].values()), pam
    assert summary["alignment"]["function_error"] < 1e-4


def test_pam_needs_a_curve_and_enough_epochs(digits_endpoints, tmp_path, capsys):
    paths = [str(save_checkpoint(c, tmp_path / f"e{i}.pt")) for i, c in
             enumerate(digits_endpoints)]
    assert cli.main(["connect", *paths, "--pam", "--curve", "line", "--out",
                     str(tmp_path / "x")]) == 2
    assert "--curve bezier" in capsys.readouterr().err
    assert cli.main(["connect", *paths, "--pam", "--pam-outer", "3", "--epochs", "3", "--out",
                     str(tmp_path / "x")]) == 2
    assert "raise --epochs" in capsys.readouterr().err
