"""Neuron alignment: permute model B's hidden units to match model A's.

``corr`` (Tatro et al. 2020): the cross-correlation of every pair of units of each space, from
one paired pass over the alignment data (:mod:`robust_mc.core.unit_statistics`); each space is
then solved as a linear assignment problem maximising the summed correlation of matched units.

``weights`` (Ainsworth et al. 2023, Git Re-Basin weight matching): data-free coordinate ascent over
spaces (:mod:`robust_mc.core.weight_matching`), until no permutation changes.

This module is the API: the method registry, :func:`align` and its report (:class:`Alignment`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.fx
from torch import nn

from robust_mc.attacks import TrainingAttack
from robust_mc.core.assignment import groups_of, solve_groups
from robust_mc.core.permutation import Permutation, PermutationSpec, Space, trace_permutation_spec
from robust_mc.core.rotatable import MapClass, RotationPlan, plan_rotations
from robust_mc.core.rotation import Rotations, mean_angle
from robust_mc.core.rotation_align import solve_rotations
from robust_mc.core.unit_statistics import TOKENS, UnitStatistics, tokens_per_image, unit_statistics
from robust_mc.core.weight_matching import match_by_weights, weight_matching
from robust_mc.registry import Registry
from robust_mc.run.runtime import Runtime

# (model_a, model_b, spec, unit correlations per space) -> the permutation of b's units
AlignmentMethod = Callable[[nn.Module, nn.Module, PermutationSpec, dict[str, torch.Tensor]],
                           Permutation]
METHODS = Registry[AlignmentMethod]("alignment method")
list_alignment_methods = METHODS.names


def register_alignment(name: str, needs_data: bool = False
                       ) -> Callable[[AlignmentMethod], AlignmentMethod]:
    """Register an alignment method; ``needs_data``: it reads the unit correlations."""
    return METHODS.register(name, needs_data=needs_data)
Inputs = Literal["clean", "adversarial"]


@dataclass
class SpaceReport:
    name: str
    units: int
    corr_before: float  # mean correlation of units matched by index
    corr_after: float  # mean correlation of units matched by the permutation
    moved: float  # fraction of units re-matched
    no_signal: int = 0  # units matched by their weights: no correlation signal (dead, constant)
    map: str = "permutation"  # or "rotation per head", "rotation": the map beyond it
    angle: float | None = None  # a rotation's mean angle from the identity, degrees


@dataclass
class Alignment:
    method: str
    inputs: str
    perm: Permutation
    spaces: list[SpaceReport]
    seconds: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    map_class: MapClass = "permutations"
    rotations: Rotations = field(default_factory=dict)  # applied after ``perm``
    plan: RotationPlan = field(default_factory=RotationPlan)
    learned: dict | None = None  # the maps' training after solving them, when it ran

    def as_dict(self) -> dict:
        return {"method": self.method, "inputs": self.inputs, "samples": self.samples,
                "seconds": self.seconds, "map_class": self.map_class, "learned": self.learned,
                "kept_permutations": dict(self.plan.refused),
                "spaces": [{k: None if isinstance(v, float) and v != v else v  # no statistics
                            for k, v in vars(s).items()} for s in self.spaces],
                "mean_corr_before": _mean([s.corr_before for s in self.spaces]),
                "mean_corr_after": _mean([s.corr_after for s in self.spaces])}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return sum(finite) / len(finite) if finite else float("nan")


# --- the API ------------------------------------------------------------------------------------

def align(model_a: nn.Module, model_b: nn.Module,
          data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None, *,
          method: str = "corr", inputs: Inputs = "clean", attack: TrainingAttack | None = None,
          spec: PermutationSpec | None = None, example: torch.Tensor | None = None,
          runtime: Runtime | None = None, generator: torch.Generator | None = None,
          maps: MapClass = "permutations", tokens: int = TOKENS) -> Alignment:
    """Find the permutation of ``model_b``'s units that best matches ``model_a``.

    Args:
        model_a, model_b: two networks of one architecture (eval mode is used).
        data: batches (images (B, C, H, W) in [0, 1], labels (B,)); ``corr`` needs it,
            ``weights`` uses it only for the correlation report.
        method: ``corr`` (activation correlation, Tatro et al.) or ``weights`` (weight
            matching, Ainsworth et al.).
        inputs: ``clean``, or ``adversarial``: each model's own ``attack`` examples, random
            starts drawn from ``generator`` (the same for both models).
        spec: the permutation structure; traced from ``example`` or the first batch if None.
        runtime: device, autocast and layout (the CPU by default).
        maps: ``permutations``, or also orthogonal maps where they are exact
            (``head-rotations``: one per attention head; ``orthogonal``: also one per
            residual stream, see :mod:`robust_mc.core.rotatable`); ``corr`` only.
        tokens: at most about this many tokens per image enter the statistics of a
            token-shaped activation (evenly spaced, shifted each batch), or as many as give
            :data:`TOKEN_SAMPLES` samples over the images; 0: every token.

    Returns:
        An :class:`Alignment`: ``perm`` (space name -> permutation of b's units), the
        ``rotations`` applied after it, and a report per space (correlation before and
        after, share of units re-matched, the map beyond the permutation).

    Example::

        spec = trace_permutation_spec(a, x[:2])
        result = align(a, b, [(x, y)], spec=spec)
        permute_model(b, spec, result.perm)  # b computes the same function, units matched to a
    """
    entry = METHODS.entry(method)  # an unknown name raises here, before any work
    needs_data = bool(entry.meta["needs_data"])
    runtime = runtime or Runtime(torch.device("cpu"))
    batches = list(data) if data is not None else []
    if spec is None:
        probe = example if example is not None else (batches[0][0] if batches else None)
        if probe is None:
            raise ValueError("align needs data or an example input to trace the model")
        spec = trace_permutation_spec(model_a, probe)
    if inputs == "adversarial" and attack is None:
        raise ValueError("inputs='adversarial' needs an attack")
    if maps != "permutations" and method != "corr":  # the one check: AlignConfig.map_class
        raise ValueError(f"{maps} maps are solved from activations: use method='corr'")
    seconds: dict[str, float] = {}
    plan = RotationPlan()
    if maps != "permutations":
        start = time.perf_counter()
        probe = example if example is not None else batches[0][0]
        plan = plan_rotations(model_a, spec, runtime.images(probe[:2].to(runtime.device)), maps)
        seconds["exactness checks"] = time.perf_counter() - start
    stats = UnitStatistics({}, {}, 0)
    if batches:
        start = time.perf_counter()
        stats = unit_statistics(model_a, model_b, spec, batches, runtime,
                                attack if inputs == "adversarial" else None, generator,
                                dict(plan.kinds),
                                tokens_per_image(tokens, sum(len(x) for x, _ in batches)))
        seconds["statistics"] = time.perf_counter() - start
    elif needs_data:
        raise ValueError(f"{method} alignment needs data")
    start = time.perf_counter()
    perm = entry.item(model_a, model_b, spec, stats.corr)
    unmatched = {}
    if needs_data:
        unmatched = silent_pairs(perm, stats.silent)
        perm = match_by_weights(perm, unmatched, model_a.state_dict(), model_b.state_dict(),
                                spec)
        # spaces no activation shows (inside nn.MultiheadAttention): matched by their weights
        unseen = [g for g in groups_of(spec) if not any(s.name in stats.corr for s in g.members)]
        if unseen:
            perm = weight_matching(model_a.state_dict(), model_b.state_dict(), spec, start=perm,
                                   only=unseen)
    rotations: Rotations = {}
    if plan:
        plan = plan.shown_by(stats.moments)
        perm, rotations = solve_rotations(
            plan, spec, perm, {n: m.rotation_cross() for n, m in stats.moments.items()},
            {n: m.squares for n, m in stats.moments.items() if m.squares is not None})
    seconds["assignment"] = time.perf_counter() - start
    reports = [_space_report(space, perm[space.name], stats, unmatched, rotations.get(space.name),
                             plan.kinds.get(space.name)) for space in spec]
    return Alignment(method, inputs, perm, reports, seconds, stats.samples, maps, rotations,
                     plan)


MAP_NAMES = {"heads": "rotation per head", "stream": "rotation"}


def _space_report(space: Space, p: torch.Tensor, stats: UnitStatistics,
                  unmatched: dict[str, torch.Tensor], rotation: torch.Tensor | None,
                  kind: str | None) -> SpaceReport:
    c = stats.corr.get(space.name)
    diag = torch.arange(space.size)
    after = float(c[diag, p].mean()) if c is not None else float("nan")
    if rotation is not None:  # the correlation with b's units mapped by both maps
        transform = rotation @ torch.eye(space.size, dtype=torch.float64)[p]
        after = float(stats.moments[space.name].corr_after(transform).mean())
    return SpaceReport(
        space.name, space.size, float(c[diag, diag].mean()) if c is not None else float("nan"),
        after, float((p != diag).float().mean()),
        int(unmatched[space.name].numel()) if space.name in unmatched else 0,
        MAP_NAMES[kind] if kind is not None and rotation is not None else "permutation",
        mean_angle(rotation) if rotation is not None else None)


def silent_pairs(perm: Permutation, silent: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per space, A's units whose match had no correlation signal: silent themselves, or
    matched to a silent unit of B."""
    out = {}
    for name, p in perm.items():
        if name in silent:
            rows = silent[name][0] | silent[name][1][p]
            if rows.any():
                out[name] = torch.nonzero(rows).flatten()
        # spaces without statistics have nothing to re-match
    return out


@register_alignment("corr", needs_data=True)
def _by_correlation(model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec,
                    corr: dict[str, torch.Tensor]) -> Permutation:
    """Tatro et al. (2020): per space, the assignment that maximises the summed correlation of
    matched units."""
    return solve_groups(spec, corr)


@register_alignment("weights")
def _by_weights(model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec,
                corr: dict[str, torch.Tensor]) -> Permutation:
    """Ainsworth et al. (2023): weight matching, data-free coordinate ascent."""
    return weight_matching(model_a.state_dict(), model_b.state_dict(), spec)
