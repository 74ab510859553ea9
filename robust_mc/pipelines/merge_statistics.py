"""A merge's statistics, stage by stage (`robust-mc merge --repair`): as the weights average
them, batch norm recomputed, then every unit's moments repaired to the members' average."""

from __future__ import annotations

import copy

from robust_mc.config import MergeRunConfig
from robust_mc.core.merge import average_moments
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.repair import measure, repair_network, repair_sites
from robust_mc.data import Data
from robust_mc.evaluation.path import batchnorm_layers, recompute_batchnorm
from robust_mc.evaluation.segment_repair import repair_inputs
from robust_mc.models import Classifier
from robust_mc.run.runtime import Runtime


def settled(model: Classifier, members: list[Classifier], weights: list[float],
             cfg: MergeRunConfig, data: Data, runtime: Runtime
             ) -> list[tuple[str, Classifier]]:
    """The average at each stage of its statistics as ``--repair`` says: averaged (as the
    weights average them), batch norm recomputed (networks that have it), repaired."""
    stages = [("merge", model)]
    if cfg.path.repair == "off":
        return stages
    path = cfg.path
    if batchnorm_layers(model):
        model = copy.deepcopy(model)
        recompute_batchnorm(model, data.train, images=path.bn_images, data=path.bn_data,
                            attack=cfg.attack, runtime=runtime, seed=path.seed)
        stages.append(("merge + BN reset", model))
    if path.repair != "repair":
        return stages
    inputs = repair_inputs(data.train, path, cfg.attack, runtime)
    probe = inputs.probe()
    sites = repair_sites(members[0], trace_permutation_spec(members[0], probe, partial=True),
                         probe)
    target = average_moments([measure(m, sites, inputs.of(m)) for m in members], weights)
    repaired = copy.deepcopy(model)
    repair_network(repaired, sites, target, inputs.of(repaired))
    stages.append(("merge + repair", repaired))
    return stages
