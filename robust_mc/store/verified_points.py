"""Verified points kept between runs: a bench verifies each cell's endpoints, and an endpoint is
shared by every cell of its pair, so the same network would be attacked by AutoAttack and the
masking checks once per cell. A point is read back when the network (weights and recomputed
batch-norm statistics, bit for bit), the images and every setting of its verification are the
same; anything else is a new key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from torch import nn

from robust_mc.data import Split
from robust_mc.evaluation.verification import PointVerification
from robust_mc.run.files import atomic_write_json, read_json
from robust_mc.store.checkpoint import state_digest


class VerifiedPoints:
    """A directory of verified points, one JSON file per key."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @staticmethod
    def context(images: Split, settings: dict) -> str:
        """What every point of one verification shares: the images and the settings (attacks,
        eps, reference version; JSON-serializable). Computed once per path."""
        digest = hashlib.sha256()
        digest.update(state_digest({"images": images.images, "labels": images.labels}).encode())
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        return digest.hexdigest()

    @staticmethod
    def key(model: nn.Module, context: str) -> str:
        """The key of ``model`` (as evaluated) verified in ``context``."""
        digest = hashlib.sha256(context.encode())
        digest.update(state_digest(model.state_dict()).encode())
        return digest.hexdigest()[:24]

    def get(self, key: str, t: float, roles: list[str]) -> PointVerification | None:
        """The point verified under ``key``, relabelled as ``t`` and ``roles``; None if absent
        or unreadable."""
        state = read_json(self.directory / f"{key}.json")
        if not isinstance(state, dict):
            return None
        try:
            point = PointVerification.from_state(state)
        except (KeyError, TypeError, ValueError):
            return None  # a damaged or older file: verify again
        return replace(point, t=t, roles=list(roles))

    def put(self, key: str, point: PointVerification) -> None:
        atomic_write_json(self.directory / f"{key}.json", point.to_state())
