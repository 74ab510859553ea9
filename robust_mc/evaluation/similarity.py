"""Activations along a path (Tatro et al. 2020, Sec. 5): how similar the network at t is to each
end of the path, layer by layer. Each hidden space of the network at t is matched to the same
space of the reference network by the correlation alignment itself (the assignment maximising
the summed correlation of matched units), and the similarity is the mean correlation of the
matched units. The same network gives 1 in every layer; clean inputs, or each network's own
PGD examples from the same random start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from robust_mc.attacks.training import TrainingAttack
from robust_mc.core.assignment import solve_assignment
from robust_mc.core.permutation import PermutationSpec
from robust_mc.core.unit_statistics import unit_statistics
from robust_mc.data import Split, batches
from robust_mc.run.runtime import Runtime

BATCH = 250


@dataclass(frozen=True)
class LayerSimilarity:
    """Per hidden space: mean correlation of matched units with each reference."""

    t: float
    inputs: str  # clean or adversarial
    reference: str  # a or b
    layers: dict[str, float]

    def as_dict(self) -> dict:
        """JSON-ready: a layer without a varying unit pair is ``None``."""
        return {"t": self.t, "inputs": self.inputs, "reference": self.reference,
                "layers": {k: None if math.isnan(v) else v for k, v in self.layers.items()}}


def matched_correlation(model: nn.Module, reference: nn.Module, spec: PermutationSpec,
                        images: Split, runtime: Runtime, attack: TrainingAttack | None = None,
                        seed: int = 0) -> dict[str, float]:
    """Space name -> mean correlation of ``reference``'s units with their matches in
    ``model``, over the pairs in which both units vary on ``images`` (NaN if none does)."""
    generator = torch.Generator().manual_seed(seed)
    stats = unit_statistics(reference, model, spec, batches(images, BATCH), runtime, attack,
                            generator)
    out = {}
    for name, corr in stats.corr.items():
        perm = solve_assignment(corr)
        silent = stats.silent[name]
        active = ~silent[0] & ~silent[1][perm]
        matched = corr[torch.arange(corr.shape[0]), perm][active]
        # Pearson correlations lie in [-1, 1]; float64 sums of float32 products may round past
        out[name] = float(matched.mean().clamp(-1, 1)) if matched.numel() else float("nan")
    return out


@dataclass(frozen=True)
class LayerVariance:
    """Variance collapse (Jordan et al. 2023) at t: per repair site, the mean over its units of
    std_t / ((1 - t) std_a + t std_b); 1 where the network at t spreads its units as the
    endpoints do, below 1 where interpolation collapsed them."""

    t: float
    inputs: str  # clean or adversarial
    layers: dict[str, float]

    def as_dict(self) -> dict:
        return {"t": self.t, "inputs": self.inputs, "layers": self.layers}


@dataclass
class Activations:
    """Per path label: the matched-unit correlation of every layer with each end, and the
    variance collapse of every repair site, per t and inputs (``eval --similarity``)."""

    similarity: dict[str, list[LayerSimilarity]] = field(default_factory=dict)
    variance: dict[str, list[LayerVariance]] = field(default_factory=dict)
