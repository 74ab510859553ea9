"""The attacks that robust-mc runs itself: ``none`` (clean) and ``pgd``."""

from __future__ import annotations

import torch
from torch import nn

from robust_mc.attacks.defaults import EVALUATION
from robust_mc.attacks.pgd import PGD
from robust_mc.attacks.spec import Param, register_attack


class NoAttack:
    """The identity: clean evaluation through the same code path as an attack."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x


@register_attack("none", "no attack: robust figures equal the clean ones")
def _none(eps: float, norm: str, num_classes: int) -> NoAttack:
    return NoAttack()


@register_attack(
    "pgd", "robust-mc's PGD (L-inf or L2 as the run's norm); alpha defaults to eps/4",
    steps=Param("int", EVALUATION.steps, "iterations"),
    alpha=Param("pixel", None, "step size in [0,1] pixel units (default eps/4)"),
    restarts=Param("int", EVALUATION.restarts,
                   "random restarts; the highest-loss one is kept per example"),
    eps=Param("pixel", None, "radius, overriding --eps"),
)
def _pgd(eps: float, norm: str, num_classes: int, steps: int, alpha: float | None,
         restarts: int) -> PGD:
    return PGD(eps=eps, step_size=eps * EVALUATION.step_fraction if alpha is None else alpha,
               steps=steps, norm=norm, restarts=restarts, random_start=EVALUATION.random_start,
               mode=EVALUATION.mode)
