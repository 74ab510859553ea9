"""Helpers shared by test modules (a module of its own name: a package named ``tests`` that
another distribution installs, as robustbench's does, cannot shadow it)."""

from __future__ import annotations

import signal

import torch
import torch.nn.functional as F
from torch import nn

from robust_mc.core.permutation import random_permutation
from robust_mc.core.rotation import random_rotation
from robust_mc.models import create_model
from robust_mc.run.interrupt import StopSignals

# The quick settings the tests share: a connect run of one curve epoch, two path points, PGD-1
# training, no evaluation attack and small statistics and evaluation sets (about a second on
# the tiny endpoints); eval, ensemble and verify of such a run with the same evaluation.
QUICK_EVAL = ["--eval-attack", "none", "--bn-images", "50", "--eval-test-limit", "20",
              "--val-limit", "20", "--device", "cpu"]
QUICK_CONNECT = ["--epochs", "1", "--points", "2", "--attack-steps", "1", "--align-samples",
                 "100", *QUICK_EVAL]


class UserNet(nn.Module):
    """A user-style net: functional ReLUs, a residual add, a channel concat, a spatial flatten."""

    def __init__(self, num_classes=5, in_channels=3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.branch_a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.branch_b = nn.Conv2d(8, 4, 1)
        self.bn_cat = nn.BatchNorm2d(12)
        self.depthwise = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(12 * 4 * 4, 16)
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = h + self.branch_a(h)  # residual: ties stem and branch_a
        h = torch.cat([h, torch.relu(self.branch_b(h))], dim=1)
        h = F.relu(self.bn_cat(h))
        h = self.pool(F.relu(self.depthwise(h)))
        h = h.view(h.size(0), -1)
        return self.fc2(self.drop(F.relu(self.fc1(h))))


class StopAfter(StopSignals):
    """A stop request that arrives after ``checks`` polls, as a signal would mid-run."""

    def __init__(self, checks: int, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.checks = checks
        self.pending = signum

    @property
    def requested(self) -> bool:  # type: ignore[override]
        self.checks -= 1
        if self.checks <= 0:
            self.signum = self.pending
        return self.signum is not None


# How far a unit's correlation with itself must beat its best other match before a test may
# expect alignment to recover a permutation exactly. A correlation computed in float32 over a few
# thousand samples carries rounding of order 1e-6 to 1e-5, which changes with the CPU's kernels
# and reduction order; a margin of 1e-3 is two orders above it, so the assignment comes out the
# same on every machine, while ties and near-ties (too few samples per unit: 512 units seen at
# 512 positions tied at 1e-8) fail here, naming the space, instead of being decided by rounding.
SEPARATION_MARGIN = 1e-3


def assert_units_separable(model, spec, batches, runtime) -> None:
    """Every unit of ``model`` that varies on ``batches`` correlates with itself better than
    with any other unit of its space, by :data:`SEPARATION_MARGIN`."""
    import copy

    from robust_mc.core.unit_statistics import unit_statistics

    stats = unit_statistics(model, copy.deepcopy(model), spec, batches, runtime)
    for name, corr in stats.corr.items():
        live = ~stats.silent[name][0]  # silent units are matched by their weights instead
        if int(live.sum()) < 2:
            continue
        rows = corr[live][:, live]
        own = rows.diagonal()
        others = rows.masked_fill(torch.eye(len(rows), dtype=torch.bool), float("-inf"))
        gap = float((own - others.max(dim=1).values).min())
        assert gap >= SEPARATION_MARGIN, (
            f"{name}: a unit's own match wins by only {gap:.2g} on {stats.samples} images "
            f"({len(rows)} live units): use more or more varied inputs")


class CleanOnlyVerification:
    """Stands in for ``verify_point`` in tests of the commands that verify (the attacks and
    checks themselves are tested in test_verification.py on their own): each point's figures
    are its clean accuracy, and the points it was asked for are kept in ``attacked``."""

    def __init__(self) -> None:
        self.attacked: list[float] = []

    def __call__(self, model, t, roles, images, **settings):
        from robust_mc.evaluation.verification import PointVerification

        self.attacked.append(t)
        with torch.no_grad():
            hits = model(images.images.float()).argmax(1) == images.labels
        acc = 100 * float(hits.float().mean())
        return PointVerification(t, roles, len(images), acc, settings["path_attack"], acc,
                                 None, acc)


class InferenceCache:
    """A module mixin: tensors derived from its parameters are kept for inference once computed
    and cleared when the module is set to training, as timm's TinyViT, LeViT and EfficientFormer
    keep their gathered attention biases."""

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        if mode:
            self.__dict__.pop("_inference_cache", None)
        return self

    def cached(self, key: str, compute):
        """``compute()``, from the cache in eval mode once it is there."""
        if self.training:  # type: ignore[attr-defined]
            return compute()
        cache = self.__dict__.setdefault("_inference_cache", {})
        if key not in cache:
            cache[key] = compute()
        return cache[key]


# float64 checks of maps that keep a network's function
EXACT = 1e-10  # float64 rounding through a few blocks is ~1e-14 of the logits


def small_vit():
    """The zoo's ViT at half width, for 3-channel 32x32 inputs and 7 classes."""
    return create_model("vit_cifar", num_classes=7, in_channels=3, mean=(0.5,) * 3,
                        std=(0.25,) * 3, width=0.5, image_size=32)


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """float64, every parameter moved off its initial value (unit gains and zero shifts would
    hide a wrongly folded norm)."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
                tensor.add_(0.2 * (tensor.std() if tensor.numel() > 1 else 1.0) * noise
                            + 0.1 * noise)
    return model


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def random_maps(model, spec, plan, seed=1):
    """A random permutation of every space and a random rotation of every space ``plan``
    rotates (a stream's rotation is its whole map): a map of the orthogonal class."""
    generator = torch.Generator().manual_seed(seed)
    perm = random_permutation(spec, generator)
    rotations = {name: random_rotation(spec.space(name), kind == "stream", generator)
                 for name, kind in plan.kinds.items()}
    for name, kind in plan.kinds.items():  # rotated streams: the rotation is the whole map
        if kind == "stream":
            perm[name] = torch.arange(spec.space(name).size)
    return perm, rotations
