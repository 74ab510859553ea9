"""What `robust-mc spawn` yields per spawn epoch: the straight line between the two children,
unaligned and aligned, and the whole network's layer-wise figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from robust_mc.evaluation.barriers import PathStats


@dataclass(frozen=True)
class LayerFigures:
    """The whole network's midpoint barriers between two children (aligned), measured and
    predicted to second order, and the layer group with the largest measured robust barrier."""

    measured_clean: float
    predicted_clean: float
    measured_robust: float
    predicted_robust: float
    worst_group: str
    worst_group_robust_barrier: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SpawnPoint:
    """The two children of spawn epoch k: the test-split statistics of the straight line
    between them, unaligned and aligned, and the whole network's layer-wise figures
    (aligned)."""

    epoch: int
    unaligned: PathStats
    aligned: PathStats
    layers: LayerFigures

    def as_dict(self) -> dict:
        return {"epoch": self.epoch, "unaligned": self.unaligned.to_state(),
                "aligned": self.aligned.to_state(), "layers": self.layers.as_dict()}
