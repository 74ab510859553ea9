"""Verification of path points: AutoAttack beside the path's attack, gradient-masking checks
that flag a masked model and pass an honest one, and the commands that write them."""

from __future__ import annotations

import json

import pytest
import torch
from robust_mc_testkit import CleanOnlyVerification
from torch import nn

from robust_mc import cli
from robust_mc.config import VerifyConfig
from robust_mc.evaluation import verification
from robust_mc.evaluation.masking import CheckResult, Probe, masking_checks
from robust_mc.evaluation.verification import (
    PointVerification,
    Verification,
    points_to_verify,
    verify_point,
)
from robust_mc.store.model_building import build_network

IMAGES = 64


class SaturatedLogits(nn.Module):
    """The honest network with its logits scaled by 1e4: the softmax saturates, cross-entropy
    gradients vanish, PGD stalls; the decision is unchanged."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) * 1e4


class QuantisedInput(nn.Module):
    """The honest network behind a non-differentiable input quantisation to 5 levels."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


@pytest.fixture(scope="module")
def honest(digits_endpoints):
    return build_network(digits_endpoints[0]).eval()


def probe_of(model, digits, runtime) -> Probe:
    return Probe(model, digits.test.take(IMAGES), 0.1, "linf", 10, runtime, 250, 0)


def run_checks(model, digits, runtime) -> list[CheckResult]:
    probe = probe_of(model, digits, runtime)
    path = {"pgd:steps=10": probe.robust_flags("pgd:steps=10")}
    clean = probe.robust_acc("none")
    checks, _ = masking_checks(probe, clean, path, square_queries=300)
    return checks


def test_an_honest_model_passes_every_check(honest, digits, runtime):
    checks = run_checks(honest, digits, runtime)
    assert [c.name for c in checks if not c.passed] == [], [c.saw for c in checks]
    assert len(checks) == 7


@pytest.mark.parametrize("mask, expected", [
    (SaturatedLogits, {"gradients", "softmax", "zero at large eps"}),
    (QuantisedInput, {"gradients", "zero at large eps", "black-box"}),
])
def test_a_masked_model_fails_the_checks_that_see_its_mask(honest, digits, runtime, mask,
                                                           expected):
    checks = run_checks(mask(honest), digits, runtime)
    failed = {c.name for c in checks if not c.passed}
    assert expected <= failed, [c.saw for c in checks]
    assert all(c.hint for c in checks if not c.passed)


@pytest.mark.slow  # both AutoAttacks in full, 17 s on a 2-core CPU: CI's end-to-end step
def test_verify_point_measures_on_the_same_images_and_keeps_robust_below_clean(
        honest, digits, runtime):
    installed = verification.reference_version() is not None  # the dev extra has it
    point = verify_point(honest, 0.5, ["best"], digits.test.take(8), path_attack="pgd:steps=5",
                         eps=0.1, norm="linf", num_classes=10,
                         settings=VerifyConfig(square_queries=100), runtime=runtime,
                         batch_size=250)
    assert point.images == 8
    assert point.autoattack_torchattacks <= point.clean_acc
    assert point.path_robust_acc <= point.clean_acc
    assert {c.name for c in point.checks} >= {"gradients", "black-box"}
    assert (point.autoattack is not None) == installed
    assert point.autoattack_figure <= point.clean_acc


def test_without_the_reference_the_torchattacks_figure_stands_and_is_said():
    alone = PointVerification(0.5, ["best"], 8, 80.0, "pgd:steps=5", 60.0, None, 55.0)
    assert alone.autoattack_figure == 55.0
    state = Verification([alone], {}, None, 0.1).to_state()
    assert state["reference"].startswith("not installed")
    assert Verification.from_state(json.loads(json.dumps(state))).points[0].t == 0.5


def test_points_are_the_endpoints_the_best_and_the_worst_t_each_once():
    ts, losses = [0.0, 0.25, 0.5, 0.75, 1.0], [1.0, 1.4, 2.0, 1.1, 0.9]
    assert points_to_verify(ts, losses, 0.75) == {0.0: ["a"], 0.5: ["worst"], 0.75: ["best"],
                                                  1.0: ["b"]}
    assert points_to_verify(ts, [3.0, 1, 1, 1, 1], None) == {0.0: ["a", "worst"], 1.0: ["b"]}


def point(path_acc: float, aa: float, checks: list[CheckResult] | None = None
          ) -> PointVerification:
    return PointVerification(0.5, ["best"], 100, 80.0, "pgd:steps=10", path_acc, aa, aa,
                             checks=checks or [], threshold=1.5)


def test_a_point_is_flagged_by_its_gap_or_a_failed_check_and_round_trips():
    assert not point(50.0, 49.0).flagged
    gapped = point(50.0, 47.0)
    assert gapped.flagged and "apgd-ce" in gapped.hints[0]
    failing = point(50.0, 50.0, [CheckResult("gradients", False, "9 of 100", "use AA")])
    assert failing.flagged and failing.hints == ["use AA"]
    state = json.loads(json.dumps(gapped.to_state()))
    assert state["flagged"] and state["gap"] == pytest.approx(3.0)
    assert PointVerification.from_state(state).gap == pytest.approx(3.0)


def test_connect_verify_writes_the_section_and_verify_redoes_it_without_retraining(
        tiny_endpoint_files, tmp_path, capsys, monkeypatch):
    from robust_mc.pipelines import verification as pipeline

    stub = CleanOnlyVerification()  # the attacks at a point are tested above
    monkeypatch.setattr(pipeline, "verify_point", stub)
    run = tmp_path / "run"
    base = ["connect", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]), "--out",
            str(run), "--epochs", "1", "--attack-steps", "1", "--points", "2", "--eval-attack",
            "pgd:steps=2", "--bn-images", "200", "--align-samples", "200", "--device", "cpu"]
    assert cli.main(base) == 0
    assert "verification" not in json.loads((run / "summary.json").read_text())
    curve_bytes = (run / "curve.pt").read_bytes()
    capsys.readouterr()

    # the finished run, now asked to verify: verified, not retrained
    assert cli.main([*base, "--verify", "--verify-images", "8", "--verify-queries", "50"]) == 0
    shown = capsys.readouterr().out
    assert "verification at eps" in shown and "AA-ta" in shown
    assert (run / "curve.pt").read_bytes() == curve_bytes
    section = json.loads((run / "summary.json").read_text())["verification"]
    roles = sorted(r for p in section["points"] for r in p["roles"])
    assert {"a", "b", "worst"} == set(roles) and len(section["points"]) == 2  # no interior t
    assert section["reference"].startswith("pyautoattack")
    assert all(p["images"] == 8 for p in section["points"]) and stub.attacked == [0.0, 1.0]

    assert cli.main(["verify", str(run), "--verify-images", "4", "--verify-queries", "50",
                     "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert all(p["images"] == 4 for p in printed["points"]) and len(stub.attacked) == 4
    assert json.loads((run / "summary.json").read_text())["verification"] == printed


def test_verify_refuses_a_directory_without_a_finished_run(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finished run" in err


@pytest.mark.parametrize("argv, message", [
    (["--verify-images", "8"], "--verify-images sets how --verify measures; add --verify"),
    (["--t-per-rank"], "--t-per-rank gives each torchrun process its own t"),
])
def test_connect_refuses_flags_that_would_not_take_effect(tiny_endpoint_files, tmp_path, capsys,
                                                          argv, message):
    out = tmp_path / "r"
    assert cli.main(["connect", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]),
                     *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_eval_of_one_model_refuses_path_measurements(tiny_endpoint_files, capsys):
    assert cli.main(["eval", str(tiny_endpoint_files["a"]), "--verify"]) == 2
    assert "give a connect run directory" in capsys.readouterr().err
