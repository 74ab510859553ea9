"""The training loop shared by endpoints, curves and PAM: a task computes the loss of a batch (see
``tasks.py``), the :class:`Trainer` schedules, steps, guards against non-finite losses, saves
resumable states and stops cleanly on a signal. Everything specific (the attack, the curve, the
objective) lives in the task."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch

from robust_mc.attacks.pgd import Draws
from robust_mc.data import DatasetInfo, Split, batches, num_batches
from robust_mc.errors import Interrupted, UserError
from robust_mc.run import distributed
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter, Step
from robust_mc.run.runtime import Runtime
from robust_mc.train.schedule import lr_factor
from robust_mc.train.settings import OptimConfig

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
        """The position a saved state records; ValueError when a field is not what
        :meth:`state` writes (counts are non-negative integers, an order is a 1-D tensor of
        indices)."""
        if not isinstance(state, dict) or not set(state) <= {f.name for f in fields(cls)}:
            raise ValueError("a position is a mapping of Position's fields")
        position = cls(**state)
        counts = (position.epoch, position.step, position.correct, position.seen,
                  position.skipped)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            raise ValueError("epoch, step, correct, seen and skipped must be counts")
        if not all(isinstance(x, (int, float)) and math.isfinite(x)
                   for x in (position.loss_sum, position.seconds)):
            raise ValueError("loss_sum and seconds must be finite numbers")
        order = position.order
        if order is not None and not (isinstance(order, torch.Tensor) and order.dim() == 1
                                      and not order.is_floating_point()):
            raise ValueError("order must be a 1-D tensor of indices")
        return position

    def check_within(self, epochs: int, source: object) -> None:
        """Refuse a saved position past a run of ``epochs`` epochs (the end of the last epoch
        is within it): ``source`` stopped later than this run goes."""
        if self.epoch > epochs or (self.epoch == epochs and self.step > 0):
            shown = "beyond 10^9" if self.epoch > 10**9 else str(self.epoch + 1)
            raise UserError(f"{source} is at epoch {shown}, past the {epochs} epochs asked; "
                            "raise --epochs, or pass --fresh to start again")

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step, self.order = 0, None
        self.loss_sum, self.correct, self.seen, self.seconds = 0.0, 0, 0, 0.0


class NonFiniteLoss(UserError):
    """A NaN or inf loss beyond what --skip-nonfinite tolerates."""


def make_optimizer(params, settings: OptimConfig) -> torch.optim.Optimizer:
    """``settings.optimizer`` over ``params``: SGD with momentum and L2 weight decay, or AdamW."""
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, betas=(settings.momentum, 0.999),
                                 weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)


@dataclass
class TrainingContext:
    """What every training phase of a run shares, held once: where it runs, where it reports,
    what stops it, its random streams and its training data (already on the device)."""

    runtime: Runtime
    reporter: Reporter = field(default_factory=lambda: Reporter(quiet=True))
    stop: StopSignals = field(default_factory=StopSignals)
    generator: torch.Generator = field(default_factory=torch.Generator)  # shuffles, crops (CPU)
    attack_generator: Draws = None  # the attack's random starts (device)
    train: Split | None = None
    info: DatasetInfo | None = None
    augment: bool = False


class Trainer:
    """Trains what ``task``'s loss depends on with ``optimizer``, on ``context``'s data, as
    ``settings`` schedules it, from ``position`` (a resumed run's, or the start).

    ``fit`` runs the epochs, ``train_one_epoch`` one of them, ``train_step`` one batch; a
    non-finite loss is skipped (up to ``settings.skip_nonfinite``) or stops the run.

    Example::

        trainer = Trainer(EndpointTask(model, model, AttackConfig(), runtime),
                          make_optimizer(model.parameters(), settings), settings,
                          TrainingContext(runtime, train=data.train, info=data.info))
        trainer.fit("epoch", on_epoch=lambda epoch, result: None, save=lambda: None)
    """

    def __init__(self, task: Task, optimizer: torch.optim.Optimizer, settings: OptimConfig,
                 context: TrainingContext, position: Position | None = None,
                 after_step: Callable[[], None] | None = None,
                 reduced_by_wrapper: bool = False) -> None:
        self.task = task
        self.optimizer = optimizer
        self.optim = settings
        self.context = context
        self.position = position or Position()
        self.after_step = after_step  # after every batch, stepped or skipped: AWP, EMA
        # on several processes: a DistributedDataParallel wrapper already averages the
        # gradients; otherwise the trainer averages those of what it trains
        self.reduced_by_wrapper = reduced_by_wrapper
        self.group = distributed.group()
        if self.group.active and settings.batch_size % self.group.world:
            raise UserError(f"--batch-size {settings.batch_size} is the global batch and must "
                            f"split evenly over the {self.group.world} processes; give a "
                            "multiple of "
                            f"{self.group.world}")

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One optimizer step on the batch x (B, C, H, W) in [0, 1], y (B,): the loss value and
        the correct predictions. A non-finite loss takes no step (the value says so).

        On several processes the batch is the global one: each process trains on its rows and
        the gradients are averaged, so the step is the one process's step on the whole batch
        (for networks without batch norm, whose statistics are per process)."""
        g = self.group
        loss, hits = self.task(self.context.runtime.images(g.rows(x)), g.rows(y))
        self.optimizer.zero_grad(set_to_none=True)
        value, count = loss.item(), int(hits)
        if g.active:  # every process agrees on the value, so all step or none does
            total, count_sum = g.sum([value, count], loss.device)
            value, count = total / g.world, int(count_sum)
        if math.isfinite(value):
            loss.backward()
            if g.active and not self.reduced_by_wrapper:
                g.average_gradients([p for group in self.optimizer.param_groups
                                     for p in group["params"]])
            self.optimizer.step()
        if self.after_step is not None:
            self.after_step()
        return value, count

    def steps_per_epoch(self) -> int:
        assert self.context.train is not None, "the context holds no training data"
        return num_batches(self.context.train, self.optim.batch_size, drop_last=True)

    def train_one_epoch(self, step: Step) -> EpochResult | None:
        """Continue the epoch at ``position``, learning rate set per step. Returns the epoch's
        result, or None when the stop signal asked to stop before its end (``position`` then
        says where it stopped)."""
        ctx, settings, position = self.context, self.optim, self.position
        split = ctx.train
        if split is None or len(split) == 0:
            raise UserError("the training split is empty; use more training images")
        epoch = position.epoch
        steps = self.steps_per_epoch()
        warmup = settings.warmup_epochs / settings.epochs
        if position.order is None:
            position.order = torch.randperm(len(split), generator=ctx.generator)
        elif not torch.equal(position.order.sort().values, torch.arange(len(split))):
            raise UserError(f"the saved state's shuffle is not one of the {len(split)} training "
                            "images: it was saved for other data; pass --fresh")
        start = time.perf_counter() - position.seconds
        shown = position.step  # steps the progress bar already counts
        for i, (x, y) in enumerate(batches(split, settings.batch_size, generator=ctx.generator,
                                           info=ctx.info, augment=ctx.augment, drop_last=True,
                                           order=position.order, start=position.step),
                                   start=position.step):
            lr = settings.lr * lr_factor((epoch + i / steps) / settings.epochs,
                                         settings.schedule, warmup)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            value, hits = self.train_step(x, y)
            if math.isfinite(value):
                position.loss_sum += value * y.shape[0]
                position.correct += hits
                position.seen += y.shape[0]
            else:
                position.skipped += 1
                if position.skipped > settings.skip_nonfinite:
                    raise NonFiniteLoss(
                        f"non-finite loss at epoch {epoch + 1}, step {i + 1} (learning rate "
                        f"{lr:g}): the learning rate is probably too high; lower --lr, or pass "
                        "--skip-nonfinite N to skip up to N such batches (the last saved state "
                        "is kept)")
            position.step = i + 1
            position.seconds = time.perf_counter() - start
            if i % 10 == 9 or i == steps - 1:
                seen = max(position.seen, 1)
                step.advance(i + 1 - shown, f"loss {position.loss_sum / seen:.3f}  "
                             f"acc {100 * position.correct / seen:.1f}%  "
                             f"{position.seen / position.seconds:.0f} img/s")
                shown = i + 1
            if ctx.stop.requested and position.step < steps:
                return None
        seen = max(position.seen, 1)
        result = EpochResult(position.loss_sum / seen, 100 * position.correct / seen,
                             position.seen, position.seconds)
        position.next_epoch()
        return result

    def fit(self, label: str, on_epoch: Callable[[int, EpochResult], None],
            save: Callable[[], None], resume_hint: str = "") -> None:
        """Train from ``position`` to ``settings.epochs``. ``save`` writes the resumable state
        every ``settings.save_every`` epochs, after the last and when a signal asks the run to
        stop, which then raises :class:`Interrupted` carrying ``resume_hint``."""
        settings, position, stop = self.optim, self.position, self.context.stop
        steps = self.steps_per_epoch()

        def save_checked() -> None:
            check_finite_weights(self.optimizer, position)
            save()

        def interrupted() -> Interrupted:
            assert stop.signum is not None
            return Interrupted(stop.signum, f"stopped at epoch {position.epoch + 1}/"
                                            f"{settings.epochs}, step {position.step}/{steps}; "
                                            f"{resume_hint}")

        while position.epoch < settings.epochs:
            epoch = position.epoch
            title = f"{label} {epoch + 1}/{settings.epochs}"
            with self.context.reporter.task(title, steps) as step:
                if position.step:
                    step.advance(position.step)
                result = self.train_one_epoch(step)
            if result is None:
                save_checked()
                raise interrupted()
            on_epoch(epoch, result)
            done = position.epoch
            if done % settings.save_every == 0 or done == settings.epochs or stop.requested:
                save_checked()
            if stop.requested and done < settings.epochs:
                raise interrupted()


def check_finite_weights(optimizer: torch.optim.Optimizer, position: Position) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not torch.isfinite(p).all():
                raise NonFiniteLoss(f"non-finite weights after epoch {position.epoch}, step "
                                    f"{position.step}: the learning rate is probably too high; "
                                    "lower --lr (the last saved state is kept)")
