"""The training loop shared by endpoints and curves: a task computes the loss of a batch, the loop
schedules, steps, guards against non-finite losses, saves resumable states and stops cleanly on
a signal. Everything specific (the attack, the curve) lives in the task."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robust_mc.config import AttackConfig, OptimConfig
from robust_mc.data import DatasetInfo, Split, batches, num_batches
from robust_mc.errors import Interrupted, UserError
from robust_mc.report.progress import Reporter, Step
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.runtime import Runtime
from robust_mc.train.schedule import lr_factor

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


@dataclass
class Position:
    """Where a run stands: epochs done, and how far into the next one (enough to continue it
    exactly, with the random generators saved beside it)."""

    epoch: int = 0
    step: int = 0  # batches done in the current epoch
    order: torch.Tensor | None = None  # the current epoch's shuffle, drawn at its first batch
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    skipped: int = 0  # batches skipped for a non-finite loss, whole run

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> Position:
        return cls(**state)

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step, self.order = 0, None
        self.loss_sum, self.correct, self.seen, self.seconds = 0.0, 0, 0, 0.0


class NonFiniteLoss(UserError):
    """A NaN or inf loss beyond what --skip-nonfinite tolerates."""


def make_sgd(params, optim: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                           weight_decay=optim.weight_decay)


def train_one_epoch(task: Task, optimizer: torch.optim.Optimizer, split: Split, *,
                    optim: OptimConfig, info: DatasetInfo, augment: bool,
                    generator: torch.Generator, runtime: Runtime, step: Step,
                    position: Position | None = None, stop: StopSignals | None = None
                    ) -> EpochResult | None:
    """Continue the epoch at ``position`` over ``split`` (already on the device), learning rate
    set per step. Returns the epoch's result, or None when ``stop`` asked to stop before its end
    (``position`` then says where it stopped)."""
    position = position or Position()
    if len(split) == 0:
        raise UserError("the training split is empty; use more training images")
    epoch = position.epoch
    steps = num_batches(split, optim.batch_size, drop_last=True)
    warmup = optim.warmup_epochs / optim.epochs
    if position.order is None:
        position.order = torch.randperm(len(split), generator=generator)
    start = time.perf_counter() - position.seconds
    for i, (x, y) in enumerate(batches(split, optim.batch_size, generator=generator, info=info,
                                       augment=augment, drop_last=True, order=position.order,
                                       start=position.step), start=position.step):
        lr = optim.lr * lr_factor((epoch + i / steps) / optim.epochs, optim.schedule, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, hits = task(runtime.images(x), y)
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()
        if math.isfinite(value):
            loss.backward()
            optimizer.step()
            position.loss_sum += value * y.shape[0]
            position.correct += int(hits)
            position.seen += y.shape[0]
        else:
            position.skipped += 1
            if position.skipped > optim.skip_nonfinite:
                raise NonFiniteLoss(
                    f"non-finite loss at epoch {epoch + 1}, step {i + 1} (learning rate {lr:g}): "
                    "the learning rate is probably too high; lower --lr, or pass "
                    "--skip-nonfinite N to skip up to N such batches (the last saved state is "
                    "kept)")
        position.step = i + 1
        position.seconds = time.perf_counter() - start
        if i % 10 == 9 or i == steps - 1:
            seen = max(position.seen, 1)
            step.advance(min(10, i % 10 + 1), f"loss {position.loss_sum / seen:.3f}  "
                         f"acc {100 * position.correct / seen:.1f}%  "
                         f"{position.seen / position.seconds:.0f} img/s")
        if stop is not None and stop.requested and position.step < steps:
            return None
    seen = max(position.seen, 1)
    result = EpochResult(position.loss_sum / seen, 100 * position.correct / seen, position.seen,
                         position.seconds)
    position.next_epoch()
    return result


def check_finite_weights(optimizer: torch.optim.Optimizer, position: Position) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not torch.isfinite(p).all():
                raise NonFiniteLoss(f"non-finite weights after epoch {position.epoch}, step "
                                    f"{position.step}: the learning rate is probably too high; "
                                    "lower --lr (the last saved state is kept)")


def fit(task: Task, optimizer: torch.optim.Optimizer, split: Split, *, optim: OptimConfig,
        info: DatasetInfo, augment: bool, generator: torch.Generator, runtime: Runtime,
        reporter: Reporter, label: str, position: Position,
        on_epoch: Callable[[int, EpochResult], None], save: Callable[[], None],
        stop: StopSignals, resume_hint: str) -> None:
    """Train from ``position`` to ``optim.epochs``. ``save`` writes the resumable state every
    ``optim.save_every`` epochs, after the last and when a signal asks the run to stop, which
    then raises :class:`Interrupted` carrying ``resume_hint``."""
    steps = num_batches(split, optim.batch_size, drop_last=True)

    def save_checked() -> None:
        check_finite_weights(optimizer, position)
        save()

    def interrupted() -> Interrupted:
        assert stop.signum is not None
        return Interrupted(stop.signum, f"stopped at epoch {position.epoch + 1}/{optim.epochs}, "
                                        f"step {position.step}/{steps}; {resume_hint}")

    while position.epoch < optim.epochs:
        epoch = position.epoch
        with reporter.task(f"{label} {epoch + 1}/{optim.epochs}", steps) as step:
            if position.step:
                step.advance(position.step)
            result = train_one_epoch(task, optimizer, split, optim=optim, info=info,
                                     augment=augment, generator=generator, runtime=runtime,
                                     step=step, position=position, stop=stop)
        if result is None:
            save_checked()
            raise interrupted()
        on_epoch(epoch, result)
        done = position.epoch
        if done % optim.save_every == 0 or done == optim.epochs or stop.requested:
            save_checked()
        if stop.requested and done < optim.epochs:
            raise interrupted()


class AdversarialTask:
    """Madry-style adversarial training of one network: PGD on the batch, then the CE of the
    adversarial batch. ``attack.steps == 0`` trains on clean inputs through the same path.
    ``generator`` draws the attack's random starts (on the device)."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                 attack: AttackConfig, runtime: Runtime,
                 generator: torch.Generator | None = None) -> None:
        self.model = model  # the module whose mode is switched for the attack
        self.forward = forward  # what computes logits (the model, or its compiled version)
        self.attack = attack.build()
        self.runtime = runtime
        self.generator = generator

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.runtime.autocast():
            x_adv = self.attack(self.model, x, y, self.generator, forward=self.forward)
        self.model.train()
        with self.runtime.autocast():
            logits = self.forward(x_adv)
        loss = F.cross_entropy(logits.float(), y)
        return loss, (logits.argmax(1) == y).sum()
