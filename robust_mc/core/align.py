"""Neuron alignment: permute model B's hidden units to match model A's.

``corr`` (Tatro et al. 2020): one pass of both models over the alignment data accumulates, in
float64, the sums that give the cross-correlation of every pair of units of each space (a conv
channel counts every spatial position of every image as a sample; spaces tied by residual
connections pool the statistics of all their taps); each space is then solved as a linear
assignment problem maximising the summed correlation of matched units.

``weights`` (Ainsworth et al. 2023, Git Re-Basin weight matching): data-free coordinate ascent over
spaces, each step a linear assignment on the inner products of the weights that the space's
permutation acts on, until no permutation changes.
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
from robust_mc.core.assignment import (
    Group,
    given_order,
    group_value,
    groups_of,
    solve_assignment,
    solve_group,
    solve_groups,
)
from robust_mc.core.fold import fold_batchnorm_graph
from robust_mc.core.permutation import (
    Axis,
    Permutation,
    PermutationSpec,
    Space,
    identity_permutation,
    trace_graph,
    trace_permutation_spec,
)
from robust_mc.core.rotatable import MapClass, RotationPlan, plan_rotations
from robust_mc.core.rotation import Rotations, mean_angle
from robust_mc.core.rotation_align import solve_rotations
from robust_mc.core.spec import permute_axis
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


# --- activation statistics ----------------------------------------------------------------------

class _PairRunner:
    """Runs two eval-mode models of one architecture node by node in lockstep, handing the outputs
    of each tap node to ``on_tap`` the moment both exist: nothing is stored, and later in-place
    operations cannot change what was measured. Batch norm is folded into the convolution before
    it (the same function, one pass fewer) unless that convolution's own output is a tap; a tap
    on a folded BN reads its convolution."""

    def __init__(self, model_a: nn.Module, model_b: nn.Module, taps: set[str]) -> None:
        graphs: list[torch.fx.GraphModule] = []
        aliases: dict[str, str] = {}  # the same for both: one architecture
        for model in (model_a, model_b):
            folded = fold_batchnorm_graph(model, keep=taps)
            # untraceable: tracing again raises the error that names the operation
            gm, aliases = folded if folded is not None else (trace_graph(model), {})
            graphs.append(gm)
        self.networks: list[nn.Module] = list(graphs)
        self.graph = graphs[0].graph
        # both interpreters walk model A's graph; each fetches modules from its own model
        self.interpreters = [torch.fx.Interpreter(gm) for gm in graphs]
        self.taps: dict[str, list[str]] = {}  # node run -> the tap names it gives
        for tap in sorted(taps):
            self.taps.setdefault(aliases.get(tap, tap), []).append(tap)

    def run(self, x_a: torch.Tensor, x_b: torch.Tensor,
            on_tap: Callable[[str, torch.Tensor, torch.Tensor], None]) -> None:
        envs: list[dict] = [{}, {}]
        for interp, x in zip(self.interpreters, (x_a, x_b), strict=True):
            interp.env = {}
            interp.args_iter = iter([x])
        last_uses = self.interpreters[0].user_to_last_uses
        for node in self.graph.nodes:
            if node.op == "output":
                break
            outs = []
            for interp, env in zip(self.interpreters, envs, strict=True):
                interp.env = env
                env[node] = interp.run_node(node)
                outs.append(env[node])
            if node.name in self.taps:
                for tap in self.taps[node.name]:
                    on_tap(tap, outs[0], outs[1])
            for env in envs:
                for dead in last_uses.get(node, []):
                    env.pop(dead, None)


TOKENS = 8  # tokens per image that enter a transformer's statistics by default (align.tokens)
# ... or more, where the images are few: a correlation estimated from this many samples has a
# standard error below 0.005 (on the digits' 1,294 images every token is kept)
TOKEN_SAMPLES = 40_000


def tokens_per_image(tokens: int, images: int) -> int:
    """The tokens per image the statistics take: ``tokens`` (0: all), raised so that the
    images give at least :data:`TOKEN_SAMPLES` samples."""
    if tokens <= 0 or images <= 0:
        return tokens
    return max(tokens, -(-TOKEN_SAMPLES // images))


def _token_subset(t: torch.Tensor, axis: int, tokens: int, batch: int) -> torch.Tensor:
    """A token-shaped activation (units on the last of three or more axes: (B, N, C),
    (B, H, W, C)) with at most about ``tokens`` positions per image, evenly spaced and starting
    one position later each ``batch`` (over the batches every position is seen); any other
    activation (convolution maps, vectors) or ``tokens`` 0 as it is. The cross products of every
    token cost as much as the forward pass itself in a ViT (an MLP's units squared per token)."""
    if tokens <= 0 or t.dim() < 3 or axis != t.dim() - 1:
        return t
    flat = t.reshape(t.shape[0], -1, t.shape[-1])  # units stay on the last axis
    stride = -(-flat.shape[1] // tokens)
    return flat[:, batch % stride::stride] if stride > 1 else t


def _as_samples(t: torch.Tensor, axis: int) -> torch.Tensor:
    """(N, ..., C at ``axis``, ...) -> (samples, C) float32: every position (or token) of every
    image is a sample. A view where the layout allows it (channels-last), else one copy."""
    t = t.detach().float()
    if axis != t.dim() - 1:
        t = t.movedim(axis, -1)
    return t.reshape(-1, t.shape[-1])


class _Moments:
    """Running float64 sums for the cross-correlation of A's and B's units of one space: sums,
    sums of squares and cross products. Each batch's are reduced in float32 by matrix products
    (the cross products by one (units, units) product; sums and squares as products with a
    vector of ones, several times faster than column reductions of a tall, narrow matrix) and
    accumulated in float64."""

    def __init__(self, units: int, rotation: str | None = None) -> None:
        self.units = units
        self.rotation = rotation  # the space takes a rotation: "heads" or "stream"
        self.count = 0.0
        self.sums: torch.Tensor | None = None  # (2, units): A, B
        self.squares: torch.Tensor | None = None  # (2, units)
        self.cross: torch.Tensor | None = None  # (units, units)
        self.b_cross: torch.Tensor | None = None  # (units, units) B with itself: rotations
        self.normed_cross: torch.Tensor | None = None  # stream: LayerNorm-normalised samples
        self._ones: torch.Tensor | None = None

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:  # (samples, units) each
        ones = self._ones
        if ones is None or ones.shape[0] != a.shape[0] or ones.device != a.device:
            ones = self._ones = torch.ones(a.shape[0], dtype=a.dtype, device=a.device)
        sums = torch.stack([ones @ a, ones @ b]).double()
        squares = torch.stack([ones @ (a * a), ones @ (b * b)]).double()
        cross = (a.T @ b).double()
        if self.sums is None or self.squares is None or self.cross is None:
            self.sums, self.squares, self.cross = sums, squares, cross
        else:
            self.sums += sums
            self.squares += squares
            self.cross += cross
        if self.rotation is not None:
            self.b_cross = _accumulate(self.b_cross, b.T @ b)
        if self.rotation == "stream":
            self.normed_cross = _accumulate(self.normed_cross,
                                            _layer_normalised(a).T @ _layer_normalised(b))
        self.count += a.shape[0]

    def rotation_cross(self) -> torch.Tensor:
        """What a rotation of this space is solved on: sum a b^T, of LayerNorm-normalised
        samples for a stream."""
        out = self.normed_cross if self.rotation == "stream" else self.cross
        assert out is not None
        return out

    def corr_after(self, transform: torch.Tensor) -> torch.Tensor:
        """(units,) correlation of each unit of A with the same unit of ``transform`` @ B
        (``transform``: the composite of the permutation and the rotation)."""
        assert self.sums is not None and self.squares is not None and self.cross is not None
        assert self.b_cross is not None
        mean = self.sums / self.count
        t = transform.double().to(mean.device)
        cov = (self.cross / self.count - mean[0][:, None] * mean[1][None, :]) @ t.T
        cov_b = self.b_cross / self.count - mean[1][:, None] * mean[1][None, :]
        std_a = (self.squares[0] / self.count - mean[0] ** 2).clamp_min(0).sqrt()
        std_b = torch.einsum("ij,jk,ik->i", t, cov_b, t).clamp_min(0).sqrt()
        denom = std_a * std_b
        diag = torch.diagonal(cov)
        return torch.where(denom > 1e-12, diag / denom.clamp_min(1e-12), torch.zeros_like(diag))

    def silent(self) -> torch.Tensor:
        """(2, units) bool: units of A and of B that never varied (dead, or constant on the
        data): their correlations carry no signal."""
        assert self.sums is not None and self.squares is not None
        mean = self.sums / self.count
        var = (self.squares / self.count - mean ** 2).clamp_min(0)
        return var.sqrt() <= 1e-6 * (mean.abs() + 1)

    def correlation(self) -> torch.Tensor:
        """(units_a, units_b) Pearson correlation; units that never vary correlate 0."""
        assert self.sums is not None and self.squares is not None and self.cross is not None
        mean = self.sums / self.count
        std = (self.squares / self.count - mean ** 2).clamp_min(0).sqrt()
        cov = self.cross / self.count - mean[0][:, None] * mean[1][None, :]
        denom = std[0][:, None] * std[1][None, :]
        return torch.where(denom > 1e-12, cov / denom.clamp_min(1e-12), torch.zeros_like(cov))


def _accumulate(total: torch.Tensor | None, batch: torch.Tensor) -> torch.Tensor:
    batch = batch.double()
    return batch if total is None else total + batch


def _layer_normalised(x: torch.Tensor) -> torch.Tensor:
    """(samples, units): each sample centred over its units and scaled to unit RMS, as a
    LayerNorm reads it."""
    x = x - x.mean(1, keepdim=True)
    return x / x.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)


@dataclass
class UnitStatistics:
    """Per space: the (units, units) correlations of A's and B's units, and which units of A
    and of B never varied on the data (``silent``, (2, units) bool)."""

    corr: dict[str, torch.Tensor]
    silent: dict[str, torch.Tensor]
    samples: int
    moments: dict[str, _Moments] = field(default_factory=dict)  # spaces that take rotations


def unit_statistics(model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec,
                    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], runtime: Runtime,
                    attack: TrainingAttack | None = None, generator: torch.Generator | None = None,
                    rotations: dict[str, str] | None = None, tokens: int = 0
                    ) -> UnitStatistics:
    """Correlations and silent units per space, from one forward pass of each model over
    ``batches``. With ``attack``, each model sees its own adversarial examples of the batch,
    with the same random start for both, drawn from ``generator``. ``rotations``: the spaces
    that take a rotation (``"heads"`` or ``"stream"``), whose moments are kept whole.
    ``tokens`` > 0: at most about that many tokens per image of a token-shaped activation
    (:func:`_token_subset`).
    """
    rotations = rotations or {}
    runner = _PairRunner(model_a, model_b, spec.tap_nodes)
    moments = {space.name: _Moments(space.size, rotations.get(space.name))
               for space in spec if space.taps}
    by_tap: dict[str, list[tuple[_Moments, int, slice]]] = {}
    for space in spec:  # tied spaces pool the samples of all their taps
        for tap in space.taps:
            by_tap.setdefault(tap.node, []).append(
                (moments[space.name], tap.axis, slice(tap.offset, tap.offset + space.size)))

    done = 0  # batches

    def on_tap(node: str, a: torch.Tensor, b: torch.Tensor) -> None:
        samples: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for moment, axis, cols in by_tap[node]:
            if axis not in samples:
                a_kept, b_kept = (_token_subset(t, axis, tokens, done) for t in (a, b))
                kept_axis = axis if a_kept.dim() == a.dim() else a_kept.dim() - 1
                samples[axis] = (_as_samples(a_kept, kept_axis), _as_samples(b_kept, kept_axis))
            sa, sb = samples[axis]
            moment.add(sa[:, cols], sb[:, cols])

    samples = 0
    for model in (model_a, model_b):
        model.eval()
    # an eval-mode attack runs on the folded networks (the same function); one in train mode needs
    # the batch norm layers themselves
    train_mode = attack is not None and attack.mode == "train"
    targets = [model_a, model_b] if train_mode else runner.networks
    for x, y in batches:
        x, y = runtime.images(x.to(runtime.device)), y.to(runtime.device)
        inputs = [x, x]
        if attack is not None:  # the same random start for both: equal functions, equal inputs
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with runtime.autocast():
                inputs = [attack(model, x, y, torch.Generator(x.device).manual_seed(seed))
                          for model in targets]
        with torch.no_grad(), runtime.autocast():
            runner.run(inputs[0], inputs[1], on_tap)
        samples += x.shape[0]
        done += 1
    return UnitStatistics({name: m.correlation().cpu() for name, m in moments.items()},
                          {name: m.silent().cpu() for name, m in moments.items()}, samples,
                          {name: m for name, m in moments.items() if m.rotation is not None})


# --- weight matching ----------------------------------------------------------------------------

def _unit_matrix(tensor: torch.Tensor, axis_spec: Axis, size: int) -> torch.Tensor:
    """Rows = the space's units on this axis, columns = everything else that moves with them."""
    t = tensor.movedim(axis_spec.axis, 0)
    t = t[axis_spec.offset:axis_spec.offset + size * axis_spec.repeat]
    return t.reshape(size, -1).double()


def weight_matching(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                    spec: PermutationSpec, max_sweeps: int = 100, seed: int = 0,
                    start: Permutation | None = None, only: list[Group] | None = None
                    ) -> Permutation:
    """Git Re-Basin weight matching over parameters (running statistics are not weights):
    coordinate ascent over groups of spaces (``only``: just these, the rest as in ``start``),
    each step an assignment (hierarchical for heads and groups) given the others."""
    perm = {name: p.clone() for name, p in (start or identity_permutation(spec)).items()}
    tables = _weight_tables(spec, state_a, state_b)
    groups = only if only is not None else groups_of(spec)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(max_sweeps):
        changed = False
        for index in torch.randperm(len(groups), generator=gen).tolist():
            group = groups[index]
            scores = {s.name: _weight_score(s, perm, *tables) for s in group.spaces}
            new = solve_group(group, scores, given_order(group, perm))
            old_value, new_value = group_value(group, scores, perm), group_value(group, scores,
                                                                                  new)
            if new_value > old_value + 1e-9 * max(1.0, abs(old_value)):
                perm.update(new)
                changed = True
        if not changed:
            break
    return perm


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


def match_by_weights(perm: Permutation, rows: dict[str, torch.Tensor],
                     state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                     spec: PermutationSpec, max_sweeps: int = 10) -> Permutation:
    """Re-match, within each space, the ``rows`` of A and the units of B they were matched to by
    weight matching given the rest of the assignment (live units keep their match): units
    without a correlation signal (dead, or constant on the data) are paired by what they
    compute, so a permuted copy is recovered exactly even where units are dead. In a grouped
    space, units are re-matched within their matched blocks only."""
    if not rows:
        return perm
    perm = {name: p.clone() for name, p in perm.items()}
    tables = _weight_tables(spec, state_a, state_b)
    for _ in range(max_sweeps):
        changed = False
        for space in spec:
            if space.name not in rows or (space.blocks is not None and space.blocks.shared):
                continue  # (a shared order within heads is re-solved only as a whole)
            score = _weight_score(space, perm, *tables)
            block = space.blocks.size if space.blocks is not None else space.size
            for r in _by_block(rows[space.name], block):
                cols = perm[space.name][r]
                new = cols[solve_assignment(score[r][:, cols])]
                if not torch.equal(new, perm[space.name][r]):
                    perm[space.name][r] = new
                    changed = True
        if not changed:
            break
    return perm


def _by_block(rows: torch.Tensor, block: int) -> list[torch.Tensor]:
    """``rows`` split by the block each lies in."""
    return [rows[rows // block == b] for b in torch.unique(rows // block).tolist()]


Tables = tuple[dict[str, list[tuple[Space, Axis]]], dict[str, torch.Tensor],
               dict[str, torch.Tensor]]


def _weight_tables(spec: PermutationSpec, state_a: dict[str, torch.Tensor],
                   state_b: dict[str, torch.Tensor]) -> Tables:
    """For weight matching: each tensor's (space, axis) pairs, and A's and B's parameters in
    float64 on the CPU (running statistics are not weights)."""
    by_tensor: dict[str, list[tuple[Space, Axis]]] = {}
    for space in spec:
        for axis in space.axes:
            by_tensor.setdefault(axis.name, []).append((space, axis))
    names = [n for n in by_tensor if "running_" not in n and n in state_a]
    return (by_tensor, {n: state_a[n].detach().cpu().double() for n in names},
            {n: state_b[n].detach().cpu().double() for n in names})


def _weight_score(space: Space, perm: Permutation, by_tensor: dict[str, list[tuple[Space, Axis]]],
                  a_cpu: dict[str, torch.Tensor], b_cpu: dict[str, torch.Tensor]
                  ) -> torch.Tensor:
    """(units, units) inner products of A's and B's units over every tensor that moves with the
    space, B's other axes permuted as matched so far (weight matching's objective). A grouped
    convolution's input axis, whose order differs per group, does not count."""
    score = torch.zeros(space.size, space.size, dtype=torch.float64)
    for axis in space.axes:
        if axis.name not in a_cpu or axis.groups > 1 or axis.within:
            continue
        b = b_cpu[axis.name]
        for other, other_axis in by_tensor[axis.name]:
            if other is not space:
                b = permute_axis(b, other_axis, perm[other.name])
        score += _unit_matrix(a_cpu[axis.name], axis, space.size) @ _unit_matrix(
            b, axis, space.size).T
    return score


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
