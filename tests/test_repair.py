"""Statistics repair (REPAIR): the repaired network's units have the interpolated endpoint
statistics, it is better than the plain midpoint, it is the endpoint at t = 0 and 1, and folding
the correction is the same function as applying it as a layer of its own."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from robust_mc.core.align import align
from robust_mc.core.permutation import permute_model, trace_permutation_spec
from robust_mc.core.repair import measure, repair, repair_sites, with_affines
from robust_mc.data import as_float
from robust_mc.models import create_model


def _trained_mlp(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("mlp", num_classes=10, in_channels=1, mean=[0.3], std=[0.4],
                         image_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(10):
        order = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            batch = order[i:i + 64]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def _between(a: torch.nn.Module, b: torch.nn.Module, t: float) -> torch.nn.Module:
    out = copy.deepcopy(a)
    with torch.no_grad():
        for pa, pb, po in zip(a.parameters(), b.parameters(), out.parameters(), strict=True):
            po.copy_((1 - t) * pa + t * pb)
    return out


@pytest.fixture(scope="module")
def aligned_mlps(digits):
    """Two MLPs without normalization, trained from other seeds, b aligned to a."""
    x, y = as_float(digits.train.images), digits.train.labels
    a, b = _trained_mlp(x, y, 0), _trained_mlp(x, y, 1)
    spec = trace_permutation_spec(a, x[:2])
    permute_model(b, spec, align(a, b, [(x[:1000], y[:1000])], spec=spec).perm)
    return a, b, spec, [(x[i:i + 250], y[i:i + 250]) for i in range(0, 1000, 250)]


def _images(batches: list) -> list[torch.Tensor]:
    return [x for x, _ in batches]


def test_the_repaired_midpoint_has_the_interpolated_statistics_and_a_lower_loss(aligned_mlps,
                                                                                digits):
    a, b, spec, batches = aligned_mlps
    middle = _between(a, b, 0.5)
    repaired = repair(middle, a, b, 0.5, batches, spec=spec)
    sites = [c.site for c in repaired.corrections]
    assert [s.module for s in sites] == ["net.layers.1", "net.layers.3"]  # the hidden layers
    assert all(ratio < 1 for ratio in repaired.collapse.values())  # the midpoint collapsed
    images = _images(batches)
    target = measure(a, sites, images).interpolate(measure(b, sites, images), 0.5)
    after = measure(repaired.network, sites, images)
    for site in sites:  # float32 activations of size ~1, accumulated in float64
        assert torch.allclose(after.mean[site.module], target.mean[site.module], atol=1e-4)
        assert torch.allclose(after.std[site.module], target.std[site.module], atol=1e-4)
    x, y = as_float(digits.test.images), digits.test.labels
    with torch.no_grad():
        loss_middle = F.cross_entropy(middle(x), y)
        loss_repaired = F.cross_entropy(repaired.network(x), y)
    assert loss_repaired < loss_middle


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_at_the_ends_the_repaired_network_is_the_endpoint(aligned_mlps, t):
    a, b, spec, batches = aligned_mlps
    end = a if t == 0 else b
    repaired = repair(_between(a, b, t), a, b, t, batches, spec=spec)
    x = torch.cat(_images(batches))
    with torch.no_grad():
        difference = (repaired.network(x) - end(x)).abs().max()
    # the target is the network's own statistics: each scale is 1 and each shift 0 up to the
    # float32 rounding of the activations it was measured from (relative 1e-6 of logits ~10)
    assert float(difference) < 1e-4
    assert all(torch.allclose(c.scale, torch.ones_like(c.scale), atol=1e-5)
               for c in repaired.corrections)


def test_adversarial_statistics_come_from_each_networks_own_attack(aligned_mlps):
    from robust_mc.attacks import AttackConfig, build_attack

    a, b, spec, batches = aligned_mlps
    middle = _between(a, b, 0.5)
    with pytest.raises(ValueError, match="needs an attack"):
        repair(middle, a, b, 0.5, batches, spec=spec, inputs="adversarial")
    attack = build_attack(AttackConfig(eps=0.1, steps=2))
    twice = [repair(middle, a, b, 0.5, batches[:2], spec=spec, inputs="adversarial",
                    attack=attack, generator=torch.Generator().manual_seed(0))
             for _ in range(2)]
    clean = repair(middle, a, b, 0.5, batches[:2], spec=spec)
    scales = [r.corrections[0].scale for r in (*twice, clean)]
    assert torch.equal(scales[0], scales[1])  # fixed random starts: deterministic
    assert not torch.allclose(scales[0], scales[2])  # other inputs, other statistics


def test_folding_the_correction_equals_applying_it_as_a_separate_affine(aligned_mlps):
    a, b, spec, batches = aligned_mlps
    middle = _between(a, b, 0.3)
    repaired = repair(middle, a, b, 0.3, batches, spec=spec)
    separate = with_affines(middle, repaired.corrections)
    x = torch.cat(_images(batches))
    with torch.no_grad():
        folded, affine = repaired.network(x), separate(x)
    # the same maths in another order: a scale inside the weights, or after the layer
    assert torch.allclose(folded, affine, rtol=1e-5, atol=1e-5)
    assert not torch.equal(folded, middle(x))


@pytest.mark.parametrize("arch, channels, size", [("cnn", 1, 8), ("vit_cifar", 3, 16)])
def test_batch_norm_and_transformer_sites_reach_their_targets(arch, channels, size):
    torch.manual_seed(0)
    make = lambda: create_model(arch, num_classes=10, in_channels=channels,  # noqa: E731
                                mean=[0.5] * channels, std=[0.25] * channels, image_size=size,
                                width=0.5).eval()
    a, b = make(), make()
    x = torch.rand(64, channels, size, size)
    spec = trace_permutation_spec(a, x[:2])
    sites = repair_sites(a, spec, x[:2])
    kinds = {type(dict(a.named_modules())[s.module]).__name__ for s in sites}
    assert kinds == ({"BatchNorm2d"} if arch == "cnn" else {"Conv2d", "LayerNorm", "Linear"})
    y = torch.zeros(64, dtype=torch.long)
    repaired = repair(_between(a, b, 0.5), a, b, 0.5, [(x[:32], y[:32]), (x[32:], y[32:])],
                      spec=spec)
    target = measure(a, sites, [x]).interpolate(measure(b, sites, [x]), 0.5)
    after = measure(repaired.network, sites, [x])
    for site in sites:
        assert torch.allclose(after.std[site.module], target.std[site.module], atol=1e-4,
                              rtol=1e-4)


def test_connect_with_repair_reproduces_the_endpoints_and_times_the_repair(tmp_path, capsys):
    """Two MLPs without normalization connected with repair: the endpoints are reproduced at
    t = 0 and 1, the summary says how the statistics were made, and repair's seconds appear
    per t."""
    from robust_mc import cli

    ends = [tmp_path / f"{seed}.pt" for seed in (0, 1)]
    for seed, path in enumerate(ends):
        assert cli.main(["train", "--dataset", "digits", "--arch", "mlp", "--epochs", "1",
                         "--attack-steps", "1", "--eval-attack", "none", "--seed", str(seed),
                         "--device", "cpu", "--out", str(path)]) == 0
    out = tmp_path / "run"
    assert cli.main(["connect", str(ends[0]), str(ends[1]),
                     "--curve", "line", "--points", "3", "--eval-attack", "pgd:steps=2",
                     "--bn-images", "200", "--align-samples", "200", "--repair", "repair",
                     "--repair-inputs", "adversarial", "--repair-images", "100",
                     "--attack-steps", "1", "--device", "cpu", "--out", str(out)]) == 0
    assert "repair" in capsys.readouterr().out  # the timing line names it
    summary = json.loads((out / "summary.json").read_text())
    assert summary["endpoints"]["a"]["reproduced"] and summary["endpoints"]["b"]["reproduced"]
    path = summary["config"]["path"]
    assert (path["repair"], path["repair_inputs"], path["repair_images"], path["seed"]) == \
        ("repair", "adversarial", 100, 0)
    assert summary["timings"]["per_t"]["repair"] > 0


def test_repair_off_interpolates_the_endpoints_batch_norm_statistics(tiny_endpoint):
    from robust_mc.evaluation.path import interpolate_batchnorm
    from robust_mc.store.model_building import build_model

    a = build_model(tiny_endpoint())
    b = copy.deepcopy(a)
    with torch.no_grad():
        for name, buffer in b.named_buffers():
            if name.endswith("running_mean"):
                buffer.add_(1.0)
    middle = copy.deepcopy(a)
    interpolate_batchnorm(middle, a, b, 0.25)
    for name, buffer in middle.named_buffers():
        if name.endswith("running_mean"):
            assert torch.allclose(buffer, dict(a.named_buffers())[name] + 0.25)


@pytest.mark.parametrize("name, inputs", [("curve+align+repair", "clean"),
                                          ("line+align+repair-adv", "adversarial"),
                                          ("curve+align", None)])
def test_bench_methods_name_their_repair(name, inputs):
    from robust_mc.store.bench_table import parse_method

    assert parse_method(name).repair == inputs


def test_a_bench_method_with_two_repairs_is_refused():
    from robust_mc.errors import UserError
    from robust_mc.store.bench_table import parse_method

    with pytest.raises(UserError, match=r"\+repair or \+repair-adv"):
        parse_method("line+repair+repair-adv")


def _bias_free(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32, bias=False),
                               torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()


def test_a_layer_without_bias_or_norm_is_repaired_and_given_the_shift_as_its_bias(digits):
    """No norm follows the hidden layer and it has no bias: its scale goes into the weight,
    its shift becomes a bias, and its units reach the target like any other site's."""
    a, b = _bias_free(0), _bias_free(1)
    x, y = as_float(digits.train.images[:500]), digits.train.labels[:500]
    spec = trace_permutation_spec(a, x[:2])
    sites = repair_sites(a, spec, x[:2])
    assert [(s.module, s.biased) for s in sites] == [("1", False)]
    repaired = repair(_between(a, b, 0.5), a, b, 0.5, [(x[:250], y[:250]), (x[250:], y[250:])],
                      spec=spec)
    layer = repaired.network[1]
    assert isinstance(layer.bias, torch.nn.Parameter) and layer.bias.shape == (32,)
    target = measure(a, sites, [x]).interpolate(measure(b, sites, [x]), 0.5)
    after = measure(repaired.network, sites, [x])
    # float32 activations of size ~1, accumulated in float64
    assert torch.allclose(after.mean["1"], target.mean["1"], atol=1e-4)
    assert torch.allclose(after.std["1"], target.std["1"], atol=1e-4)
    separate = with_affines(_between(a, b, 0.5), repaired.corrections)
    with torch.no_grad():
        assert torch.allclose(repaired.network(x), separate(x), rtol=1e-5, atol=1e-5)


def test_a_file_whose_bias_free_layer_was_given_a_bias_loads(tmp_path):
    from robust_mc.store.checkpoint import checkpoint_from_model, save_checkpoint
    from robust_mc.store.checkpoint_files import load_checkpoint
    from robust_mc.store.model_building import build_model

    model = create_model("cnn", num_classes=10, in_channels=1, mean=[0.3], std=[0.4],
                         image_size=8).eval()
    conv = model.net.features[0][0]
    assert conv.bias is None
    conv.bias = torch.nn.Parameter(torch.randn(conv.out_channels))  # as repair gives it
    path = save_checkpoint(checkpoint_from_model(model, "cnn", {"num_classes": 10,
                                                               "in_channels": 1}),
                           tmp_path / "repaired.pt")
    loaded = build_model(load_checkpoint(path)).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
