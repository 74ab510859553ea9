"""The training loop shared by endpoints and curves: a task computes the loss of a batch, the loop
schedules, steps and reports. Everything specific (the attack, the curve) lives in the task."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks import attack_mode, pgd
from robust_mc.config import AttackConfig, OptimConfig
from robust_mc.data import DatasetInfo, Split, batches, num_batches
from robust_mc.errors import UserError
from robust_mc.progress import Step
from robust_mc.runtime import Runtime
from robust_mc.schedule import lr_factor

# a task maps a batch to (mean loss to minimise, correct predictions on the inputs it trained on)
Task = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class EpochResult:
    loss: float
    train_acc: float  # percent, on the inputs trained on (adversarial ones for a robust task)
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def make_sgd(params, optim: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                           weight_decay=optim.weight_decay)


def train_one_epoch(task: Task, optimizer: torch.optim.Optimizer, split: Split, *,
                    optim: OptimConfig, epoch: int, info: DatasetInfo, augment: bool,
                    generator: torch.Generator, runtime: Runtime, step: Step) -> EpochResult:
    """One pass over ``split`` (already on the device), learning rate set per step."""
    steps = num_batches(split, optim.batch_size, drop_last=True)
    warmup = optim.warmup_epochs / optim.epochs
    loss_sum = torch.zeros((), device=runtime.device, dtype=torch.float64)
    correct = torch.zeros((), device=runtime.device, dtype=torch.float64)
    seen = 0
    start = time.perf_counter()
    for i, (x, y) in enumerate(batches(split, optim.batch_size, shuffle=True, generator=generator,
                                       info=info, augment=augment, drop_last=True)):
        lr = optim.lr * lr_factor((epoch + i / steps) / optim.epochs, optim.schedule, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, hits = task(runtime.images(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * y.shape[0]
        correct += hits
        seen += y.shape[0]
        if i % 10 == 9 or i == steps - 1:
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                raise UserError(f"non-finite loss at epoch {epoch + 1}, step {i + 1}; the learning "
                                f"rate ({lr:g}) is probably too high")
            rate = seen / (time.perf_counter() - start)
            step.advance(min(10, i % 10 + 1), f"loss {mean_loss:.3f}  "
                         f"acc {100 * correct.item() / seen:.1f}%  {rate:.0f} img/s")
    seconds = time.perf_counter() - start
    if seen == 0:
        raise UserError(f"the training split has {len(split)} images, fewer than one batch of "
                        f"{optim.batch_size}; lower --batch-size")
    return EpochResult(loss_sum.item() / seen, 100 * correct.item() / seen, seen, seconds)


class AdversarialTask:
    """Madry-style adversarial training of one network: PGD on the batch, then the CE of the
    adversarial batch. ``attack.steps == 0`` trains on clean inputs through the same path."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                 attack: AttackConfig,
                 runtime: Runtime) -> None:
        self.model = model  # the module whose mode is switched for the attack
        self.forward = forward  # what computes logits (the model, or its compiled version)
        self.attack = attack
        self.runtime = runtime

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.attack
        with self.runtime.autocast(), attack_mode(self.model, a.mode):
            x_adv = pgd(self.forward, x, y, eps=a.eps, step_size=a.resolved_step_size,
                        steps=a.steps, norm=a.norm, random_start=a.random_start)
        self.model.train()
        with self.runtime.autocast():
            logits = self.forward(x_adv)
        loss = F.cross_entropy(logits.float(), y)
        return loss, (logits.argmax(1) == y).sum()
