"""Robust curve training: each step samples t, builds the weights at t once, attacks the network
at t with PGD through a copy of the module holding those weights, detached (the attack never
rebuilds or differentiates through the weight combination, and runs the module as plainly as an
endpoint's attack does), then takes an SGD step on the bends through the loss of the adversarial
batch.

Batch norm uses batch statistics while training; the attack runs the network in the mode set by
``attack.mode`` (``train``: batch statistics with running statistics untouched, the default).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from attacks.pgd import LossFn, cross_entropy_sum
from robust_mc.config import AttackConfig, CurveConfig, OptimConfig
from robust_mc.core.curves import Curve
from robust_mc.data import Data
from robust_mc.report.progress import Reporter
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.runtime import Runtime
from robust_mc.train.loop import EpochResult, Position, fit, make_sgd


def kl_sum(logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """KL(clean || adversarial), summed over the batch: the TRADES inner objective."""
    return F.kl_div(F.log_softmax(logits.float(), 1), clean_probs, reduction="sum")


class WeightsAlongT(Protocol):
    """What a curve task trains through: parameter names, and their values at t."""

    names: list[str]

    def weights_at(self, t: float) -> dict[str, torch.Tensor]: ...


class CurveTask:
    """The loss of one batch at a random point of the curve."""

    def __init__(self, module: nn.Module, curve: WeightsAlongT, attack: AttackConfig,
                 curve_cfg: CurveConfig, runtime: Runtime, generator: torch.Generator,
                 attack_generator: torch.Generator | None = None) -> None:
        """``generator`` draws t (CPU); ``attack_generator`` the attack's random starts."""
        self.module = module
        self.attacked = copy.deepcopy(module)  # holds the detached weights at t for the attack
        self.attacked.requires_grad_(False)
        self.slots: list[torch.Tensor] = [self.attacked.get_parameter(n) for n in curve.names]
        self.curve = curve
        self.attack = attack.build()
        self.attack_generator = attack_generator
        self.objective = curve_cfg.objective
        self.beta = curve_cfg.trades_beta
        self.runtime = runtime
        self.generator = generator

    def at(self, params: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda inputs: functional_call(self.module, params, (inputs,))

    def attack_at(self, params: dict[str, torch.Tensor], x: torch.Tensor, target: torch.Tensor,
                  loss_fn: LossFn = cross_entropy_sum) -> torch.Tensor:
        """PGD against the network at fixed (detached) weights, in the configured mode."""
        with torch.no_grad():
            torch._foreach_copy_(self.slots, [params[name].detach() for name in self.curve.names])
        with self.runtime.autocast():
            return self.attack(self.attacked, x, target, self.attack_generator, loss_fn=loss_fn)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = float(torch.rand((), generator=self.generator))
        params = self.curve.weights_at(t)  # built once per step, differentiable in the bends
        rt = self.runtime
        if self.objective == "trades":
            self.module.train()
            with rt.autocast():
                clean_logits = self.at(params)(x)
            probs = F.softmax(clean_logits.detach().float(), 1)
            x_adv = self.attack_at(params, x, probs, kl_sum)
            self.module.train()
            with rt.autocast():
                adv_logits = self.at(params)(x_adv)
            loss = F.cross_entropy(clean_logits.float(), y) + self.beta * kl_sum(
                adv_logits, F.softmax(clean_logits.float(), 1)) / x.shape[0]
            return loss, (adv_logits.argmax(1) == y).sum()
        x_in = x
        if self.objective == "adversarial":
            x_in = self.attack_at(params, x, y)
        self.module.train()
        with rt.autocast():
            logits = self.at(params)(x_in)
        return F.cross_entropy(logits.float(), y), (logits.argmax(1) == y).sum()


def curve_optimizer(curve: Curve, optim: OptimConfig) -> torch.optim.SGD:
    return make_sgd([curve.bends], optim)


def train_curve(curve: Curve, module: nn.Module, data: Data, *, attack: AttackConfig,
                curve_cfg: CurveConfig, optim: OptimConfig, augment: bool, runtime: Runtime,
                reporter: Reporter, optimizer: torch.optim.Optimizer | None = None,
                generator: torch.Generator | None = None,
                attack_generator: torch.Generator | None = None, position: Position | None = None,
                on_epoch: Callable[[int, EpochResult], None] | None = None,
                save: Callable[[], None] | None = None, stop: StopSignals | None = None,
                resume_hint: str = "") -> None:
    """Train the bends from ``position`` to ``optim.epochs`` epochs (``data`` already on the
    device); ``save`` and ``stop`` make it resumable (see ``fit``)."""
    optimizer = optimizer or curve_optimizer(curve, optim)
    generator = generator or torch.Generator().manual_seed(optim.seed)
    task = CurveTask(module, curve, attack, curve_cfg, runtime, generator, attack_generator)
    fit(task, optimizer, data.train, optim=optim, info=data.info, augment=augment,
        generator=generator, runtime=runtime, reporter=reporter, label="curve epoch",
        position=position or Position(), on_epoch=on_epoch or (lambda epoch, result: None),
        save=save or (lambda: None), stop=stop or StopSignals(), resume_hint=resume_hint)
