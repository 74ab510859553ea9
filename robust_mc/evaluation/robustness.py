"""Clean and robust loss and accuracy of a model on a split under an attack: one code path.

A sample counts as robustly correct only if both the clean image and the attack's image are
classified correctly, and its robust loss is the larger of the two losses: the clean image lies in
the eps-ball, so the worst case over the points tried is never better than the clean one. Hence
robust accuracy <= clean accuracy always, with equality at eps = 0 or under the ``none`` attack.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robust_mc.attacks import Attack
from robust_mc.core.fold import fold_batchnorm
from robust_mc.data import Split, batches
from robust_mc.run.runtime import Runtime


class Clock:
    """Adds the seconds spent in ``with clock(key):`` blocks to ``timings[key]``."""

    def __init__(self, device: torch.device, timings: dict[str, float] | None) -> None:
        self.device = device
        self.timings = timings

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        if self.timings is None:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class Metrics:
    clean_loss: float
    clean_acc: float  # percent
    robust_loss: float
    robust_acc: float  # percent
    count: int

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Any) -> Metrics:
        """The figures :meth:`as_dict` wrote; ValueError for anything else (losses are numbers,
        accuracies percentages, the count of images a non-negative integer)."""
        if not isinstance(state, dict) or set(state) != {f.name for f in fields(cls)}:
            raise ValueError("metrics are clean_loss, clean_acc, robust_loss, robust_acc, count")
        numbers = [state[k] for k in ("clean_loss", "clean_acc", "robust_loss", "robust_acc")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise ValueError("losses and accuracies must be numbers")
        count = state["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("count must be a number of images")
        if not all(0 <= state[k] <= 100 for k in ("clean_acc", "robust_acc")):
            raise ValueError("accuracies must be percentages")
        return cls(**state)


def evaluate_seeded(model: nn.Module, split: Split, attack: Attack, runtime: Runtime,
                    batch_size: int, seed: int, timings: dict[str, float] | None = None,
                    fold: bool = True) -> Metrics:
    """``evaluate_model`` with the global generator seeded for its duration: the one way a model,
    an ensemble or a point of a path is measured, so the same model always gets the same attack
    (evaluation attacks from other libraries draw from the global generator). The global
    generators are restored afterwards, so the caller's random streams are left as they were."""
    devices = [runtime.device] if runtime.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return evaluate_model(model, split, attack, runtime, batch_size, timings, fold)


def evaluate_model(model: nn.Module, split: Split, attack: Attack, runtime: Runtime,
                   batch_size: int = 256, timings: dict[str, float] | None = None,
                   fold: bool = True) -> Metrics:
    """Evaluate ``model`` (in eval mode) on ``split`` clean and under ``attack``; seconds spent on
    clean passes and on the attack are added to ``timings["clean"]`` and ``timings["attack"]``.
    With ``fold``, both run on a copy with batch norm folded into the convolutions (the same
    function in eval mode, fewer passes)."""
    sums = torch.zeros(4, dtype=torch.float64, device=runtime.device)
    for clean_logits, adv_logits, y in attacked_batches(model, split, attack, runtime,
                                                        batch_size, timings, fold):
        clean_loss = F.cross_entropy(clean_logits, y, reduction="none")
        adv_loss = F.cross_entropy(adv_logits, y, reduction="none")
        clean_ok = clean_logits.argmax(1) == y
        robust_ok = clean_ok & (adv_logits.argmax(1) == y)
        sums += torch.stack([clean_loss.sum(), clean_ok.sum(),
                             torch.maximum(clean_loss, adv_loss).sum(), robust_ok.sum()
                             ]).double()
    count = len(split)
    s = (sums / max(count, 1)).tolist()
    return Metrics(s[0], 100 * s[1], s[2], 100 * s[3], count)


def attack_outcomes(model: nn.Module, split: Split, attack: Attack, runtime: Runtime,
                    batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of ``split``: whether it is classified correctly clean, and whether it is
    both clean and under ``attack`` (seeded as :func:`evaluate_seeded`), so that attacks can be
    compared image by image."""
    devices = [runtime.device] if runtime.device.type == "cuda" else []
    clean, robust = [], []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for clean_logits, adv_logits, y in attacked_batches(model, split, attack, runtime,
                                                            batch_size):
            clean.append(clean_logits.argmax(1) == y)
            robust.append(clean[-1] & (adv_logits.argmax(1) == y))
    if not clean:
        empty = torch.zeros(0, dtype=torch.bool)
        return empty, empty
    return torch.cat(clean), torch.cat(robust)


def attacked_batches(model: nn.Module, split: Split, attack: Attack, runtime: Runtime,
                     batch_size: int, timings: dict[str, float] | None = None,
                     fold: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                           torch.Tensor]]:
    """(clean logits, adversarial logits, labels) for each batch of ``split``, the model in eval
    mode (restored afterwards). The attack runs in the runtime's precision (bfloat16 where it
    pays); both logits are computed in float32, so a figure does not depend on the precision
    the adversarial images were found in."""
    clock = Clock(runtime.device, timings)
    was_training = model.training
    model.eval()
    net = fold_batchnorm(model) if fold else model
    try:
        for x, y in batches(split.to(runtime.device), batch_size):
            x = runtime.images(x)
            with clock("clean"), torch.no_grad():
                clean_logits = net(x).float()
            with clock("attack"):
                with runtime.autocast():
                    x_adv = attack(net, x, y)
                with torch.no_grad():
                    adv_logits = net(runtime.images(x_adv)).float() if x_adv is not x \
                        else clean_logits
            yield clean_logits, adv_logits, y
    finally:
        model.train(was_training)
