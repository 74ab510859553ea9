"""Training attacks: the one attack that endpoint and curve training, batch-norm recomputation on
adversarial data, alignment on adversarial inputs, layers and PAM run, built from the attack
settings (``AttackConfig.method`` names it) and called the same way everywhere.

``@register_training_attack("name")`` registers ``build(config, mode) -> TrainingAttack``; a new
training attack is one such function (here or in a module of its own) plus its test, and
``--attack-method`` offers it at once. A builder honours every setting it is given or refuses
the ones it cannot use, so that no flag is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from robust_mc.attacks.defaults import TRAINING
from robust_mc.attacks.pgd import PGD, Draws, Forward, LossFn, Mode, cross_entropy_sum
from robust_mc.registry import Registry
from robust_mc.settings import setting


class TrainingAttack(Protocol):
    """``attack(model, x, target, generator, forward=..., loss_fn=...) -> x_adv``, with the
    network in ``mode`` while attacking: x (B, C, H, W) in [0, 1], x_adv in the eps-ball and in
    [0, 1]; ``generator`` draws any random start."""

    @property
    def mode(self) -> Mode: ...

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: Draws = None, *, forward: Forward | None = None,
                 loss_fn: LossFn = cross_entropy_sum) -> torch.Tensor: ...


Builder = Callable[["AttackConfig", Mode], TrainingAttack]
TRAINING_ATTACKS = Registry[Builder]("training attack")
register_training_attack = TRAINING_ATTACKS.register
list_training_attacks = TRAINING_ATTACKS.names


@dataclass(frozen=True)
class AttackConfig:
    """The attack used inside training loops (and wherever a procedure needs adversarial
    inputs of the training strength)."""

    method: str = setting("pgd", choices=TRAINING_ATTACKS,
                          help="the training attack (a registered one)")
    norm: Literal["linf", "l2"] = setting("linf", help="threat model: L-inf or L2 ball")
    eps: float = setting(8 / 255, pixel=True, help="radius in [0,1] pixel units")
    step_size: float | None = setting(None, pixel=True, help="default eps/4")
    steps: int = setting(TRAINING.steps, lo=0, help="PGD iterations; 0 trains on clean inputs")
    random_start: bool = setting(TRAINING.random_start)
    mode: Literal["train", "eval"] = setting(
        TRAINING.mode, help="network mode while attacking: train = batch statistics (running "
                            "statistics untouched), eval = running statistics")

    @property
    def resolved_step_size(self) -> float:
        return self.eps * TRAINING.step_fraction if self.step_size is None else self.step_size


@register_training_attack("pgd")
def _pgd(config: AttackConfig, mode: Mode) -> TrainingAttack:
    """Madry et al. (2018): ``steps`` steps of ``resolved_step_size`` in the ``norm`` ball of
    radius ``eps``, from a random start unless ``random_start`` is off."""
    return PGD(eps=config.eps, step_size=config.resolved_step_size, steps=config.steps,
               norm=config.norm, random_start=config.random_start, mode=mode)
