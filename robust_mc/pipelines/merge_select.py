"""Which members a merge averages (`robust-mc merge --merge-select greedy`): a greedy soup
(Wortsman et al., "Model soups", ICML 2022) on robust accuracy. The members, in one frame, are
ranked by their validation robust accuracy; each in turn joins the merge (equal weights among
those kept) when the merge's validation robust accuracy, its statistics set as ``--repair``
says, does not fall."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from robust_mc.config import MergeRunConfig
from robust_mc.data import Data
from robust_mc.errors import UserError
from robust_mc.evaluation.path import path_attack
from robust_mc.evaluation.robustness import Metrics, evaluate_seeded
from robust_mc.models import Classifier
from robust_mc.pipelines.merge_frames import averaged
from robust_mc.pipelines.merge_statistics import settled
from robust_mc.run import distributed
from robust_mc.run.runtime import Runtime


@dataclass(frozen=True)
class SelectionStep:
    """One step of the greedy soup: the member tried, the merge's validation robust accuracy
    with it (the member alone for the first), and whether it was kept."""

    member: int
    val_robust_acc: float
    kept: bool


def greedy_weights(members: Sequence[Classifier], cfg: MergeRunConfig, data: Data,
                   runtime: Runtime, say: Callable[[str], None]
                   ) -> tuple[list[float], list[SelectionStep]]:
    """The greedy soup's weights (1/k for each of the k members kept, 0 for the others)."""
    if len(data.val) == 0:
        raise UserError("--merge-select greedy chooses on the validation split, which is "
                        "empty; set --val-size above 0 or use --merge-select all")
    val = data.val.take(cfg.path.val_limit).to(runtime.device)
    attack = path_attack(cfg.path, cfg.attack, data.info.num_classes)

    def score(model: Classifier) -> Metrics:
        return evaluate_seeded(model, val, attack, runtime, cfg.path.batch_size, cfg.path.seed)

    alone = distributed.group().map(score, list(members))
    order = sorted(range(len(members)), key=lambda i: (-alone[i].robust_acc, i))
    kept, best = [order[0]], alone[order[0]].robust_acc
    steps = [SelectionStep(order[0], best, True)]
    for i in order[1:]:
        weights = _equal(kept + [i], len(members))
        merged = settled(averaged(members[0], members, weights), list(members), weights, cfg,
                         data, runtime)[-1][1]
        accuracy = score(merged).robust_acc
        steps.append(SelectionStep(i, accuracy, accuracy >= best))
        if accuracy >= best:
            kept, best = kept + [i], accuracy
    say("greedy soup on " + f"{len(val)} validation images: " + ", ".join(
        f"member {s.member + 1} {'kept' if s.kept else 'left out'} ({s.val_robust_acc:.1f}%)"
        for s in steps))
    return _equal(kept, len(members)), steps


def _equal(kept: Sequence[int], members: int) -> list[float]:
    return [1.0 / len(kept) if i in kept else 0.0 for i in range(members)]
