"""One small network per tracing rule family: the spec is traced, a random permutation leaves the
function unchanged (float64), and what the rule should permute is permuted. A new rule adds its
network here."""

import copy

import pytest
import torch
import torch.nn.functional as F
from robust_mc_testkit import InferenceCache
from torch import nn

from robust_mc.core.permutation import (
    apply_permutation,
    permute_model,
    random_permutation,
    trace_permutation_spec,
)


class Transposed(nn.Module):
    """permute/transpose: channels moved to the last axis and back (channels-last MLP)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.out = nn.Conv2d(3, 6, 3), nn.Linear(6, 5), nn.Linear(5, 2)

    def forward(self, x):
        y = self.fc(self.conv(x).permute(0, 2, 3, 1)).transpose(1, 3)  # (B, 5, W, H)
        return self.out(torch.relu(y).mean((2, 3)))


class HandNorm(nn.Module):
    """reductions over channels with keepdim: a LayerNorm written by hand; abs as an activation."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6, 2)
        self.weight, self.bias = nn.Parameter(torch.rand(6)), nn.Parameter(torch.rand(6))

    def forward(self, x):
        x = self.conv(x)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-5)
        x = self.weight[:, None, None] * x + self.bias[:, None, None]
        return self.fc(x.abs().mean((2, 3)))


class Attention(nn.Module):
    """A packed q/k/v split by reshape and unbind, q @ k^T, softmax, @ v, heads merged back."""

    def __init__(self, dim=8, heads=2, fused=False):
        super().__init__()
        self.heads, self.fused = heads, fused
        self.embed, self.qkv, self.proj = nn.Conv2d(3, dim, 2, 2), nn.Linear(dim, 3 * dim), \
            nn.Linear(dim, dim)
        self.cls = nn.Parameter(torch.rand(1, 1, dim))
        self.pos = nn.Parameter(torch.rand(1, 17, dim))
        self.head = nn.Linear(dim, 2)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16, D)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = torch.einsum("bhls,bhsv->bhlv", (q @ k.transpose(-2, -1)).softmax(-1), v)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return self.head(x[:, 0])


class Chunked(nn.Module):
    """chunk of a packed projection into q/k/v, a per-head bias, stack and a gather."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.heads = heads
        self.embed, self.qkv = nn.Linear(12, dim), nn.Linear(dim, 3 * dim)
        self.bias = nn.Parameter(torch.rand(heads, 1, 1))
        self.out = nn.Linear(dim, 2)

    def forward(self, x):
        x = self.embed(x.flatten(2))  # (B, 3, D): 3 tokens of 12 pixels
        b, n, d = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        attn = (q @ k.transpose(-2, -1) + self.bias).softmax(-1)
        y = (attn @ v).transpose(1, 2).flatten(2)
        return self.out(torch.stack([y, x]).sum(0)[:, torch.tensor([0, 2])].mean(1))


class MHA(nn.Module):
    """nn.MultiheadAttention with its packed in_proj_weight."""

    def __init__(self, dim=8):
        super().__init__()
        self.embed, self.attn = nn.Linear(12, dim), nn.MultiheadAttention(dim, 2,
                                                                          batch_first=True)
        self.out = nn.Linear(dim, 2)

    def forward(self, x):
        x = self.embed(x.flatten(2))
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.out(x.mean(1))


class Grouped(nn.Module):
    """grouped convolutions, a depth multiplier, GroupNorm by groups, functional batch norm."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.c, self.norm = nn.Conv2d(8, 16, 3, padding=1, groups=8), nn.GroupNorm(8, 16)
        self.mean, self.var = nn.Parameter(torch.rand(16)), nn.Parameter(torch.rand(16) + 1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        x = self.c(torch.relu(self.b(torch.relu(self.a(x)))))
        x = F.batch_norm(self.norm(x), self.mean, self.var)
        return self.fc(F.gelu(x).amax((2, 3)))


class Shuffle(nn.Module):
    """a channel shuffle: units merged back in another order stay, and say so."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.a(x))
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.fc(torch.relu(self.b(x)).mean((2, 3)))


class Masked(nn.Module):
    """operations that see no hidden units (a mask made from positions with ``~``, ``%`` and a
    comparison), whatever they are, pass through: only units can be permuted."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        keep = ~(torch.arange(h.shape[-1], device=h.device) % 3 == 0)
        return self.fc((h * keep.to(h.dtype)).mean((2, 3)))


class Blurred(nn.Module):
    """a depthwise blur by a filter kept outside the state dict (TResNet's anti-aliasing): the
    same for every channel, so the channels still move; with ``varied`` the filter differs per
    channel, and those channels stay."""

    def __init__(self, varied=False):
        super().__init__()
        self.a, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 2)
        kernel = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])) / 16
        scale = torch.arange(1.0, 7.0) if varied else torch.ones(6)
        self.register_buffer("filt", kernel * scale.view(6, 1, 1, 1), persistent=False)

    def forward(self, x):
        x = F.pad(torch.relu(self.a(x)), (1, 1, 1, 1), mode="reflect")
        return self.fc(F.conv2d(x, self.filt, groups=6).mean((2, 3)))


class Unfolded(nn.Module):
    """nn.Unfold as a patch embedding (TNT, VOLO): each channel repeated over the kernel
    positions of its patch, read by a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv, self.unfold = nn.Conv2d(3, 6, 3, padding=1), nn.Unfold(2, stride=2)
        self.embed, self.fc = nn.Linear(24, 8), nn.Linear(8, 2)

    def forward(self, x):
        patches = self.unfold(torch.relu(self.conv(x))).transpose(1, 2)  # (B, 16, 6 x 4)
        return self.fc(torch.relu(self.embed(patches)).mean(1))


class Patches(nn.Module):
    """MobileViT's unfold and fold: the channels moved into the batch axis with the rows of
    patches, regrouped as tokens of each patch position, an MLP over the channels, and back
    (reshapes that merge some axes and split others)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc1, self.fc2 = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 10), \
            nn.Linear(10, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        b, c, h, w = x.shape  # 2 x 2 patches, 4 x 4 of them
        x = x.reshape(b * c * 4, 2, 4, 2).transpose(1, 2)
        x = x.reshape(b, c, 16, 4).transpose(1, 3).reshape(b * 4, 16, -1)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        x = x.contiguous().view(b, 4, 16, -1).transpose(1, 3).reshape(b * c * 4, 4, 2, 2)
        x = x.transpose(1, 2).reshape(b, c, h, w)
        return self.out(x.mean((2, 3)))


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's global response normalisation as transformers writes it: the L2 norm over
    positions (``torch.linalg.vector_norm``), divided by its mean over the channels."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 2)
        self.gamma = nn.Parameter(torch.rand(1, 1, 1, 6))
        self.beta = nn.Parameter(torch.rand(1, 1, 1, 6))

    def forward(self, x):
        x = self.conv(x).permute(0, 2, 3, 1)
        norm = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        x = x + self.gamma * (x * norm / (norm.mean(dim=-1, keepdim=True) + 1e-6)) + self.beta
        return self.fc(x.mean((1, 2)))


class ResizedPositions(nn.Module):
    """A position embedding learnt for 2 x 2 patches, resized to the input's 4 x 4 by
    interpolating it as an image (PVT; BEiT resizes its relative position table alike): its
    token axis is positions, its feature axis the residual stream's units."""

    def __init__(self):
        super().__init__()
        self.embed, self.fc = nn.Conv2d(3, 6, 2, 2), nn.Linear(6, 2)
        self.pos = nn.Parameter(torch.rand(1, 4, 6))

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16, 6)
        pos = self.pos.reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(4, 4), mode="bilinear").flatten(2).transpose(1, 2)
        return self.fc(torch.relu(x + pos).mean(1))


class Folded(nn.Module):
    """MobileViT-V2's patches: ``unfold`` into (B, C, kernel positions, patches), a 1x1
    convolution over the channels, then ``fold`` back into the image."""

    def __init__(self):
        super().__init__()
        self.conv, self.mix = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        b, c, h, w = x.shape
        patches = F.unfold(x, kernel_size=2, stride=2).reshape(b, c, 4, -1)
        patches = torch.relu(self.mix(patches)).reshape(b, c * 4, -1)
        return self.fc(F.fold(patches, output_size=(h, w), kernel_size=2, stride=2).mean((2, 3)))


class MaxValues(nn.Module):
    """a maximum over positions read by name (``x.max(dim=2).values``: Hiera's query
    pooling)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(2).max(dim=2).values)


class CrossCovariance(nn.Module):
    """attention over units (XCiT): q and k normalised along the tokens, a per-head
    temperature, rows of q's units, heads merged from v's head axis."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.heads, self.embed = heads, nn.Conv2d(3, dim, 2, 2)
        self.qkv, self.proj, self.head = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), \
            nn.Linear(dim, 2)
        self.temperature = nn.Parameter(torch.rand(heads, 1, 1) + 0.5)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(
            2, 0, 3, 4, 1).unbind(0)  # each (B, heads, units, tokens)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        x = ((attn * self.temperature).softmax(-1) @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        return self.head((x + self.proj(x)).mean(1))


class Interleaved(nn.Module):
    """each head's query, key and value side by side in the projection, split apart per head,
    keys narrower than values (LeViT, EfficientFormer; MaxViT chunks them): whole heads move,
    the units within them keep their order."""

    def __init__(self, dim=8, heads=2, key=3, value=4):
        super().__init__()
        self.heads, self.key, self.value = heads, key, value
        self.embed, self.qkv = nn.Conv2d(3, dim, 2, 2), nn.Linear(dim, heads * (2 * key + value))
        self.proj, self.head = nn.Linear(heads * value, dim), nn.Linear(dim, 2)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.heads, -1).permute(0, 2, 1, 3).split(
            [self.key, self.key, self.value], dim=3)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))
        return self.head(x.mean(1))


class CachedBias(InferenceCache, Interleaved):
    """a bias per head and token pair, gathered from a table and kept for inference once
    computed (TinyViT, LeViT, EfficientFormer): cleared when set to training, as timm does."""

    def __init__(self):
        super().__init__()
        self.biases = nn.Parameter(torch.rand(self.heads, 5))
        self.register_buffer("idxs", torch.arange(256).view(16, 16) % 5, persistent=False)

    def forward(self, x):
        bias = self.cached("bias", lambda: self.biases[:, self.idxs])
        x = self.embed(x).flatten(2).transpose(1, 2)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.heads, -1).permute(0, 2, 1, 3).split(
            [self.key, self.key, self.value], dim=3)
        attn = (q @ k.transpose(-2, -1) + bias).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))
        return self.head(x.mean(1))


class Standardised(nn.Module):
    """weights standardised inside forward, with a gain per output (NFNet's ScaledStdConv,
    BiT's StdConv): the weight itself reshaped and batch-normalised before the convolution."""

    def __init__(self):
        super().__init__()
        self.a, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 2)
        self.b = nn.Conv2d(6, 6, 3, padding=1)
        self.gain = nn.Parameter(torch.rand(6, 1, 1, 1) + 0.5)

    def forward(self, x):
        w = F.batch_norm(self.b.weight.reshape(1, 6, -1), None, None, training=True,
                         momentum=0.0, eps=1e-6).reshape_as(self.b.weight)
        x = F.conv2d(torch.relu(self.a(x)), w * self.gain, self.b.bias, padding=1)
        return self.fc(torch.relu(x).mean((2, 3)))


class StandardisedGroups(nn.Module):
    """standardised weights in grouped and depthwise convolutions (NF-RegNet's ScaledStdConv
    with a group width): the computed weight's rows follow the groups of the input."""

    def __init__(self):
        super().__init__()
        self.a, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(12, 2)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.gain = nn.Parameter(torch.rand(12, 1, 1, 1) + 0.5)

    @staticmethod
    def standardised(conv: nn.Conv2d) -> torch.Tensor:
        w = conv.weight
        return F.batch_norm(w.reshape(1, w.shape[0], -1), None, None, training=True,
                            momentum=0.0, eps=1e-6).reshape_as(w)

    def forward(self, x):
        x = torch.relu(self.a(x))
        x = F.conv2d(x, self.standardised(self.grouped) * self.gain, self.grouped.bias,
                     padding=1, groups=4)
        x = F.conv2d(torch.relu(x), self.standardised(self.depthwise), self.depthwise.bias,
                     padding=1, groups=12)
        return self.fc(torch.relu(x).mean((2, 3)))


class Ghost(nn.Module):
    """depthwise convolutions over concatenations (GhostNet's cheap features, a dense block):
    each filter follows its channel, whichever space it comes from."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 6, 3, padding=1)
        self.cheap = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.dw = nn.Conv2d(14, 14, 3, padding=1, groups=14)
        self.fc = nn.Linear(14, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        x = torch.cat([h, self.cheap(h), torch.relu(self.b(x))], 1)
        return self.fc(torch.relu(self.dw(x)).mean((2, 3)))


class Cached(nn.Module):
    """a table kept as a plain attribute, in a network that torch.fx cannot trace (it iterates
    over a chunk), so the graph comes from TorchDynamo's export, which reads the table as a
    constant (ConViT's relative positions, TinyViT's cached attention biases)."""

    def __init__(self):
        super().__init__()
        self.a, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 2)
        self.table = torch.linspace(0.5, 1.5, 64).view(1, 1, 8, 8)  # over positions only

    def forward(self, x):
        h = torch.relu(self.a(x)) * self.table
        return self.fc(torch.cat([part.mean((2, 3)) for part in h.chunk(2, dim=1)], 1))


class Radix(nn.Module):
    """split attention (ResNeSt): a grouped convolution makes two branches, summed unit by
    unit and weighted by a softmax over the branches; every branch orders its units alike."""

    def __init__(self):
        super().__init__()
        self.a, self.conv = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 12, 3, padding=1, groups=2)
        self.fc1, self.fc2 = nn.Conv2d(6, 4, 1), nn.Conv2d(4, 12, 1)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        x = torch.relu(self.conv(torch.relu(self.a(x))))
        x = x.reshape(x.shape[0], 2, 6, x.shape[2], x.shape[3])
        gap = x.sum(1).mean((2, 3), keepdim=True)
        attn = self.fc2(torch.relu(self.fc1(gap))).view(x.shape[0], 2, 6, 1, 1).softmax(1)
        return self.out((x * attn).sum(1).mean((2, 3)))


class SharedAggregated(nn.Module):
    """CoaT's head: one position-encoding module shared by two blocks (saved under both
    names, which must move alike), and a one-output Conv1d that weighs stacked class tokens
    unit by unit (a kernel of one over the units), then a one-output score."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.pos = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.block1, self.block2 = nn.Module(), nn.Module()
        self.block1.pos = self.block2.pos = self.pos
        self.aggregate, self.fc = nn.Conv1d(2, 1, 1), nn.Linear(6, 2)
        self.score = nn.Linear(6, 1)

    def forward(self, x):
        h1 = torch.relu(self.a(x))
        h1 = h1 + self.block1.pos(h1)
        h2 = torch.relu(self.b(h1))
        h2 = h2 + self.block2.pos(h2)
        tokens = torch.stack([h1.mean((2, 3)), h2.mean((2, 3))], 1)  # (B, 2, units)
        pooled = self.aggregate(tokens).squeeze(1)
        return self.fc(pooled) * torch.sigmoid(self.score(pooled))


NETWORKS = {"transpose": (Transposed, 0), "hand_norm": (HandNorm, 0), "masked": (Masked, 0),
            "standardised": (Standardised, 0), "standardised_groups": (StandardisedGroups, 1),
            "ghost": (Ghost, 0), "cached": (Cached, 0),
            "radix": (Radix, 1), "shared_aggregated": (SharedAggregated, 0),
            "interleaved": (Interleaved, 0),
            "cross_covariance": (CrossCovariance, 1),
            "one_head": (lambda: Attention(heads=1), 0),  # (parts, 1, units): MViTv2, PVT v2
            "unfold": (Unfolded, 0), "patches": (Patches, 0),
            "response_norm": (GlobalResponseNorm, 0), "resized_positions": (ResizedPositions, 0),
            "folded": (Folded, 0), "max_values": (MaxValues, 0),
            "blurred": (Blurred, 0),
            "attention": (Attention, 1), "sdpa": (lambda: Attention(fused=True), 1),
            "chunk": (Chunked, 1), "multihead": (MHA, 1), "grouped": (Grouped, 3),
            "shuffle": (Shuffle, 0)}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_each_rule_keeps_the_function(name):
    build, grouped = NETWORKS[name]
    torch.manual_seed(0)
    model = build().double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) if name not in ("chunk", "multihead") \
        else torch.rand(2, 3, 3, 4, dtype=torch.float64)
    spec = trace_permutation_spec(model, x)
    assert sum(s.blocks is not None for s in spec) >= grouped
    assert (name in ("shuffle", "interleaved")) == bool(spec.fixed), spec.fixed
    permuted = build().double().eval()
    permuted.load_state_dict(apply_permutation(model.state_dict(), spec, random_permutation(
        spec, torch.Generator().manual_seed(1))))
    changed = [k for k, v in model.state_dict().items()
               if not torch.equal(v, permuted.state_dict()[k])]
    assert changed
    with torch.no_grad():  # float64 sums in another order: ~1e-15; a wrong permutation is O(1)
        assert torch.allclose(permuted(x), model(x), rtol=1e-9, atol=1e-12)


def test_per_head_parameters_follow_their_heads():
    model = Chunked()
    spec = trace_permutation_spec(model, torch.rand(2, 3, 3, 4))
    heads = next(s for s in spec if spec.members(s.name))
    assert ("bias", 0) in {(a.name, a.axis) for a in heads.axes}


@pytest.mark.parametrize("name", ["attention", "grouped", "multihead", "interleaved",
                                  "cross_covariance", "one_head", "unfold", "blurred", "masked",
                                  "standardised", "standardised_groups", "ghost",
                                  "cached", "radix",
                                  "shared_aggregated", "patches", "response_norm",
                                  "resized_positions", "folded", "max_values"])
@pytest.mark.parametrize("method", ["corr", "weights"])
def test_heads_and_groups_are_matched_back_hierarchically(name, method):
    """A permuted copy (heads, groups, units within them) is recovered exactly by both methods:
    correlation matching where activations show the units (MultiheadAttention's query, key and
    value are matched by their weights), weight matching from the weights alone."""
    from robust_mc.core.align import align
    from robust_mc.core.permutation import permute_model

    build, _ = NETWORKS[name]
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.rand(256, 3, 8, 8) if name != "multihead" else torch.rand(256, 3, 3, 4)
    spec = trace_permutation_spec(model, x)
    shuffled = build().eval()
    shuffled.load_state_dict(apply_permutation(model.state_dict(), spec, random_permutation(
        spec, torch.Generator().manual_seed(2))))
    data = [(x, torch.zeros(len(x), dtype=torch.long))]
    if method == "corr":  # exact recovery from statistics needs each unit's own match to win
        from robust_mc_testkit import assert_units_separable

        from robust_mc.run.runtime import Runtime

        assert_units_separable(model, spec, data, Runtime(torch.device("cpu")))
    result = align(model, shuffled, data, method=method, spec=spec)
    permute_model(shuffled, spec, result.perm)
    for key, value in model.state_dict().items():
        assert torch.equal(shuffled.state_dict()[key], value), key


def test_a_constant_that_differs_per_unit_keeps_its_units_in_place():
    """The blur filter outside the state dict differs per channel: permuting the channels would
    need the filter permuted too, which no state dict carries, so they stay (and say why)."""
    model = Blurred(varied=True).double().eval()
    spec = trace_permutation_spec(model, torch.rand(2, 3, 8, 8, dtype=torch.float64))
    assert any("'filt' is not in the state dict" in why for why in spec.fixed)
    assert not any(axis.name == "a.weight" for space in spec for axis in space.axes)


def test_heads_split_into_query_key_and_value_move_as_wholes():
    model = Interleaved().double().eval()
    spec = trace_permutation_spec(model, torch.rand(2, 3, 8, 8, dtype=torch.float64))
    heads = [s for s in spec if s.size == 2 and {(a.name, a.repeat) for a in s.axes} >= {
        ("qkv.weight", 10), ("proj.weight", 4)}]  # a head: 3 + 3 + 4 rows, 4 columns of proj
    assert len(heads) == 1, [(s.name, s.axes) for s in spec]


def test_branches_summed_unit_by_unit_share_one_order():
    """ResNeSt's radix sum: the branches' space keeps one order for every branch, and the layers
    reading the sum take that order (``within``), not a space of their own."""
    spec = trace_permutation_spec(Radix().double(), torch.rand(2, 3, 8, 8, dtype=torch.float64))
    branches = next(s for s in spec if s.name == "conv")
    assert branches.blocks is not None and branches.blocks.shared
    assert {(a.name, a.within) for a in branches.axes} >= {("fc1.weight", 6), ("out.weight", 6)}


def test_a_module_shared_by_two_parents_moves_under_both_names():
    model = SharedAggregated().double().eval()
    spec = trace_permutation_spec(model, torch.rand(2, 3, 8, 8, dtype=torch.float64))
    names = {a.name for space in spec for a in space.axes}
    assert {"pos.weight", "block1.pos.weight", "block2.pos.weight"} <= names


def test_what_a_module_kept_from_an_earlier_pass_does_not_hide_its_parameters():
    """A network evaluated before it is aligned holds its per-head biases in a cache: the trace
    meets the parameter, so its heads move with the biases, and permuting an evaluated copy
    drops its stale cache, so the function is unchanged."""
    model = CachedBias().double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)  # fills the cache
    spec = trace_permutation_spec(model, x)
    assert any(a.name == "biases" for space in spec for a in space.axes), spec.fixed
    permuted = copy.deepcopy(model)
    with torch.no_grad():
        permuted(x)  # its cache filled with the biases before the permutation
    permute_model(permuted, spec, random_permutation(spec, torch.Generator().manual_seed(1)))
    assert not torch.equal(permuted.biases, model.biases)
    with torch.no_grad():  # the cache was dropped with the old weights
        assert torch.allclose(permuted(x), expected, rtol=1e-10, atol=1e-12)
