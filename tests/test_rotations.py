"""Orthogonal maps beyond permutations: each class keeps the function (float64), a copy mapped by
random maps of a class is aligned back, the cases a class does not apply to are refused with
their reason, and an alignment is undone exactly."""

import copy
import json

import pytest
import timm
import torch
from robust_mc_testkit import EXACT, random_maps, randomized, relative_change, small_vit
from torch import nn

from robust_mc import cli
from robust_mc.core.align import align
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.rotatable import plan_rotations
from robust_mc.core.rotation import procrustes, random_rotation
from robust_mc.core.rotation_align import StreamMaps, map_state, unmap_state
from robust_mc.models import Classifier, create_model
from robust_mc.models.normalize import Normalize
from robust_mc.pipelines.pair import endpoints_from_run
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.records import CurveRun


def _timm(name, **kwargs):
    return lambda: Classifier(timm.create_model(name, pretrained=False, num_classes=7, **kwargs),
                              Normalize((0.5,) * 3, (0.25,) * 3))



# name -> (build, whether its residual stream rotates)
TRANSFORMERS = {
    "zoo:vit_cifar": (small_vit, True),
    "timm:vit": (_timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2,
                       embed_dim=16, num_heads=2), True),
    "timm:deit": (_timm("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8,
                        depth=2, embed_dim=16, num_heads=2), True),
    "timm:swin": (_timm("swin_tiny_patch4_window7_224", img_size=32, window_size=4,
                        embed_dim=8, depths=(2, 2), num_heads=(2, 2)), False),
}




def mapped_at_random(b, a, spec, plan):
    """b under random maps of the plan's classes, given a's LayerNorm gains and shifts: b
    mapped (a model), the permutation and the record that undoes the rest."""
    perm, rotations = random_maps(b, spec, plan)
    state, record = map_state(b.state_dict(), a.state_dict(), spec, perm, rotations, plan)
    mapped = copy.deepcopy(b)
    mapped.load_state_dict(state)
    return mapped, perm, record


@pytest.mark.parametrize("family", list(TRANSFORMERS))
@pytest.mark.parametrize("maps", ["head-rotations", "orthogonal"])
def test_each_map_class_keeps_the_function(family, maps):
    build, stream = TRANSFORMERS[family]
    torch.manual_seed(0)
    b, a = randomized(build(), 0), randomized(build(), 1)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    spec = trace_permutation_spec(b, x.float())
    plan = plan_rotations(b, spec, x, maps)
    kinds = set(plan.kinds.values())
    assert "heads" in kinds
    assert ("stream" in kinds) == (stream and maps == "orthogonal")
    mapped, perm, record = mapped_at_random(b, a, spec, plan)  # the same function as b
    with torch.no_grad():
        assert relative_change(mapped(x), b(x)) < EXACT
    # and it can be undone: b's own parameters back
    back = unmap_state(mapped.state_dict(), spec, perm, StreamMaps.from_state(record.to_state()))
    for name, tensor in b.state_dict().items():
        torch.testing.assert_close(back[name], tensor, rtol=1e-10, atol=1e-12)


def test_a_stream_map_leaves_a_as_given_and_carries_its_norms():
    b, a = randomized(small_vit(), 0), randomized(small_vit(), 1)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    spec = trace_permutation_spec(b, x.float())
    plan = plan_rotations(b, spec, x, "orthogonal")
    perm, rotations = random_maps(b, spec, plan)
    state, _ = map_state(b.state_dict(), a.state_dict(), spec, perm, rotations, plan)
    for fold in plan.folds["net.patch"]:
        assert torch.equal(state[f"{fold.norm}.weight"], a.state_dict()[f"{fold.norm}.weight"])


def test_procrustes_fixing_the_ones_keeps_them():
    cross = torch.randn(6, 6, dtype=torch.float64)
    r = procrustes(cross, fix_ones=True)
    torch.testing.assert_close(r @ r.T, torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(r @ torch.ones(6, dtype=torch.float64),
                               torch.ones(6, dtype=torch.float64))
    # it beats every other map fixing the ones: here, a few random ones
    gen = torch.Generator().manual_seed(0)
    space = trace_permutation_spec(nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 2)),
                                   torch.rand(2, 6)).spaces[0]
    best = float((r * cross).sum())
    for _ in range(20):
        other = random_rotation(space, True, gen)
        assert float((other * cross).sum()) <= best + 1e-12


@pytest.mark.parametrize("family", ["zoo:vit_cifar", "timm:vit"])
def test_a_copy_under_random_maps_is_aligned_back(family):
    """b = a under a random permutation and random rotations of every planned space: alignment
    on a's and b's activations recovers a's weights. The maps are solved from float32
    activation statistics (sums of products in float32, accumulated in float64), so the
    recovered weights carry an error of about 1e-6 of their size, amplified by how unevenly the
    activations fill each space (its condition number); 1e-4 leaves room for that, and a wrong
    head match or a wrong rotation errs by the weights' own size."""
    build, _ = TRANSFORMERS[family]
    torch.manual_seed(0)
    a = randomized(build(), 0).float()
    x = torch.rand(400, 3, 32, 32)
    spec = trace_permutation_spec(a, x[:2])
    plan = plan_rotations(a, spec, x[:2], "orthogonal")
    perm, rotations = random_maps(a, spec, plan, seed=3)
    state, _ = map_state(a.state_dict(), a.state_dict(), spec, perm, rotations, plan)
    b = copy.deepcopy(a)
    b.load_state_dict(state)
    result = align(a, b, [(x[i:i + 100], torch.zeros(100)) for i in range(0, 400, 100)],
                   spec=spec, maps="orthogonal")
    assert set(result.rotations) == set(plan.kinds)
    recovered, _ = map_state(b.state_dict(), a.state_dict(), spec, result.perm,
                             result.rotations, result.plan)
    for name, tensor in a.state_dict().items():
        scale = float(tensor.abs().max()) or 1.0
        assert float((recovered[name] - tensor).abs().max()) < 1e-4 * scale, name
    assert min(s.corr_after for s in result.spaces if s.angle is not None) > 0.999


class PostNorm(nn.Module):
    """Post-norm blocks: each LayerNorm's output is the residual stream itself, which the next
    block both reads and adds to."""

    def __init__(self, dim=8):
        super().__init__()
        self.embed = nn.Linear(12, dim)
        self.fcs = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2))
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x.flatten(1))
        for fc, norm in zip(self.fcs, self.norms, strict=True):
            h = norm(h + fc(h))
        return self.head(h)


def refusals(model, x, maps="orthogonal"):
    spec = trace_permutation_spec(model, x.float())
    return plan_rotations(model, spec, x, maps), spec


def test_the_cases_a_class_does_not_apply_to_keep_permutations_with_the_reason():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    plan, _ = refusals(randomized(small_vit()), x)
    mlp = [why for name, why in plan.refused.items() if "mlp" in name]
    assert mlp and all("hidden layer" in why for why in mlp)  # MLP hidden units
    plan, _ = refusals(randomized(TRANSFORMERS["timm:vit"][0]()), x)
    plan_qk, spec = refusals(randomized(_timm("vit_tiny_patch16_224", img_size=32,
                                              patch_size=8, depth=2, embed_dim=16,
                                              num_heads=2, qk_norm=True)()), x)
    qk = [n for n in plan_qk.refused if spec.space(n).blocks is not None]
    assert qk and all("query/key norm" in plan_qk.refused[n] for n in qk)  # q/k norm
    assert any(kind == "heads" for kind in plan_qk.kinds.values())  # the values still rotate
    cnn = create_model("tinyten", num_classes=7, in_channels=3, mean=(0.5,) * 3,
                       std=(0.25,) * 3, width=0.25)
    plan, _ = refusals(randomized(cnn), x)
    assert not plan.kinds and any("batch norm" in why for why in plan.refused.values())
    plan, _ = refusals(randomized(PostNorm()), torch.rand(2, 3, 2, 2, dtype=torch.float64))
    assert not plan.kinds and any("folds only into linear layers" in why
                                  for why in plan.refused.values())  # post-norm
    mixer = timm.models.mlp_mixer.MlpMixer(num_classes=7, img_size=32, patch_size=8,
                                           num_blocks=2, embed_dim=16)
    plan, spec = refusals(randomized(mixer), x)  # token mixing reads the normed stream
    assert not plan.kinds and "transpose" in plan.refused[spec.spaces[0].name]
    convnext = create_model("convnext_cifar", num_classes=7, in_channels=3, mean=(0.5,) * 3,
                            std=(0.25,) * 3, width=0.5)
    plan, _ = refusals(randomized(convnext), x)  # a depthwise convolution reads the stream
    assert not plan.kinds and any("depthwise" in why for why in plan.refused.values())
    plan, _ = refusals(randomized(small_vit()), x, "permutations")
    assert not plan and not plan.refused


def test_connect_records_the_maps_and_every_reader_undoes_them(vit_endpoint_files, tmp_path, capsys,
                                                               runtime):
    """A ViT pair connected with the default maps: curve.pt holds rotations as tensors, and b as
    given comes back from b aligned. Both are float32 states and the maps are applied in float64
    and rounded once per stored tensor, so b returns within a few float32 roundings (1e-5 of
    each tensor's size; a map left undone moves entries by their own size)."""
    run = tmp_path / "run"
    assert cli.main(["connect", *map(str, vit_endpoint_files), "--curve", "line", "--points", "3",
                     "--eval-attack", "none", "--align-samples", "300", "--device", "cpu",
                     "--out", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = CurveRun.read(run / "curve.pt")
    assert saved.maps is not None and "net.patch" in saved.maps.rotations  # the stream
    assert {s["map"] for s in saved.alignment["spaces"]} == {
        "rotation", "rotation per head", "permutation"}
    example = torch.rand(2, 1, 8, 8)
    endpoints = endpoints_from_run(saved, runtime, example)
    given = load_checkpoint(vit_endpoint_files[1]).state_dict
    for name, tensor in endpoints.b_original.state_dict().items():
        key = name.removeprefix("net.")
        scale = float(given[key].abs().max()) or 1.0
        assert float((tensor - given[key]).abs().max()) <= 1e-5 * scale, name
    assert summary["barriers"]["test"]["robust_loss_barrier"] >= 0


def test_rotary_heads_keep_their_units_and_the_values_still_rotate():
    """EVA-02's rotary embedding rotates interleaved pairs of query/key units by position: its
    query/key heads are left as they are (with the tracer's reason); the value heads, which the
    rotary embedding does not touch, take a rotation each."""
    eva = _timm("eva02_tiny_patch14_224", img_size=32, patch_size=8, depth=2, embed_dim=32,
                num_heads=2)()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    model = randomized(eva)
    spec = trace_permutation_spec(model, x.float(), partial=True)
    assert spec.fixed and all("strided slice" in why for why in spec.fixed)
    plan = plan_rotations(model, spec, x, "orthogonal")
    assert sorted(plan.kinds.values()) == ["heads", "heads"]  # one value space per block
    mapped = mapped_at_random(model, model, spec, plan)[0]
    with torch.no_grad():
        assert relative_change(mapped(x), model(x)) < EXACT


class GroupedQueryAttention(nn.Module):
    """Four query heads sharing two key/value heads (``repeat_interleave`` of the key/value
    heads), in a pre-norm block."""

    def __init__(self, dim=16, heads=4, kv_heads=2):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.embed = nn.Linear(3, dim)
        self.norm, self.norm_out = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k, self.v = (nn.Linear(dim, kv_heads * self.head_dim) for _ in range(2))
        self.o = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x.flatten(2).transpose(1, 2))
        b, n, d = h.shape
        z = self.norm(h)
        q = self.q(z).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = (proj(z).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
                .repeat_interleave(self.heads // self.kv_heads, dim=1)
                for proj in (self.k, self.v))
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        h = h + self.o(attended.transpose(1, 2).reshape(b, n, d))
        return self.head(self.norm_out(h)[:, 0])


def test_grouped_query_attention_is_refused_in_one_line_or_left_alone():
    """Key/value heads shared by several query heads take no tracing rule yet: tracing stops
    naming the operation; with partial alignment the attention is left alone and the residual
    stream, which it only reads through linear layers, still rotates exactly."""
    from robust_mc.errors import UserError

    model = randomized(GroupedQueryAttention())
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(UserError, match="repeat_interleave"):
        trace_permutation_spec(model, x.float())
    spec = trace_permutation_spec(model, x.float(), partial=True)
    assert any("repeat_interleave" in op for op in spec.unsupported)
    plan = plan_rotations(model, spec, x, "orthogonal")
    assert list(plan.kinds.values()) == ["stream"]
    mapped = mapped_at_random(model, model, spec, plan)[0]
    with torch.no_grad():
        assert relative_change(mapped(x), model(x)) < EXACT
