"""What a resumable run saves besides its weights, and the checks before it continues.

A run's state holds the random number generators (torch, CUDA, numpy, Python and the run's own
data generator) next to the weights, optimizer and position, so that a run resumed on the CPU
ends bit for bit where an uninterrupted one would. A state continues only the configuration that
made it: any difference that changes results is named, with the way out.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robust_mc.config import (
    ConnectRunConfig,
    TrainRunConfig,
    flatten,
    settings_that_may_change,
)
from robust_mc.errors import UserError
from robust_mc.run import distributed
from robust_mc.run.files import read_json

# settings that may change between a run and its continuation (marked ``may_change`` where they
# are defined): where it runs, how its work is batched and laid out in memory, and how often it
# saves change results at most by float rounding; a larger --skip-nonfinite is how a run stopped
# by a bad batch goes on
CAN_CHANGE_ON_RESUME = frozenset(settings_that_may_change(TrainRunConfig)
                                 | settings_that_may_change(ConnectRunConfig))


class ResumePolicy(enum.Enum):
    """What to do with a run saved where a new one would write."""

    AUTO = "auto"  # continue one of these settings; refuse one of others
    RESUME = "resume"  # as AUTO, and one must exist (--resume)
    FRESH = "fresh"  # ignore it and start over (--fresh)
    REPLACE = "replace"  # continue one of these settings; start over otherwise (bench cells)

    @classmethod
    def from_flags(cls, resume: bool, fresh: bool) -> ResumePolicy:
        if resume and fresh:
            raise UserError("--resume and --fresh contradict each other; pass one of them")
        return cls.RESUME if resume else cls.FRESH if fresh else cls.AUTO


class Resume(enum.Enum):
    """What becomes of a saved run."""

    CONTINUE = "continue"  # the new run takes up where it stopped
    RESTART = "restart"  # the new run starts over (and replaces it)


def require_saved(policy: ResumePolicy, where: Path, what: str = "run") -> None:
    """``--resume`` with nothing saved at ``where`` is refused in one line, before any work."""
    if policy is ResumePolicy.RESUME:
        raise UserError(f"--resume: {where} holds no saved {what} to continue; drop --resume "
                        "to start one")


def decide_resume(policy: ResumePolicy, where: Path, saved: dict, current: dict, *,
                  other: str | None = None, what: str = "run") -> Resume:
    """The one decision on a saved run: continue it, start over, or refuse in one line (a
    ``UserError`` naming what differs and the way out). ``saved`` is the saved run's
    configuration as written, ``current`` the new one's; ``other`` names what else differs
    (other endpoints, a file that cannot be resumed)."""
    if policy is ResumePolicy.FRESH:
        return Resume.RESTART
    differences = ([other] if other else []) + config_differences(saved, current)
    if not differences:
        return Resume.CONTINUE
    if policy is ResumePolicy.REPLACE:
        return Resume.RESTART
    shown = "; ".join(differences[:3]) + (" ..." if len(differences) > 3 else "")
    raise UserError(f"{where} holds a {what} with other settings ({shown}); rerun with the same "
                    "settings to resume it, or pass --fresh (or another --out) to start over")


def saved_progress(path: Path, current: dict) -> dict | None:
    """A JSON progress file (``{"config": ..., ...}``) that an interrupted run with the
    ``current`` settings wrote, or None (no file, another run's, or not robust-mc's): the one
    way a path's points, a plane's grid and spawn's layer figures are taken up again."""
    saved = read_json(path) if path.is_file() else None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        return None
    decision = decide_resume(ResumePolicy.REPLACE, path, saved["config"], current)
    return saved if decision is Resume.CONTINUE else None


def derived_seed(seed: int, stream: str) -> int:
    """A seed for the named ``stream`` of a run seeded with ``seed``, independent of the others."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def attack_generator(seed: int, device: torch.device) -> torch.Generator:
    """The stream of a run's PGD random starts, on the device the attack runs on."""
    return torch.Generator(device).manual_seed(derived_seed(seed, "attack"))


def rng_state(generator: torch.Generator, attack: torch.Generator | None = None
              ) -> dict[str, Any]:
    """Every random stream a run draws from, as tensors and plain values (weights-only safe):
    the global ones, the run's data ``generator`` and its ``attack`` generator."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if attack is not None:
        state["attack"] = attack.get_state()
    return state


RESTORE_FIX = "delete it or pass --fresh"  # what to do with a saved state that cannot be restored


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, and every per-parameter buffer it brings (momentum)
    shaped as its parameter: torch checks only the counts, and a wrong shape would fail at the
    first step, deep in the run. Raises ValueError (see ``files.as_written``)."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for key, default in optimizer.defaults.items():  # lr, momentum, nesterov, ...
            value = group.get(key)
            if isinstance(default, bool) or default is None:
                fits = value is None or isinstance(value, bool)
            elif isinstance(default, (int, float)):
                fits = (isinstance(value, (int, float)) and not isinstance(value, bool)
                        and math.isfinite(value))
            else:
                fits = True
            if not fits:
                raise ValueError(f"optimizer {key} {value!r}")
        for param in group["params"]:
            for name, buffer in optimizer.state.get(param, {}).items():
                if buffer is None or (isinstance(buffer, torch.Tensor) and (
                        buffer.dim() == 0 or buffer.shape == param.shape)
                        and bool(torch.isfinite(buffer).all())):
                    continue
                raise ValueError(f"optimizer {name} is not a finite tensor shaped as its "
                                 f"parameter {tuple(param.shape)}")


def restore_rng(state: dict[str, Any], generator: torch.Generator,
                attack: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if attack is not None and "attack" in state:
        attack.set_state(state["attack"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every setting that differs and would change results. A
    setting the saved run does not record did not exist when it was written: it cannot differ."""
    old, new = flatten(saved), flatten(current)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
            for key in sorted(old)
            if key not in CAN_CHANGE_ON_RESUME and old.get(key) != new.get(key)]


def remove_stale_temps(folder: Path) -> None:
    """Temp files left by a process killed mid-write (the targets themselves are never torn);
    only by the process that writes (rank 0 of several)."""
    if not distributed.writes_files():
        return
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
