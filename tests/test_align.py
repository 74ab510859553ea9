"""Alignment: known answers (a permuted copy is recovered exactly) and real improvements."""

import copy
import json

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from robust_mc_testkit import assert_units_separable
from torch import nn

from robust_mc import cli
from robust_mc.config import AlignConfig, AttackConfig
from robust_mc.core.align import align
from robust_mc.core.permutation import (
    permute_model,
    random_permutation,
    trace_graph,
    trace_permutation_spec,
)
from robust_mc.core.unit_statistics import unit_statistics
from robust_mc.data import batches
from robust_mc.pipelines.alignment import align_models
from robust_mc.store.checkpoint import save_checkpoint
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_model


@pytest.mark.parametrize("method", ["corr", "weights"])
@pytest.mark.parametrize("inputs", ["clean", "adversarial"])
def test_aligning_a_permuted_copy_recovers_it_exactly(digits_endpoints, digits, runtime, method,
                                                      inputs):
    model = build_model(digits_endpoints[0]).eval()
    spec = trace_permutation_spec(model, digits.train.images[:2])
    shuffled = copy.deepcopy(model)
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(5)))
    assert_units_separable(model, spec, list(batches(digits.train, 256)), runtime)
    from robust_mc.attacks import PGD

    result = align(model, shuffled, list(batches(digits.train, 256)), method=method,
                   inputs=inputs, attack=PGD(eps=0.1, step_size=0.025, steps=2), spec=spec,
                   runtime=runtime)
    permute_model(shuffled, spec, result.perm)
    for key, value in model.state_dict().items():
        assert torch.equal(shuffled.state_dict()[key], value), key
    for space in result.spaces:  # a unit against its exact copy: 1 up to float32 rounding of
        assert space.corr_after == pytest.approx(1.0, abs=1e-5)  # sums over ~1e4 samples
        assert space.corr_before < 0.9


def test_a_permuted_copy_with_dead_units_is_recovered_exactly(digits_endpoints, digits,
                                                              runtime):
    model = build_model(digits_endpoints[0]).eval()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():  # these units output 0 after their ReLU whatever the input
        for norm in norms[:2]:
            norm.weight[:5] = 0.0
            norm.bias[:5] = -10.0
    spec = trace_permutation_spec(model, digits.train.images[:2])
    shuffled = copy.deepcopy(model)
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(7)))
    assert_units_separable(model, spec, list(batches(digits.train, 256)), runtime)
    result = align(model, shuffled, list(batches(digits.train, 256)), spec=spec,
                   runtime=runtime)
    assert sum(space.no_signal for space in result.spaces) >= 10
    permute_model(shuffled, spec, result.perm)
    for key, value in model.state_dict().items():
        assert torch.equal(shuffled.state_dict()[key], value), key


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
    assert set(aligned.meta.alignment.permutation) == {s["name"] for s in result["spaces"]}
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


class ProducerTaps(nn.Module):
    """A space with no activation (conv -> BN -> pool), whose taps are its producers, beside
    ordinary conv -> BN -> ReLU spaces."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return self.fc(F.adaptive_avg_pool2d(self.bn2(self.conv2(h)), 1).flatten(1))


class _Recorder(torch.fx.Interpreter):
    """Runs a traced network, keeping a float64 (samples, units) copy of named nodes' outputs."""

    def __init__(self, gm, names):
        super().__init__(gm)
        self.names, self.outputs = names, {}

    def run_node(self, node):
        out = super().run_node(node)
        if node.name in self.names:
            self.outputs[node.name] = out.detach().double().movedim(1, -1).reshape(
                -1, out.shape[1]).clone()
        return out


def _reference_correlations(model_a, model_b, spec, x):
    """Each space's correlations straight from the unfolded networks' tap outputs, in float64."""
    outputs = []
    for model in (model_a, model_b):
        recorder = _Recorder(trace_graph(model.eval()), spec.tap_nodes)
        with torch.no_grad():
            recorder.run(x)
        outputs.append(recorder.outputs)
    result = {}
    for space in spec:
        a, b = (torch.cat([o[t.node][:, t.offset:t.offset + space.size] for t in space.taps])
                for o in outputs)
        a, b = a - a.mean(0), b - b.mean(0)
        result[space.name] = (a.T @ b) / (a.norm(dim=0)[:, None] * b.norm(dim=0)[None, :])
    return result


def _randomised(make, seed):
    torch.manual_seed(seed)  # before construction: the weights depend on the seed alone
    model = make()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # signs of both kinds, so that folding shows
            m.weight.data.uniform_(-1.5, 1.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_statistics_are_those_of_the_unfolded_networks(runtime):
    a, b = (_randomised(ProducerTaps, seed) for seed in (6, 7))
    x = torch.rand(24, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    spec = trace_permutation_spec(a, x[:2])
    assert any(len(space.taps) > 1 for space in spec)  # the conv -> BN space taps both
    labels = torch.zeros(24, dtype=torch.long)
    stats = unit_statistics(a, b, spec, [(x[:10], labels[:10]), (x[10:], labels[10:])], runtime)
    corr, samples = stats.corr, stats.samples
    assert samples == 24
    reference = _reference_correlations(a, b, spec, x)
    assert not any(r.isnan().any() for r in reference.values()), "no unit may be dead here"
    for name, value in corr.items():  # one pass vs two batches: the same sums in another
        torch.testing.assert_close(value, reference[name], atol=1e-5, rtol=0)  # order


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_train_mode_attack_sees_the_batch_norm_layers(digits_endpoints, digits, runtime, mode):
    a, b = (build_model(c).eval() for c in digits_endpoints)
    attacked = []

    class Recording:  # an attack that records what it attacks and returns the clean images
        def __init__(self, mode):
            self.mode = mode

        def __call__(self, model, x, y, generator=None):
            attacked.append(model)
            return x

    spec = trace_permutation_spec(a, digits.train.images[:2])
    unit_statistics(a, b, spec, list(batches(digits.train.take(64), 32)), runtime,
                    Recording(mode))
    has_norm = [any(isinstance(m, nn.BatchNorm2d) for m in net.modules()) for net in attacked]
    assert len(attacked) == 4
    assert all(has_norm) if mode == "train" else not any(has_norm)
