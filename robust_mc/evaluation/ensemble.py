"""Robust ensembles from a path: greedy forward selection of points on a trained curve by the
validation robust accuracy of the ensemble, the ensemble always attacked as one model.

Each round adds the candidate that makes the ensemble most robust on the validation split (ties:
the higher clean accuracy, then the earlier t). Members may include the endpoints (t = 0, 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from robust_mc.attacks import Attack
from robust_mc.data import Split
from robust_mc.evaluation.robustness import Metrics, evaluate_seeded
from robust_mc.models.ensemble import Combine, Ensemble
from robust_mc.run import distributed
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime


@dataclass(frozen=True)
class Selection:
    indices: list[int]  # into the candidates, in the order chosen
    rounds: list[dict]  # per round: the candidate added and the ensemble's validation metrics


def greedy_select(candidates: Sequence[nn.Module], k: int, val: Split, attack: Attack,
                  runtime: Runtime, *, batch_size: int, seed: int, combine: Combine = "logits",
                  reporter: Reporter | None = None, labels: list[str] | None = None
                  ) -> Selection:
    """Choose ``k`` distinct candidates, one per round, maximising the ensemble's validation
    robust accuracy."""
    if not 1 <= k <= len(candidates):
        raise ValueError(f"k must be between 1 and {len(candidates)}, got {k}")
    labels = labels or [str(i) for i in range(len(candidates))]
    chosen: list[int] = []
    rounds: list[dict] = []
    for round_index in range(k):
        best: tuple[tuple[float, float], int, Metrics] | None = None
        remaining = [i for i in range(len(candidates)) if i not in chosen]

        def with_candidate(i: int) -> Metrics:
            ensemble = Ensemble([candidates[j] for j in (*chosen, i)], combine)
            return evaluate_seeded(ensemble, val, attack, runtime, batch_size, seed)

        # on several processes the candidates are shared out (the same seeds: the same choice)
        for i, metrics in zip(remaining, distributed.group().map(with_candidate, remaining),
                              strict=True):
            score = (metrics.robust_acc, metrics.clean_acc)
            if best is None or score > best[0]:
                best = (score, i, metrics)
        assert best is not None
        _, index, metrics = best
        chosen.append(index)
        rounds.append({"round": round_index + 1, "added": labels[index],
                       "members": [labels[j] for j in chosen], "val": metrics.as_dict()})
        if reporter is not None:
            reporter.print(f"  round {round_index + 1}: + {labels[index]} -> val robust "
                           f"{metrics.robust_acc:.2f}% (clean {metrics.clean_acc:.2f}%)")
    return Selection(chosen, rounds)
