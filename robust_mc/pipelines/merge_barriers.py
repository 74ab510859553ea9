"""The robust loss barrier of each member to the merge: the straight line from the member (in the
merge's frame) to the merged network, measured as `connect` measures a line (its networks'
statistics as ``--repair`` says, the evaluation attack on the test images)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robust_mc.config import MergeRunConfig
from robust_mc.core.curves import Curve
from robust_mc.data import Data
from robust_mc.evaluation.barriers import barrier
from robust_mc.evaluation.path import PathNetworks, path_attack
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.models import Classifier
from robust_mc.run import distributed
from robust_mc.run.runtime import Runtime


def member_barriers(members: Sequence[Classifier], merged: Classifier, cfg: MergeRunConfig,
                    data: Data, runtime: Runtime) -> list[float] | None:
    """Per member, the robust loss barrier of the line to ``merged`` at ``merge.barrier_points``
    evenly spaced t; None when ``merged`` has parameters the members lack (repair gave a layer
    without a bias one), so no line joins them."""
    names = {n for n, _ in members[0].named_parameters()}
    if {n for n, _ in merged.named_parameters()} != names:
        return None
    ts = torch.linspace(0, 1, cfg.merge.barrier_points).tolist()
    attack = path_attack(cfg.path, cfg.attack, data.info.num_classes)
    test = data.test.take(cfg.path.test_limit).to(runtime.device)
    lines = [PathNetworks(Curve.between("line", m, m.state_dict(), merged.state_dict()), m,
                          data, cfg.path, cfg.attack, runtime, endpoint_b=merged)
             for m in members]
    # every line ends at the merge: its network at t = 1 is measured once
    points = [(i, t) for i in range(len(lines)) for t in ts[:-1]] + [(0, 1.0)]

    def robust_loss(point: tuple[int, float]) -> float:
        network: nn.Module = lines[point[0]].at(point[1])
        metrics = evaluate_seeded(network, test, attack, runtime, cfg.path.batch_size,
                                  cfg.path.seed)
        return metrics.robust_loss

    losses = distributed.group().map(robust_loss, points)
    end = losses[-1]
    per_line = len(ts) - 1
    return [barrier(ts, [*losses[i * per_line:(i + 1) * per_line], end])[0]
            for i in range(len(lines))]
