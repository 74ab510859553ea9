"""Merging: copies and permuted copies of one model merge back into it in every frame, the merge
is the weighted average of the aligned members, consensus never lowers its objective, and the
command writes a merged checkpoint that reads back."""

import copy
import json

import pytest
import torch
from robust_mc_testkit import (
    StopAfter,
    assert_units_separable,
    random_maps,
    randomized,
    small_vit,
)

from robust_mc import cli
from robust_mc.config import AlignConfig, AttackConfig, MergeRunConfig, build_config
from robust_mc.core.merge import agreement, average_states, check_weights
from robust_mc.core.permutation import permute_model, random_permutation, trace_permutation_spec
from robust_mc.core.rotatable import plan_rotations
from robust_mc.core.rotation_align import map_state
from robust_mc.data import Split, batches
from robust_mc.pipelines.merge import run_merge
from robust_mc.pipelines.merge_frames import (
    Aligner,
    consensus_frame,
    pairwise_frame,
    parameter_names,
    reference_frame,
)
from robust_mc.run.progress import Reporter
from robust_mc.store.checkpoint import save_checkpoint
from robust_mc.store.checkpoint_files import load_checkpoint, read_torch_file
from robust_mc.store.model_building import build_model

FRAMES = ["reference", "consensus", "pairwise"]
QUICK = {"path.test_limit": 100, "path.attack": "pgd:steps=2", "align.samples": 1000,
         "device": "cpu"}


def merge_config(**values) -> MergeRunConfig:
    return build_config(MergeRunConfig, None, {"data.dataset": "digits", **QUICK, **values})


def frame(name, models, weights, aligner):
    if name == "reference":
        return reference_frame(models, weights, 0, aligner)
    if name == "consensus":
        return consensus_frame(models, weights, 0, aligner, rounds=3)
    return pairwise_frame(models, weights, aligner)


def aligner(digits, runtime):
    return Aligner(digits.train, AlignConfig(samples=500), AttackConfig(eps=0.1, steps=2),
                   runtime)


def test_the_average_is_the_weighted_sum_of_the_members():
    g = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 4, generator=g), "n": torch.tensor(i)} for i in range(3)]
    merged = average_states(states, [0.5, 0.3, 0.2])
    expected = 0.5 * states[0]["w"] + 0.3 * states[1]["w"] + 0.2 * states[2]["w"]
    assert torch.allclose(merged["w"], expected, rtol=1e-6, atol=1e-7)  # float32 rounding
    assert merged["n"] == states[0]["n"]  # integer buffers are the first member's
    assert agreement(states, [0.5, 0.3, 0.2], ["w"]) < 1.0
    assert agreement([states[0]] * 3, [0.5, 0.3, 0.2], ["w"]) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("weights, message", [([0.5, 0.6], "sum to 1.1"), ([1.0], "1 weights"),
                                              ([1.5, -0.5], "at least 0"),
                                              ([float("nan"), 1.0], "at least 0")])
def test_weights_that_are_no_average_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        check_weights(weights, 2)


@pytest.mark.parametrize("name", FRAMES)
def test_permuted_copies_of_one_model_merge_back_into_it(name, digits_endpoints, digits,
                                                         runtime):
    model = build_model(digits_endpoints[0]).eval()
    spec = trace_permutation_spec(model, digits.train.images[:2])
    copies = [copy.deepcopy(model)]
    for seed in (1, 2, 3):
        shuffled = copy.deepcopy(model)
        permute_model(shuffled, spec,
                      random_permutation(spec, torch.Generator().manual_seed(seed)))
        copies.append(shuffled)
    first = next(k for k in model.state_dict() if k.endswith("weight"))
    assert not torch.equal(copies[1].state_dict()[first], model.state_dict()[first])
    # every training image, as test_align recovers a permuted copy: the units are told apart
    # by a margin far above float32 rounding on any CPU
    assert_units_separable(model, spec, list(batches(digits.train, 256)), runtime)
    align = Aligner(digits.train, AlignConfig(samples=len(digits.train)),
                    AttackConfig(eps=0.1, steps=2), runtime)
    framed = frame(name, copies, [0.25] * 4, align)
    merged = average_states([m.state_dict() for m in framed.members], [0.25] * 4)
    for key, value in model.state_dict().items():
        # an average of four equal float32 values, summed in float64: the value itself
        assert torch.equal(merged[key], value), key
    assert framed.rounds[-1].agreement == pytest.approx(1.0, abs=1e-9)


def test_consensus_never_lowers_its_objective_and_stops(tiny_endpoint, digits, runtime):
    models = [build_model(tiny_endpoint(**{"optim.seed": s})).eval() for s in (0, 1, 2)]
    weights = [0.5, 0.25, 0.25]
    framed = consensus_frame(models, weights, 0, aligner(digits, runtime), rounds=3)
    scores = [r.agreement for r in framed.rounds]
    assert scores == sorted(scores)
    assert not framed.rounds[-1].changed or len(framed.rounds) == 4  # stopped or ran out
    names = parameter_names(models[0])
    assert agreement([m.state_dict() for m in framed.members], weights, names) == \
        pytest.approx(scores[-1], rel=1e-12)
    unaligned = agreement([m.state_dict() for m in models], weights, names)
    assert scores[0] > unaligned  # aligning to the reference already agrees more
    for member, original in zip(framed.members, models, strict=True):  # each keeps its function
        x = digits.test.images[:64].float() / 255
        assert torch.allclose(member(x), original(x), atol=1e-4)


def test_the_merge_is_the_weighted_average_of_the_aligned_members(tiny_endpoint, digits,
                                                                  runtime):
    checkpoints = [tiny_endpoint(**{"optim.seed": s}) for s in (0, 1, 2)]
    cfg = merge_config(**{"merge.weights": [0.5, 0.3, 0.2], "path.repair": "off",
                          "merge.frame": "reference"})
    result = run_merge(checkpoints, cfg, digits, runtime, Reporter(quiet=True))
    states = [m.state_dict() for m in result.framed.members]
    for key, value in result.merged.state_dict().items():
        if value.is_floating_point():
            by_hand = sum(w * s[key].double() for w, s in zip((0.5, 0.3, 0.2), states,
                                                              strict=True))
            assert torch.allclose(value.double(), by_hand, rtol=1e-6, atol=1e-7), key
    names = [c.name for c in result.contenders]
    assert names[:3] == ["member 1", "member 2", "member 3"]
    assert "ensemble of 3" in names and "unaligned average" in names
    for c in result.contenders:  # robust accuracy never exceeds clean
        assert c.metrics.robust_acc <= c.metrics.clean_acc


def test_merge_command_writes_a_merged_checkpoint(tiny_endpoint_files, tiny_endpoint, tmp_path,
                                                  capsys):
    third = save_checkpoint(tiny_endpoint(**{"optim.seed": 2}), tmp_path / "c.pt")
    out = tmp_path / "merged.pt"
    argv = ["merge", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]), str(third),
            "--out", str(out), "--repair", "repair", "--eval-test-limit", "100",
            "--eval-attack", "pgd:steps=2", "--align-samples", "1000", "--json"]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    merged = load_checkpoint(out)
    assert merged.meta.kind == "merged" and merged.meta.merge is not None
    assert [m.path for m in merged.meta.merge.members] == [
        str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]), str(third)]
    assert merged.meta.merge.frame == "consensus" and merged.meta.merge.repair == "repair"
    assert report["contenders"][-1]["name"] == "merge + repair"
    barriers = [c["barrier_to_merge"] for c in report["contenders"][:3]]
    assert all(b is not None and b >= 0 for b in barriers)  # t = 0 is on the chord: >= 0
    assert merged.meta.metrics.test.robust_acc == report["contenders"][-1]["robust_acc"]
    build_model(merged)  # the file builds its network
    if report["figure"] is not None:  # matplotlib installed (the plot extra)
        assert (tmp_path / "merged.png").read_bytes()[:4] == b"\x89PNG"


def test_the_fine_tune_stopped_and_rerun_ends_bit_for_bit_equal(tiny_endpoint_files, tmp_path,
                                                                 monkeypatch, capsys):
    argv = ["merge", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]),
            "--finetune-epochs", "2", "--eval-test-limit", "100", "--eval-attack",
            "pgd:steps=2", "--align-samples", "500", "--json"]
    reference = tmp_path / "reference.pt"
    assert cli.main([*argv, "--out", str(reference)]) == 0
    out = tmp_path / "merged.pt"
    stop = StopAfter(checks=16)  # a poll per step (11 an epoch) and two per epoch: in epoch 2
    monkeypatch.setattr("robust_mc.commands.merge.StopSignals", lambda: stop)
    assert cli.main([*argv, "--out", str(out)]) == 130
    (state,) = tmp_path.glob("merged.finetune-*.state.pt")
    assert read_torch_file(state)["position"]["epoch"] == 1 and not out.exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert cli.main([*argv, "--out", str(out)]) == 0  # rerunning continues
    resumed, whole = load_checkpoint(out), load_checkpoint(reference)
    for name, value in whole.state_dict.items():
        assert torch.equal(resumed.state_dict[name], value), name
    assert resumed.meta.metrics == whole.meta.metrics
    assert not state.exists()
    assert resumed.meta.merge.finetune["optim"]["epochs"] == 2


def test_the_greedy_soup_starts_from_the_best_member_and_keeps_what_does_not_hurt(
        tiny_endpoint, digits, runtime):
    checkpoints = [tiny_endpoint(**{"optim.seed": s}) for s in (0, 1, 2)]
    cfg = merge_config(**{"merge.select": "greedy", "merge.barrier_points": 0,
                          "path.val_limit": 100})
    result = run_merge(checkpoints, cfg, digits, runtime, Reporter(quiet=True))
    steps = result.checkpoint.meta.merge.selection
    assert sorted(s.member for s in steps) == [0, 1, 2] and steps[0].kept
    kept = [s.member for s in steps if s.kept]
    assert result.weights == pytest.approx([1 / len(kept) if i in kept else 0 for i in range(3)])
    accuracies = [s.val_robust_acc for s in steps if s.kept]
    assert accuracies == sorted(accuracies)  # each kept member did not lower it


@pytest.mark.slow  # 7 s on a 2-core CPU (AutoAttack): CI runs it in its end-to-end step
def test_merge_verifies_the_members_the_ensemble_and_the_merge(tiny_endpoint_files, tmp_path,
                                                               capsys):
    argv = ["merge", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]), "--out",
            str(tmp_path / "m.pt"), "--eval-test-limit", "100", "--eval-attack", "pgd:steps=2",
            "--align-samples", "500", "--barrier-points", "0", "--verify", "--verify-images",
            "10", "--verify-queries", "20", "--json"]
    assert cli.main(argv) == 0
    verified = {c["name"]: c["verification"]
                for c in json.loads(capsys.readouterr().out)["contenders"]}
    for name in ("member 1", "member 2", "ensemble of 2", "merge + BN reset"):
        assert verified[name]["images"] == 10, name  # AutoAttack where it matters
        assert verified[name]["autoattack_torchattacks"] <= verified[name]["clean_acc"]
    assert verified["unaligned average"] is None


@pytest.mark.parametrize("name", [
    "consensus", *(pytest.param(f, marks=pytest.mark.slow) for f in ("reference", "pairwise"))])
def test_copies_of_a_vit_under_random_maps_merge_back_into_it(name, runtime):
    """A transformer's members differ by permutations and rotations of heads and the residual
    stream: every frame aligns them back with the orthogonal map class. The maps are solved
    from float32 statistics, so each recovered weight errs by about 1e-6 of its size (see
    test_rotations); 1e-4 leaves room, a wrong match errs by the weight's own size."""
    torch.manual_seed(0)
    a = randomized(small_vit(), 0).float()
    x = torch.rand(200, 3, 32, 32)
    spec = trace_permutation_spec(a, x[:2])
    plan = plan_rotations(a, spec, x[:2], "orthogonal")
    copies = [a]
    for seed in (1, 2):
        perm, rotations = random_maps(a, spec, plan, seed)
        state, _ = map_state(a.state_dict(), a.state_dict(), spec, perm, rotations, plan)
        copies.append(copy.deepcopy(a))
        copies[-1].load_state_dict(state)
    train = Split(x, torch.zeros(200, dtype=torch.long))
    align = Aligner(train, AlignConfig(samples=200, maps="orthogonal", tokens=0),
                    AttackConfig(eps=0.03, steps=1), runtime)
    framed = frame(name, copies, [0.4, 0.3, 0.3], align)
    merged = average_states([m.state_dict() for m in framed.members], [0.4, 0.3, 0.3])
    for key, value in a.state_dict().items():
        scale = float(value.abs().max()) or 1.0
        assert float((merged[key] - value).abs().max()) < 1e-4 * scale, key
