"""Statistics repair between two anchor networks: the repair images (clean, or each network's own
PGD examples) and the anchors' unit moments, measured once, then every network between them
repaired to the anchors' moments interpolated at its t (:mod:`robust_mc.core.repair`).

The anchors are a path's endpoints (``connect``, ``eval``, ``ensemble``, ``plane``), or endpoint
a and a with one layer group taken from b (``layers``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from robust_mc.attacks import build_attack
from robust_mc.attacks.training import AttackConfig
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.repair import Moments, Site, measure, repair_network, repair_sites
from robust_mc.data import Split, as_float, batches
from robust_mc.evaluation.settings import PathConfig
from robust_mc.models import Classifier
from robust_mc.run.runtime import Runtime

REPAIR_BATCH_SIZE = 250  # fixed, so that the same weights always get the same statistics


class RepairInputs:
    """The repair images for any network: the first ``path.repair_images`` training images
    (loaded once), or the network's own PGD examples of them (the training attack, in its mode,
    random starts from ``path.seed``): fixed inputs, so a repaired network is a deterministic
    function of its weights."""

    def __init__(self, train: Split, path: PathConfig, attack: AttackConfig,
                 runtime: Runtime) -> None:
        self.train, self.path, self.attack, self.runtime = train, path, attack, runtime
        self._clean: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def probe(self) -> torch.Tensor:
        """Two training images, to trace a network with."""
        return self.runtime.images(as_float(self.train.images[:2])).to(self.runtime.device)

    def of(self, model: Classifier) -> list[torch.Tensor]:
        if self._clean is None:
            split = self.train.take(self.path.repair_images).to(self.runtime.device)
            self._clean = [(self.runtime.images(x), y)
                           for x, y in batches(split, REPAIR_BATCH_SIZE)]
        if self.path.repair_inputs == "clean":
            return [x for x, _ in self._clean]
        pgd = build_attack(self.attack)
        generator = torch.Generator(self.runtime.device).manual_seed(self.path.seed)
        with self.runtime.autocast():
            return [pgd(model, x, y, generator).float() for x, y in self._clean]


class SegmentRepair:
    """Repairs networks between two anchors. ``anchors`` builds them, called once, on the first
    repair (their batch norm, if any, already as the networks between them get it)."""

    def __init__(self, anchors: Callable[[], tuple[Classifier, Classifier]],
                 inputs: RepairInputs) -> None:
        self._anchors, self.inputs = anchors, inputs
        self._measured: tuple[list[Site], Moments, Moments] | None = None

    def __call__(self, model: Classifier, t: float) -> dict[str, float]:
        """Repair ``model`` in place to the anchors' moments at ``t``; per site, its variance
        collapse before repair."""
        sites, start, end = self._targets()
        return repair_network(model, sites, start.interpolate(end, t),
                              self.inputs.of(model)).collapse

    def _targets(self) -> tuple[list[Site], Moments, Moments]:
        if self._measured is None:
            a, b = self._anchors()
            probe = self.inputs.probe()
            sites = repair_sites(a, trace_permutation_spec(a, probe, partial=True), probe)
            self._measured = (sites, measure(a, sites, self.inputs.of(a)),
                              measure(b, sites, self.inputs.of(b)))
        return self._measured
