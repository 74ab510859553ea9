"""Learned maps: an alignment's maps refined by training them on the loss of the line between a
and b mapped, on clean images or on the PGD examples of the network at each t (learned matching
under attack).

The solved alignment (permutations, and the orthogonal maps its class allows) is the start. On
top of it every space gets a trainable map of its own kind:

- a rotated space (a residual stream, attention heads) an orthogonal map ``exp(K)`` with ``K``
  skew-symmetric, block-diagonal per head for heads, and with ``K 1 = 0`` for a stream (so the
  map fixes the all-ones vector and its LayerNorms stay exact);
- a permuted space (MLP hidden units, anything the class leaves to permutations) a permutation
  trained through a straight-through estimator: the forward pass uses the assignment that
  maximises a score matrix (initialised at the identity), the gradient goes to the scores.

Grouped spaces (attention heads permuted as wholes, convolution groups) keep their solved
order. Each step draws t uniformly, builds ``(1 - t) a + t map(b)`` and takes the objective of
:class:`robust_mc.train.tasks.CurveTask` (its attack on the network at t, detached from the maps),
so the maps are trained as a curve's bends are. The result is the composition, applied to b as
given in float64 like any alignment, and recorded as one.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from robust_mc.attacks.training import AttackConfig
from robust_mc.core.align import MAP_NAMES, Alignment
from robust_mc.core.assignment import solve_assignment
from robust_mc.core.rotatable import RotationPlan
from robust_mc.core.rotation import Rotations, mean_angle
from robust_mc.core.rotation_align import fold_and_mix
from robust_mc.core.spec import Permutation, PermutationSpec, Space
from robust_mc.data import Split, batches
from robust_mc.run import distributed
from robust_mc.run.runtime import Runtime
from robust_mc.train.settings import CurveConfig
from robust_mc.train.tasks import CurveTask


@dataclass(frozen=True)
class LearnSettings:
    steps: int
    lr: float
    batch_size: int
    objective: str  # "clean" or "adversarial": what CurveTask trains on
    seed: int


@dataclass(frozen=True)
class LearnedRecord:
    """What the training did, for the alignment report."""

    steps: int
    lr: float
    objective: str
    loss_first: float  # mean line loss of the first and last tenth of the steps (ten at least)
    loss_last: float
    seconds: float
    spaces: int  # maps trained

    def as_dict(self) -> dict:
        return dict(vars(self))


def describe_learned(learned: dict) -> str:
    """One line for the terminal, from :meth:`LearnedRecord.as_dict`."""
    return (f"learned the maps of {learned['spaces']} spaces in {learned['steps']} steps on "
            f"{learned['objective']} inputs: line loss {learned['loss_first']:.3f} -> "
            f"{learned['loss_last']:.3f} ({learned['seconds']:.0f} s)")


class TrainableMaps(nn.Module):
    """One trainable map per space that can take one (see the module's docstring), at the
    identity: ``matrices()`` gives them as (size, size) matrices for :func:`mix_state`."""

    def __init__(self, spec: PermutationSpec, plan: RotationPlan) -> None:
        super().__init__()
        self.kinds: dict[str, str] = {}
        self.skew = nn.ParameterDict()
        self.scores = nn.ParameterDict()
        self.blocks: dict[str, int] = {}  # units per head of a space rotated per head
        for space in spec:
            key = _key(space.name)
            kind = plan.kinds.get(space.name)
            if kind is not None:
                self.kinds[space.name] = kind
                self.skew[key] = nn.Parameter(torch.zeros(space.size, space.size))
                if kind == "heads" and space.blocks is not None:
                    self.blocks[space.name] = space.blocks.size
            elif _permutable(space, spec):
                self.kinds[space.name] = "permutation"
                self.scores[key] = nn.Parameter(torch.eye(space.size))

    def __len__(self) -> int:
        return len(self.kinds)

    def matrices(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, kind in self.kinds.items():
            if kind == "permutation":
                scores = self.scores[_key(name)]
                hard = _assignment_matrix(scores.detach())
                out[name] = hard + scores - scores.detach()  # the straight-through estimator
            else:
                out[name] = torch.linalg.matrix_exp(self._generator(name))
        return out

    def _generator(self, name: str) -> torch.Tensor:
        s = self.skew[_key(name)]
        k = s - s.T
        n = k.shape[0]
        if name in self.blocks:  # one map per head: block-diagonal
            block = self.blocks[name]
            k = k * torch.block_diag(*[k.new_ones(block, block)] * (n // block))
        if self.kinds[name] == "stream":  # K 1 = 0: exp(K) fixes the all-ones vector
            centre = torch.eye(n, dtype=k.dtype, device=k.device) - 1.0 / n
            k = centre @ k @ centre
        return k

    @torch.no_grad()
    def result(self) -> tuple[Permutation, Rotations]:
        """The trained maps: permutations (new unit i = unit order[i]) and rotations
        (float64, orthogonal)."""
        perm, rotations = {}, {}
        for name, kind in self.kinds.items():
            if kind == "permutation":
                perm[name] = solve_assignment(self.scores[_key(name)].double().cpu())
            else:
                rotations[name] = torch.linalg.matrix_exp(self._generator(name).double().cpu())
        return perm, rotations


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


def _permutable(space: Space, spec: PermutationSpec) -> bool:
    """A space whose units a permutation may re-match freely: not grouped into blocks, not
    itself the order of blocks, and no axis shared by groups."""
    return (space.blocks is None and not spec.members(space.name)
            and all(a.groups == 1 and not a.within for a in space.axes))


def _assignment_matrix(scores: torch.Tensor) -> torch.Tensor:
    order = solve_assignment(scores.double().cpu())
    return torch.eye(scores.shape[0], dtype=scores.dtype, device=scores.device)[order]


class MappedLine:
    """The line from a to b with b's units mapped by ``maps`` on top of its alignment (b's
    streams folded, mixed and unfolded with a's norms, as ``map_state`` does): what the maps
    are trained through, as a curve's bends are."""

    def __init__(self, a: nn.Module, b_aligned: nn.Module, spec: PermutationSpec,
                 plan: RotationPlan, maps: TrainableMaps) -> None:
        self.names = [n for n, _ in a.named_parameters()]
        self.a_state = {k: v.detach() for k, v in a.state_dict().items()}
        self.b_params = {n: p.detach() for n, p in b_aligned.named_parameters()}
        self.spec, self.plan, self.maps = spec, plan, maps

    def weights_at(self, t: float) -> dict[str, torch.Tensor]:
        mapped = fold_and_mix(self.b_params, self.a_state, self.spec, self.maps.matrices(),
                              self.plan)
        return {n: (1 - t) * self.a_state[n] + t * mapped[n] for n in self.names}


def learn_maps(a: nn.Module, b_aligned: nn.Module, spec: PermutationSpec, plan: RotationPlan,
               train: Split, attack: AttackConfig, settings: LearnSettings, runtime: Runtime
               ) -> tuple[Permutation, Rotations, LearnedRecord]:
    """The maps, on top of ``b_aligned``, that lower the line's loss: trained ``settings.steps``
    steps with Adam; returns them (permutations, rotations) with the record."""
    maps = TrainableMaps(spec, plan).to(runtime.device)
    line = MappedLine(a, b_aligned, spec, plan, maps)
    generator = torch.Generator().manual_seed(settings.seed)
    task = CurveTask(copy.deepcopy(a), line, attack,
                     CurveConfig(objective=settings.objective), runtime, generator,
                     torch.Generator(runtime.device).manual_seed(settings.seed))
    optimizer = torch.optim.Adam(maps.parameters(), lr=settings.lr)
    losses: list[float] = []
    start = time.perf_counter()
    while len(losses) < settings.steps and len(maps) and len(train):
        for x, y in batches(train, settings.batch_size, shuffle=True, generator=generator,
                            drop_last=True):
            loss, _ = task(runtime.images(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if len(losses) == settings.steps:
                break
    # under torchrun every rank trains alike; rank 0's maps are taken everywhere, so that float
    # nondeterminism (GPU atomics) cannot leave the ranks with different b's
    perm, rotations = distributed.group().gather(maps.result())[0]
    # t and the batch change every step: average a tenth of the steps, at least ten of them
    window = max(len(losses) // 10, min(10, len(losses) // 2), 1)
    record = LearnedRecord(settings.steps, settings.lr, settings.objective,
                           _mean(losses[:window]), _mean(losses[-window:]),
                           time.perf_counter() - start, len(maps))
    return perm, rotations, record


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def with_learned_maps(alignment: Alignment, perm: Permutation, rotations: Rotations,
                      record: LearnedRecord) -> Alignment:
    """The alignment followed by the learned maps: each permutation composed (new unit i =
    unit ``alignment.perm[perm[i]]``), each rotation applied after the solved one; the report's
    share of moved units and angles follow (the correlations stay the solved maps')."""
    orders = {name: alignment.perm[name][order] for name, order in perm.items()}
    turned = {name: q @ alignment.rotations[name] if name in alignment.rotations else q
              for name, q in rotations.items()}
    orders, turned = {**alignment.perm, **orders}, {**alignment.rotations, **turned}
    spaces = []
    for s in alignment.spaces:
        moved = float((orders[s.name] != torch.arange(s.units)).float().mean())
        kind = alignment.plan.kinds.get(s.name)
        if s.name in turned and kind is not None:
            s = replace(s, map=MAP_NAMES[kind], angle=mean_angle(turned[s.name]))
        spaces.append(replace(s, moved=moved))
    return replace(alignment, perm=orders, rotations=turned, spaces=spaces,
                   learned=record.as_dict())
