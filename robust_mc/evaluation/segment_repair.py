"""Statistics repair between two anchor networks: the repair images (clean, or each network's own
PGD examples) and the anchors' unit moments, measured once, then every network between them
repaired to the anchors' moments interpolated at its t (:mod:`robust_mc.core.repair`).

The anchors are a path's endpoints (``connect``, ``eval``, ``ensemble``, ``plane``), or endpoint
a and a with one layer group taken from b (``layers``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robust_mc.attacks import build_attack
from robust_mc.attacks.training import AttackConfig, TrainingAttack
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.repair import (
    Moments,
    Site,
    measure,
    repair_network,
    repair_sites,
    variance_collapse,
)
from robust_mc.data import Split, as_float, batches
from robust_mc.evaluation.settings import PathConfig
from robust_mc.models import Classifier
from robust_mc.run.runtime import Runtime

REPAIR_BATCH_SIZE = 250  # fixed, so that the same weights always get the same statistics


class OwnInputs:
    """Fixed inputs for any network: ``images`` (moved to the device once), or, with an
    ``attack``, the network's own examples of them, random starts from ``seed``. The same
    inputs for the same weights, so statistics measured on them are a function of the weights."""

    def __init__(self, images: Split, runtime: Runtime, attack: TrainingAttack | None = None,
                 seed: int = 0, batch_size: int = REPAIR_BATCH_SIZE) -> None:
        self.images, self.runtime, self.attack = images, runtime, attack
        self.seed, self.batch_size = seed, batch_size
        self._clean: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def probe(self) -> torch.Tensor:
        """Two of the images, to trace a network with."""
        return self.runtime.images(as_float(self.images.images[:2])).to(self.runtime.device)

    def of(self, model: nn.Module) -> list[torch.Tensor]:
        if self._clean is None:
            split = self.images.to(self.runtime.device)
            self._clean = [(self.runtime.images(x), y)
                           for x, y in batches(split, self.batch_size)]
        if self.attack is None:
            return [x for x, _ in self._clean]
        generator = torch.Generator(self.runtime.device).manual_seed(self.seed)
        with self.runtime.autocast():
            return [self.attack(model, x, y, generator).float() for x, y in self._clean]


def repair_inputs(train: Split, path: PathConfig, attack: AttackConfig,
                  runtime: Runtime) -> OwnInputs:
    """Repair's images: the first ``path.repair_images`` training images, clean or each
    network's own examples of the training attack (in its mode), random starts from the path's
    seed."""
    adversarial = path.repair_inputs == "adversarial"
    return OwnInputs(train.take(path.repair_images), runtime,
                     build_attack(attack) if adversarial else None, path.seed)


class SegmentRepair:
    """Repairs networks between two anchors, or measures their variance collapse. ``anchors``
    builds them, called once, on first use (their batch norm, if any, already as the networks
    between them get it); ``sites`` are traced from anchor a unless given."""

    def __init__(self, anchors: Callable[[], tuple[Classifier, Classifier]],
                 inputs: OwnInputs, sites: list[Site] | None = None) -> None:
        self._anchors, self.inputs, self._sites = anchors, inputs, sites
        self._measured: tuple[list[Site], Moments, Moments] | None = None

    def __call__(self, model: Classifier, t: float) -> None:
        """Repair ``model`` in place to the anchors' moments at ``t``."""
        sites, start, end = self._targets()
        repair_network(model, sites, start.interpolate(end, t), self.inputs.of(model))

    def collapse(self, model: Classifier, t: float) -> dict[str, float]:
        """Per site, ``model``'s variance collapse at ``t``: its units' spread over the
        anchors' interpolated (:func:`~robust_mc.core.repair.variance_collapse`)."""
        sites, start, end = self._targets()
        return variance_collapse(measure(model, sites, self.inputs.of(model)),
                                 start.interpolate(end, t))

    def _targets(self) -> tuple[list[Site], Moments, Moments]:
        if self._measured is None:
            a, b = self._anchors()
            sites = self._sites
            if sites is None:
                probe = self.inputs.probe()
                sites = repair_sites(a, trace_permutation_spec(a, probe, partial=True), probe)
            self._measured = (sites, measure(a, sites, self.inputs.of(a)),
                              measure(b, sites, self.inputs.of(b)))
        return self._measured
