"""Projected gradient descent (Madry et al. 2018), L-inf and L2, built for use in training loops.

The attack only asks for the gradient with respect to the perturbation (``torch.autograd.grad``), so
no parameter gradient is computed or accumulated, and it allocates nothing per call beyond the
forward and backward passes. Whether the network runs in train or eval mode while attacking is an
explicit argument (see :func:`attack_mode`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Mode = Literal["train", "eval", "keep"]


@contextmanager
def parameters_frozen(model: nn.Module) -> Iterator[None]:
    """No parameter gradient is computed or left behind while the block runs (a library attack
    that calls ``backward`` would otherwise accumulate them into ``.grad``, where a training
    step could pick them up); each parameter's ``requires_grad`` is restored after."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in parameters:
            p.requires_grad_(True)


@contextmanager
def attack_mode(model: nn.Module | None, mode: Mode) -> Iterator[None]:
    """Run the attack with the network in ``mode``, then restore its state.

    ``eval``: running BN statistics, dropout off. ``train``: batch statistics, and the running
    statistics left exactly as they were (BN momentum 0 for the attack's passes). ``keep``: as is.
    """
    if model is None or mode == "keep":
        yield
        return
    was_training = model.training
    if mode == "eval":
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)
        return
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None
              else None) for m in norms]
    model.train()
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: untouched
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if count is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(count)
        model.train(was_training)


@dataclass(frozen=True)
class ShardDraws:
    """Random starts for this process's rows of a global batch split over ``count`` processes:
    drawn for the whole batch from ``generator`` (which every process holds in the same state),
    of which rows ``index``/``count`` are kept. The draws, and so the run, are then those of
    one process attacking the whole batch."""

    generator: torch.Generator
    index: int
    count: int


Draws = torch.Generator | ShardDraws | None


def _draw(sample: Callable[..., torch.Tensor], shape: torch.Size | tuple[int, ...],
          draws: Draws, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(draws, ShardDraws):
        return sample(shape, generator=draws, device=x.device, dtype=x.dtype)
    rows = shape[0]
    whole = sample((rows * draws.count, *shape[1:]), generator=draws.generator,
                   device=x.device, dtype=x.dtype)
    return whole[draws.index * rows:(draws.index + 1) * rows]


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: Draws) -> torch.Tensor:
    if norm == "linf":
        noise = _draw(torch.rand, x.shape, generator, x)
        delta = noise.mul_(2 * eps).sub_(eps)
    else:
        direction = _draw(torch.randn, x.shape, generator, x)
        direction /= direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        radius = _draw(torch.rand, (x.shape[0],), generator, x)
        delta = direction * (radius * eps).view(-1, 1, 1, 1)
    return (x + _layout_of(delta, x)).clamp_(0, 1).sub_(x)


def _layout_of(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` in ``x``'s memory layout (same values): a channels-last batch keeps every step of the
    attack channels-last instead of converting at each pass (about 7% of a CPU attack)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        delta = delta.clamp_(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = delta * (eps / norms.clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp_(0, 1).sub_(x)  # keep x + delta in [0, 1]


def cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # summed, not averaged, so the step does not shrink with the batch size
    return F.cross_entropy(logits.float(), target, reduction="sum")


def pgd(forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float, step_size: float,
        steps: int, norm: str = "linf", random_start: bool = True,
        generator: Draws = None,
        loss_fn: LossFn = cross_entropy_sum) -> torch.Tensor:
    """Maximise ``loss_fn(forward(x + delta), y)`` (default: cross-entropy) over
    ``||delta|| <= eps``.

    ``x`` (B, C, H, W) in [0, 1]; returns detached adversarial images in [0, 1] within the ball.
    ``forward`` is any callable from images to logits: a module, or weights at a point of a curve.
    """
    if eps == 0 or steps == 0:
        return x.detach()
    x = x.detach()
    delta = _random_start(x, eps, norm, generator) if random_start else torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_fn(forward(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if norm == "linf":
                delta = delta.detach() + step_size * grad.sign()
            else:
                grad_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                delta = delta.detach() + step_size * grad / grad_norm
            delta = _project(delta, x, eps, norm)
    return (x + delta).detach()


@dataclass(frozen=True)
class PGD:
    """PGD with restarts: the one attack that training loops, batch-norm recomputation on
    adversarial data, alignment on adversarial inputs, layers and PAM use, built from the
    configuration by ``build_attack(AttackConfig(...))`` and called the same way everywhere.

    Paper: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (2018).
    Norm: L-inf (``linf``) or L2 (``l2``); ``eps`` and ``step_size`` in [0, 1] pixel units.
    ``mode``: the network's mode while attacking (see :func:`attack_mode`).
    Restarts keep, per example, the perturbation with the highest loss.
    Shapes: x (B, C, H, W) in [0, 1], y (B,) -> x_adv like x.
    Example: ``PGD(eps=8/255, step_size=2/255, steps=10)(model, x, y, generator)``.
    """

    eps: float
    step_size: float
    steps: int = 10
    norm: str = "linf"
    restarts: int = 1
    random_start: bool = True
    mode: Mode = "eval"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: Draws = None, *, forward: Forward | None = None,
                 loss_fn: LossFn = cross_entropy_sum) -> torch.Tensor:
        """Attack ``model`` with its mode set to ``self.mode`` and restored afterwards.

        ``generator`` draws the random starts (on ``x``'s device); ``forward`` computes the
        logits when that is not ``model`` itself (a compiled version of it); ``loss_fn`` is the
        loss maximised (cross-entropy summed over the batch by default; TRADES uses a KL term).
        """
        with attack_mode(model, self.mode):
            return self.run(forward or model, x, y, generator, loss_fn=loss_fn)

    def run(self, forward: Forward, x: torch.Tensor, y: torch.Tensor,
            generator: Draws = None, *,
            loss_fn: LossFn = cross_entropy_sum) -> torch.Tensor:
        """Attack ``forward`` as it is (the caller has set the network's mode)."""
        def attempt() -> torch.Tensor:
            return pgd(forward, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                       norm=self.norm, random_start=self.random_start, generator=generator,
                       loss_fn=loss_fn)

        def loss_of(adv: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return F.cross_entropy(forward(adv).float(), y, reduction="none")

        best = attempt()
        if self.restarts <= 1:
            return best
        best_loss = loss_of(best)
        for _ in range(self.restarts - 1):
            adv = attempt()
            loss = loss_of(adv)
            best = torch.where((loss > best_loss).view(-1, 1, 1, 1), adv, best)
            best_loss = torch.maximum(loss, best_loss)
        return best

