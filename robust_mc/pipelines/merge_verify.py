"""`robust-mc merge --verify`: AutoAttack and the gradient-masking checks on the members, their
ensemble and the final merge, on the first ``verify.images`` test images, as `connect --verify`
verifies a path's points."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from robust_mc.config import MergeRunConfig
from robust_mc.data import Data
from robust_mc.evaluation.verification import PointVerification, verify_point
from robust_mc.run import distributed
from robust_mc.run.runtime import Runtime


def verify_models(models: Sequence[tuple[str, nn.Module]], cfg: MergeRunConfig, data: Data,
                  runtime: Runtime) -> dict[str, PointVerification]:
    """Each named model verified (shared out over processes under torchrun), by name."""
    images = data.test.take(cfg.verify.images).to(runtime.device)

    def verify(item: tuple[str, nn.Module]) -> PointVerification:
        name, model = item
        return verify_point(model, 0.0, [name], images, path_attack=cfg.path.attack,
                            eps=cfg.attack.eps, norm=cfg.attack.norm,
                            num_classes=data.info.num_classes, settings=cfg.verify,
                            runtime=runtime, batch_size=cfg.path.batch_size)

    results = distributed.group().map(verify, list(models))
    return {name: point for (name, _), point in zip(models, results, strict=True)}
