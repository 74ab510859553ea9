"""Statistics repair along a path (REPAIR: Jordan et al., "REPAIR: REnormalizing Permuted
Activations for Interpolation Repair", ICLR 2023).

Interpolating two networks shrinks the variance of their hidden units. REPAIR measures, for every
unit, the mean and standard deviation of its pre-activation in both endpoints and in the network
at t, and rescales and shifts the unit at t so that its statistics are the interpolation of the
endpoints': mean* = (1 - t) mean_a + t mean_b, std* = (1 - t) std_a + t std_b.

A *site* is a module whose output carries permutable units (its bias lies on a space of the
permutation spec) and whose per-unit weight and bias can absorb the correction: a linear or
convolution layer with a bias, or an affine batch, layer or group norm. The correction of unit k,
y -> (y - mean_t) * s + mean*, with s = std* / std_t, is folded into them (``weight[k] *= s``,
``bias[k] = (bias[k] - mean_t) * s + mean*``), so the repaired network is an ordinary network of
the same architecture. A linear or convolution layer without a bias is a site too when no other
site carries its units (no norm follows it): the scale goes into its weight and the shift
becomes a bias it is given, the one addition to its architecture (robust-mc's loader accepts a
bias such a layer lacks). Sites are repaired in the order they run, each measured with the ones
before it already repaired, so that every site's statistics end exactly at the target on the
repair data. Units whose standard deviation at t is zero are only shifted.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from robust_mc.attacks import TrainingAttack
from robust_mc.core.align import Inputs
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.spec import PermutationSpec, drop_inference_caches

FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm,
            nn.LayerNorm, nn.GroupNorm)
BIAS_READY = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # can be given a bias
SILENT_STD = 1e-8  # a unit whose spread at t is below this is shifted, not scaled

Batches = Sequence[torch.Tensor]  # the repair images of one network, batch by batch


@dataclass(frozen=True)
class Site:
    """A module whose output units are repaired: its name, the output's unit axis, its units."""

    module: str
    axis: int
    size: int
    biased: bool = True  # False: a layer without a bias, given one by the correction


@dataclass(frozen=True)
class Moments:
    """Per site, each unit's mean and standard deviation (population) over the repair data."""

    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]

    def interpolate(self, other: Moments, t: float) -> Moments:
        return Moments({k: (1 - t) * v + t * other.mean[k] for k, v in self.mean.items()},
                       {k: (1 - t) * v + t * other.std[k] for k, v in self.std.items()})


@dataclass(frozen=True)
class Correction:
    """``y -> y * scale + shift`` on the units of ``site``."""

    site: Site
    scale: torch.Tensor
    shift: torch.Tensor


@dataclass
class Repaired:
    """The repaired network at t, its corrections, and per site the variance collapse before
    repair: the mean over units of std_t / std* (1: none; below 1: the units collapsed)."""

    network: nn.Module
    corrections: list[Correction]
    collapse: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def repair_sites(model: nn.Module, spec: PermutationSpec, probe: torch.Tensor) -> list[Site]:
    """The model's sites (see the module), in the order its forward pass runs them."""
    space_of = {axis.name: space.name for space in spec for axis in space.axes if axis.axis == 0}
    candidates = {name: module for name, module in model.named_modules()
                  if isinstance(module, FOLDABLE) and f"{name}.bias" in space_of
                  and _bias(module).dim() == 1}
    covered = {space_of[f"{name}.bias"] for name in candidates}
    bare = {name: module for name, module in model.named_modules()
            if isinstance(module, BIAS_READY) and getattr(module, "bias", None) is None
            and space_of.get(f"{name}.weight") not in (None, *covered)}
    candidates.update(bare)
    order: list[str] = []
    handles = [module.register_forward_hook(
        lambda _m, _i, _o, name=name: order.append(name) if name not in order else None)
        for name, module in candidates.items()]
    try:
        with torch.no_grad():
            model.eval()
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return [Site(name, _unit_axis(candidates[name]), _units(candidates[name]), name not in bare)
            for name in order]


def _units(module: nn.Module) -> int:
    if isinstance(module, BIAS_READY) and getattr(module, "bias", None) is None:
        return int(module.weight.shape[0])
    return int(_bias(module).numel())


def _bias(module: nn.Module) -> torch.Tensor:
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else torch.empty(0)


def _unit_axis(module: nn.Module) -> int:
    return -1 if isinstance(module, (nn.Linear, nn.LayerNorm)) else 1


class _Stop(Exception):
    """Raised by the last hook a measuring pass needs: the rest of the network is not run."""


class _Accumulator:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.total = torch.zeros(site.size, dtype=torch.float64)
        self.squares = torch.zeros(site.size, dtype=torch.float64)
        self.count = 0

    def add(self, output: torch.Tensor) -> None:
        rows = output.detach().movedim(self.site.axis, -1).reshape(-1, self.site.size).double()
        self.total += rows.sum(0).cpu()
        self.squares += rows.square().sum(0).cpu()
        self.count += rows.shape[0]

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        var = (self.squares / self.count - mean.square()).clamp_min(0)
        return mean, var.sqrt()


def measure(model: nn.Module, sites: Sequence[Site], batches: Batches,
            stop_after: Site | None = None) -> Moments:
    """Each site's unit moments over ``batches`` (eval mode, float32, no autocast); with
    ``stop_after``, each pass ends once that site has run."""
    modules = dict(model.named_modules())
    accumulators = {site.module: _Accumulator(site) for site in sites}

    def hook(name: str) -> Callable:
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            accumulators[name].add(output)
            if stop_after is not None and name == stop_after.module:
                raise _Stop
        return record

    handles = [modules[site.module].register_forward_hook(hook(site.module)) for site in sites]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                try:
                    model(x)
                except _Stop:
                    pass
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    pairs = {name: acc.moments() for name, acc in accumulators.items()}
    return Moments({k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()})


def correction_for(site: Site, measured: Moments, target: Moments) -> Correction:
    mean_t, std_t = measured.mean[site.module], measured.std[site.module]
    mean, std = target.mean[site.module], target.std[site.module]
    scale = torch.where(std_t > SILENT_STD, std / std_t.clamp_min(SILENT_STD),
                        torch.ones_like(std_t))
    return Correction(site, scale, mean - mean_t * scale)


def fold(model: nn.Module, correction: Correction) -> None:
    """``y -> y * scale + shift`` folded into the site's weight and bias."""
    module = dict(model.named_modules())[correction.site.module]
    with torch.no_grad():
        weight = getattr(module, "weight", None)
        if weight is not None:
            shape = (-1,) + (1,) * (weight.dim() - 1)
            weight.mul_(correction.scale.to(weight).view(shape))
        bias = getattr(module, "bias", None)
        if bias is None:  # a layer without a bias is given one: the shift
            module.bias = nn.Parameter(correction.shift.to(weight))
        else:
            bias.copy_(bias * correction.scale.to(bias) + correction.shift.to(bias))
    drop_inference_caches(model)


class UnitAffine(nn.Module):
    """``y * scale + shift`` along the unit axis: a correction as a layer of its own."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, correction: Correction) -> None:
        super().__init__()
        self.axis = correction.site.axis
        self.register_buffer("scale", correction.scale.float())
        self.register_buffer("shift", correction.shift.float())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        shape = [1] * y.dim()
        shape[self.axis] = -1
        return y * self.scale.view(shape) + self.shift.view(shape)


def with_affines(model: nn.Module, corrections: Sequence[Correction]) -> nn.Module:
    """A copy of ``model`` with each correction applied by a :class:`UnitAffine` after its site
    (the same function as folding them, as another architecture)."""
    out = copy.deepcopy(model)
    for correction in corrections:
        parent_name, _, child = correction.site.module.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, nn.Sequential(getattr(parent, child), UnitAffine(correction)))
    return out


def variance_collapse(measured: Moments, target: Moments) -> dict[str, float]:
    """Per site, the mean over its units of std_t / std* (1: none; below 1: collapsed)."""
    return {site: float((std / target.std[site].clamp_min(SILENT_STD)).mean())
            for site, std in measured.std.items()}


def repair_network(network: nn.Module, sites: Sequence[Site], target_at_t: Moments,
                   batches: Batches) -> Repaired:
    """Repair ``network`` (in place) to ``target_at_t`` site by site, in the order they run."""
    start = time.perf_counter()
    before = measure(network, sites, batches)
    collapse = variance_collapse(before, target_at_t)
    corrections: list[Correction] = []
    for site in sites:
        now = before if not corrections else measure(network, [site], batches, stop_after=site)
        correction = correction_for(site, now, target_at_t)
        fold(network, correction)
        corrections.append(correction)
    return Repaired(network, corrections, collapse, time.perf_counter() - start)


def repair(network_at_t: nn.Module, endpoint_a: nn.Module, endpoint_b: nn.Module, t: float,
           data: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
           spec: PermutationSpec | None = None, inputs: Inputs = "clean",
           attack: TrainingAttack | None = None,
           generator: torch.Generator | None = None) -> Repaired:
    """The network at ``t`` between two aligned endpoints, its units' statistics repaired to the
    interpolation of the endpoints' (a copy; the arguments are not changed).

    Args:
        network_at_t: the interpolated network (batch norm, if any, already recomputed).
        endpoint_a, endpoint_b: the endpoints, b's units aligned to a's.
        t: where on the path, in [0, 1]; at 0 and 1 the target is the network's own statistics.
        data: the repair batches (images (B, C, H, W) in [0, 1], labels (B,)).
        spec: the permutation spec (traced from the first batch if None): its spaces say which
            units are repaired.
        inputs: ``clean``, or ``adversarial``: each network's own ``attack`` examples of the
            batches, the random start of each batch the same for the three networks, drawn from
            ``generator``.

    Returns:
        A :class:`Repaired`: ``network`` (repaired), the corrections, the variance collapse.

    Example::

        spec = trace_permutation_spec(a, x[:2])
        fixed = repair(network_at(0.5), a, b_aligned, 0.5, [(x, y)], spec=spec).network
    """
    if inputs == "adversarial" and attack is None:
        raise ValueError("inputs='adversarial' needs an attack")
    network = copy.deepcopy(network_at_t)
    batches = list(data)
    if not batches:
        raise ValueError("repair needs at least one batch of images")
    own: list[list[torch.Tensor]] = [[], [], []]  # per network: network at t, a, b
    for x, y in batches:
        if attack is None or inputs == "clean":
            for images in own:
                images.append(x)
            continue
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        for images, model in zip(own, (network, endpoint_a, endpoint_b), strict=True):
            images.append(attack(model, x, y, torch.Generator(x.device).manual_seed(seed)))
    if spec is None:
        spec = trace_permutation_spec(network, batches[0][0][:2])
    sites = repair_sites(network, spec, batches[0][0][:2])
    target = measure(endpoint_a, sites, own[1]).interpolate(measure(endpoint_b, sites, own[2]), t)
    return repair_network(network, sites, target, own[0])
