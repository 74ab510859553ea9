"""Learned maps (--align-learn-steps): every map they can reach is a symmetry of b (float64), the
start is the solved alignment, training lowers the line's loss, and the result travels like any
alignment (recorded, undone)."""

import copy
import json
import math

import pytest
import torch
from robust_mc_testkit import EXACT, randomized, relative_change, small_vit

from robust_mc import cli
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.rotatable import plan_rotations
from robust_mc.core.rotation_align import fold_and_mix
from robust_mc.pipelines.bench import cell_config
from robust_mc.pipelines.pair import endpoints_from_run
from robust_mc.store.bench_table import parse_method
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.records import CurveRun
from robust_mc.train.learned_maps import MappedLine, TrainableMaps


@pytest.fixture(scope="module")
def vit_pair():
    b, a = randomized(small_vit(), 0), randomized(small_vit(), 1)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    spec = trace_permutation_spec(b, x.float())
    return a, b, x, spec


@pytest.mark.parametrize("maps", ["permutations", "orthogonal"])
def test_every_map_the_training_can_reach_keeps_the_function(vit_pair, maps):
    """Scores and skew generators moved at random (as many Adam steps would): the permutations
    the scores round to and the exponentials of the generators map b onto itself."""
    a, b, x, spec = vit_pair
    plan = plan_rotations(b, spec, x, maps)
    trainable = TrainableMaps(spec, plan).double()
    kinds = set(trainable.kinds.values())
    assert "permutation" in kinds and (maps == "permutations") == (kinds == {"permutation"})
    with torch.no_grad():
        for p in trainable.parameters():
            p.add_(torch.randn_like(p))
    matrices = trainable.matrices()
    for name, kind in trainable.kinds.items():
        m = matrices[name].detach()
        torch.testing.assert_close(m @ m.T, torch.eye(len(m), dtype=m.dtype))
        if kind == "stream":
            torch.testing.assert_close(m.sum(1), torch.ones(len(m), dtype=m.dtype))
    assert any(not torch.equal(m.detach(), torch.eye(len(m), dtype=m.dtype))
               for m in matrices.values())
    params = dict(b.named_parameters())
    mapped = copy.deepcopy(b)
    state = fold_and_mix(params, a.state_dict(), spec, matrices, plan)
    mapped.load_state_dict({**b.state_dict(), **{k: v.detach() for k, v in state.items()}})
    with torch.no_grad():
        assert relative_change(mapped(x), b(x)) < EXACT


def test_the_line_starts_at_the_solved_alignment_and_is_differentiable(vit_pair):
    a, b, x, spec = vit_pair
    plan = plan_rotations(b, spec, x, "orthogonal")
    trainable = TrainableMaps(spec, plan).double()
    b = copy.deepcopy(b)  # as aligned: a's gains and shifts on the norms of rotated streams
    with torch.no_grad():
        for fold in (f for folds in plan.folds.values() for f in folds):
            for key in ("weight", "bias"):
                b.get_parameter(f"{fold.norm}.{key}").copy_(a.get_parameter(f"{fold.norm}.{key}"))
    line = MappedLine(a, b, spec, plan, trainable)
    ends = line.weights_at(0.0), line.weights_at(1.0)
    for name, p in a.named_parameters():
        torch.testing.assert_close(ends[0][name], p.detach())
    for name, p in b.named_parameters():  # readers folded and unfolded alike: float rounding
        torch.testing.assert_close(ends[1][name], p.detach(), rtol=1e-12, atol=1e-12)
    loss = sum(v.square().sum() for v in line.weights_at(0.5).values())
    loss.backward()
    assert all(p.grad is not None for p in trainable.skew.values())


def test_align_learns_the_maps_and_records_them(vit_endpoint_files, tmp_path, capsys):
    """The learned maps move off the solved ones (12 Adam steps of 0.01 turn the generators by
    about a tenth of a radian; the loss itself is a noisy one-batch figure on endpoints near
    chance, so it is not compared) and stay a symmetry of b."""
    reports = []
    for learn in ([], ["--align-learn-steps", "12", "--align-learn-lr", "0.01"]):
        out = tmp_path / f"b_aligned{len(learn)}.pt"
        assert cli.main(["align", *map(str, vit_endpoint_files), "--align-samples", "300",
                         *learn, "--device", "cpu", "--out", str(out), "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    solved, report = reports
    learned = report["learned"]
    assert solved["learned"] is None
    assert learned["steps"] == 12 and learned["objective"] == "clean"
    assert all(math.isfinite(learned[k]) for k in ("loss_first", "loss_last"))
    angles = [(s["angle"], t["angle"]) for s, t in zip(solved["spaces"], report["spaces"],
                                                      strict=True) if t["angle"] is not None]
    assert angles and max(abs((s or 0.0) - t) for s, t in angles) > 0.1  # degrees
    assert report["function_error"] < 1e-4  # still a symmetry of b, in float32
    record = load_checkpoint(out).meta.alignment
    assert record is not None and record.learned == learned


def test_connect_with_learned_maps_undoes_them(vit_endpoint_files, tmp_path, capsys, runtime):
    """b as given comes back from b aligned by the learned maps, within a few float32
    roundings (as for solved maps: test_rotations)."""
    run = tmp_path / "run"
    assert cli.main(["connect", *map(str, vit_endpoint_files), "--curve", "line", "--points", "3",
                     "--eval-attack", "none", "--align-samples", "300",
                     "--align-learn-steps", "4", "--align-inputs", "adversarial",
                     "--device", "cpu", "--out", str(run), "--json"]) == 0
    json.loads(capsys.readouterr().out)
    saved = CurveRun.read(run / "curve.pt")
    assert saved.alignment["learned"]["objective"] == "adversarial"
    endpoints = endpoints_from_run(saved, runtime, torch.rand(2, 1, 8, 8))
    given = load_checkpoint(vit_endpoint_files[1]).state_dict
    for name, tensor in endpoints.b_original.state_dict().items():
        key = name.removeprefix("net.")
        scale = float(given[key].abs().max()) or 1.0
        assert float((tensor - given[key]).abs().max()) <= 1e-5 * scale, name


def test_bench_methods_name_the_learned_objective():
    method = parse_method("line+orthogonal+learned-adv")
    assert method.align and method.maps == "orthogonal" and method.learned == "adversarial"
    assert parse_method("curve+learned").learned == "clean"
    from robust_mc.config import BenchRunConfig, build_config
    cfg = build_config(BenchRunConfig, None, {})
    align = cell_config(cfg, method, None).align
    assert align.learn_steps > 0 and align.inputs == "adversarial"
