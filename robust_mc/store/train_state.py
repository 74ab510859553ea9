"""An endpoint's resumable training state (``robust-mc-train-state/1``), as a typed record: the
one way `train` saves it and continues from it, and `spawn` forks its children from it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from robust_mc.errors import UserError
from robust_mc.run.files import atomic_torch_save
from robust_mc.store.checkpoint_files import read_torch_file
from robust_mc.store.meta import EpochRecord
from robust_mc.store.typed import read_record, write_record

TRAIN_STATE_FORMAT = "robust-mc-train-state/1"


@dataclass(frozen=True)
class TrainState:
    """Where training stands: its settings (as written), the network and optimizer, the
    position in the epoch, the epochs so far, the random streams, the provenance of the run
    and the weight average."""

    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    position: dict[str, Any]
    rng: dict[str, Any]
    history: list[EpochRecord] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    ema: dict[str, Any] | None = None
    format: str = TRAIN_STATE_FORMAT

    def write(self, path: Path) -> Path:
        atomic_torch_save(write_record(self), path)
        return path

    def with_run(self, config: dict[str, Any], rng: dict[str, Any]) -> TrainState:
        """The same weights, optimizer and position under another run's settings and random
        streams (a spawned child)."""
        return replace(self, config=config, rng=rng)


def read_train_state(path: Path, fix: str) -> TrainState:
    """The state saved at ``path``, checked; ``fix`` says what to do with a file that is not
    one (delete it, or pass --fresh)."""
    obj = read_torch_file(path)
    if not isinstance(obj, dict) or obj.get("format") != TRAIN_STATE_FORMAT:
        raise UserError(f"{path} is not a robust-mc training state; {fix}")
    try:
        return read_record(TrainState, obj, "training state")
    except ValueError as exc:
        raise UserError(f"{path}: {exc}; {fix}") from None
