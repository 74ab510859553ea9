"""One frame for many networks: every member's units aligned so that averaging them is
meaningful (`robust-mc merge --merge-frame`).

- ``reference``: every member aligned to one of them (the first, or the most robust on the
  validation images).
- ``consensus``: from the reference frame, each member in turn aligned to the weighted average
  of the others; its new maps are kept only where they raise the agreement of the whole
  (:func:`robust_mc.core.merge.agreement`), so the objective never decreases, and the rounds stop
  once one changes nothing (MergeMany, Ainsworth et al. 2023, for any alignment method and map
  class).
- ``pairwise``: a balanced tree of two-network merges: at each level the second node of a pair is
  aligned to the first and every member under it moves with it.

Each member is aligned with the same method, inputs and map class as ``robust-mc align``
(:func:`robust_mc.pipelines.alignment.align_models`), so each keeps its function.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from robust_mc.attacks.training import AttackConfig
from robust_mc.config import AlignConfig
from robust_mc.core.merge import agreement, average_states
from robust_mc.core.spec import load_weights
from robust_mc.data import Split
from robust_mc.models import Classifier
from robust_mc.pipelines.alignment import AlignedPair, align_models, mapped
from robust_mc.run.runtime import Runtime

AGREEMENT_GAIN = 1e-9  # a round's new maps are kept only where they raise agreement by more


@dataclass(frozen=True)
class FrameRound:
    """One round of a frame's search: the members' agreement after it, and which members'
    maps it changed (the pairwise frame: the level's pairs, by their first member)."""

    round: int
    agreement: float
    changed: list[int] = field(default_factory=list)


@dataclass
class Framed:
    """The members in one frame, in their given order, and how the frame was found."""

    members: list[Classifier]
    rounds: list[FrameRound]
    reference: int  # the member the others were first aligned to
    function_error: float  # the largest |logit change| of a member by its maps


@dataclass(frozen=True)
class Aligner:
    """Aligns one network to another as `robust-mc align` does: the training images, the
    alignment settings and training attack, and the runtime."""

    train: Split
    config: AlignConfig
    attack: AttackConfig
    runtime: Runtime

    def pair(self, target: Classifier, member: Classifier) -> AlignedPair:
        return align_models(target, member, self.train, self.config, self.attack, self.runtime)

    def __call__(self, target: Classifier, member: Classifier) -> tuple[Classifier, float]:
        """``member`` aligned to ``target``, and the largest change of its logits."""
        pair = self.pair(target, member)
        return pair.model_b, pair.function_error


def parameter_names(model: Classifier) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def averaged(template: Classifier, members: Sequence[Classifier], weights: Sequence[float]
             ) -> Classifier:
    """A network of ``template``'s architecture holding the weighted average of ``members``."""
    merged = copy.deepcopy(template)
    load_weights(merged, average_states([m.state_dict() for m in members], weights))
    return merged


def _agreement(members: Sequence[Classifier], weights: Sequence[float]) -> float:
    return agreement([m.state_dict() for m in members], weights, parameter_names(members[0]))


def as_given(models: Sequence[Classifier], weights: Sequence[float]) -> Framed:
    """The members as they are (no alignment): the unaligned average's frame."""
    return Framed(list(models), [FrameRound(0, _agreement(models, weights), [])], 0, 0.0)


def reference_frame(models: Sequence[Classifier], weights: Sequence[float], reference: int,
                    align: Aligner) -> Framed:
    """Every member aligned to ``models[reference]``."""
    members: list[Classifier] = []
    worst = 0.0
    for i, model in enumerate(models):
        if i == reference:
            members.append(model)
            continue
        aligned, error = align(models[reference], model)
        members.append(aligned)
        worst = max(worst, error)
    return Framed(members, [FrameRound(0, _agreement(members, weights), [])], reference, worst)


def consensus_frame(models: Sequence[Classifier], weights: Sequence[float], reference: int,
                    align: Aligner, rounds: int,
                    on_round: Callable[[FrameRound], None] | None = None) -> Framed:
    """From the reference frame, each member in turn aligned to the weighted average of the
    others (batch norm statistics averaged too); a member's new maps are kept where they raise
    the agreement. At most ``rounds`` rounds; stops after one that
    changes nothing."""
    framed = reference_frame(models, weights, reference, align)
    if on_round is not None:
        on_round(framed.rounds[0])
    members, history, worst = list(framed.members), list(framed.rounds), framed.function_error
    current = history[0].agreement
    for number in range(1, rounds + 1):
        changed: list[int] = []
        for i, model in enumerate(models):
            rest = [j for j in range(len(members)) if j != i]
            if sum(weights[j] for j in rest) <= 0:
                continue  # every other weight is 0: nothing to agree with
            target = averaged(members[0], [members[j] for j in rest], _shares(rest, weights))
            candidate, error = align(target, model)
            trial = members[:i] + [candidate] + members[i + 1:]
            score = _agreement(trial, weights)
            if score > current + AGREEMENT_GAIN:
                members, current = trial, score
                worst = max(worst, error)
                changed.append(i)
        history.append(FrameRound(number, current, changed))
        if on_round is not None:
            on_round(history[-1])
        if not changed:
            break
    return Framed(members, history, reference, worst)


@dataclass
class _Node:
    model: Classifier  # the average of its members, in its first member's frame
    members: dict[int, Classifier]  # member index -> that member in the node's frame


def pairwise_frame(models: Sequence[Classifier], weights: Sequence[float], align: Aligner,
                   on_round: Callable[[FrameRound], None] | None = None) -> Framed:
    """A balanced tree of two-network merges: nodes paired in order at each level, the second
    aligned to the first; an odd node waits for the next level."""
    nodes = [_Node(m, {i: m}) for i, m in enumerate(models)]
    history: list[FrameRound] = []
    worst = 0.0
    while len(nodes) > 1:
        joined: list[_Node] = []
        for first, second in zip(nodes[0::2], nodes[1::2], strict=False):
            pair = align.pair(first.model, second.model)
            worst = max(worst, pair.function_error)
            moved = {i: mapped(first.model, m, pair.spec, pair.alignment)[0]
                     for i, m in second.members.items()}
            joined.append(_node({**first.members, **moved}, weights))
        if len(nodes) % 2:
            joined.append(nodes[-1])
        nodes = joined
        level = FrameRound(len(history) + 1, _agreement_within(nodes, weights),
                           [min(node.members) for node in nodes])
        history.append(level)
        if on_round is not None:
            on_round(level)
    return Framed([nodes[0].members[i] for i in range(len(models))], history, 0, worst)


def _node(members: dict[int, Classifier], weights: Sequence[float]) -> _Node:
    indices = sorted(members)
    group = [members[i] for i in indices]
    return _Node(averaged(group[0], group, _shares(indices, weights)), members)


def _agreement_within(nodes: Sequence[_Node], weights: Sequence[float]) -> float:
    """The members' agreement within each node, averaged over the nodes by their weight."""
    total, score = 0.0, 0.0
    for node in nodes:
        indices = sorted(node.members)
        mass = sum(weights[i] for i in indices)
        score += mass * _agreement([node.members[i] for i in indices], _shares(indices, weights))
        total += mass
    return score / total if total > 0 else 1.0


def _shares(indices: Sequence[int], weights: Sequence[float]) -> list[float]:
    """The weights of the members ``indices`` rescaled to sum to 1 (equal where all are 0)."""
    mass = sum(weights[i] for i in indices)
    return [weights[i] / mass if mass > 0 else 1.0 / len(indices) for i in indices]
