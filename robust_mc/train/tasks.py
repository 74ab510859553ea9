"""Training tasks: what one step trains, presented to an objective (``objectives.py``).

``EndpointTask`` trains one network's weights. ``CurveTask`` trains a curve's bends: each step
samples t, builds the weights at t once, attacks the network at t through a copy of the module
holding those weights, detached (the attack never rebuilds or differentiates through the weight
combination, and runs the module as plainly as an endpoint's attack does), then returns the loss
at t, differentiable in the bends.

Batch norm uses batch statistics while training; the attack runs the network in the mode set by
``attack.mode`` (``train``: batch statistics with running statistics untouched, the default).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn
from torch.func import functional_call

from robust_mc.attacks import build_attack
from robust_mc.attacks.pgd import Draws, LossFn
from robust_mc.attacks.training import AttackConfig
from robust_mc.core.spec import drop_inference_caches
from robust_mc.run.runtime import Runtime
from robust_mc.train.awp import WeightPerturbation
from robust_mc.train.objectives import TrainedNetwork, create_objective
from robust_mc.train.settings import CurveConfig

Logits = Callable[[torch.Tensor], torch.Tensor]


class EndpointTask:
    """One network's weights under an objective (Madry's adversarial cross-entropy by default;
    ``attack.steps == 0`` trains on clean inputs through the same path). ``forward`` computes
    the logits when that is not ``model`` itself (its compiled version); ``generator`` draws the
    attack's random starts (on the device). ``train_forward`` computes the logits that are
    trained through when that is not ``forward`` (a DistributedDataParallel wrapper, whose
    gradient reduction the attack's input-only passes must not enter)."""

    def __init__(self, model: nn.Module, forward: Logits, attack: AttackConfig, runtime: Runtime,
                 generator: Draws = None, objective: str = "adversarial",
                 perturbation: WeightPerturbation | None = None,
                 train_forward: Logits | None = None, **settings: float) -> None:
        self.model = model  # the module whose mode is switched for the attack
        self.forward = forward
        self.train_forward = train_forward or forward
        self.attack = build_attack(attack)
        self.runtime = runtime
        self.generator = generator
        self.objective = create_objective(objective, **settings)
        self.network = TrainedNetwork(self.logits, self.adversarial)
        # with AWP: the weights move once the batch's adversarial examples exist (the trainer
        # restores them after the step); ``perturbing`` says whether it is on yet (warm-up)
        self.perturbation = perturbation
        self.perturbing = perturbation is not None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.model.train()
        with self.runtime.autocast():
            return self.train_forward(x)

    def adversarial(self, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
                    ) -> torch.Tensor:
        with self.runtime.autocast():
            x_adv = self.attack(self.model, x, target, self.generator, forward=self.forward,
                                loss_fn=loss_fn)
        if self.perturbation is not None and self.perturbing:  # labels: checked by the config
            with self.runtime.autocast():
                self.perturbation.perturb(x_adv, target)
        return x_adv

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.objective(self.network, x, y)


class WeightsAlongT(Protocol):
    """What a curve task trains through: parameter names, and their values at t."""

    names: list[str]

    def weights_at(self, t: float) -> dict[str, torch.Tensor]: ...


class CurveTask:
    """The loss of one batch at a random point of the curve, under ``curve_cfg.objective``."""

    def __init__(self, module: nn.Module, curve: WeightsAlongT, attack: AttackConfig,
                 curve_cfg: CurveConfig, runtime: Runtime, generator: torch.Generator,
                 attack_generator: Draws = None, t_rank: tuple[int, int] | None = None) -> None:
        """``generator`` draws t (CPU); ``attack_generator`` the attack's random starts;
        ``t_rank`` = (rank, processes): each process draws every process's t and trains at its
        own (the generator stays the same on all of them), instead of one t per step."""
        self.module = module
        self.attacked = copy.deepcopy(module)  # holds the detached weights at t for the attack
        self.attacked.requires_grad_(False)
        self.slots: list[torch.Tensor] = [self.attacked.get_parameter(n) for n in curve.names]
        self.curve = curve
        self.attack = build_attack(attack)
        self.attack_generator = attack_generator
        self.objective = create_objective(curve_cfg.objective, beta=curve_cfg.trades_beta)
        self.runtime = runtime
        self.generator = generator
        self.t_rank = t_rank

    def network_at(self, params: dict[str, torch.Tensor]) -> TrainedNetwork:
        """The network with ``params`` (differentiable in the bends), as an objective sees it."""

        def logits(x: torch.Tensor) -> torch.Tensor:
            self.module.train()
            with self.runtime.autocast():
                return functional_call(self.module, params, (x,))

        def adversarial(x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
                        ) -> torch.Tensor:
            with torch.no_grad():
                torch._foreach_copy_(self.slots, [params[n].detach() for n in self.curve.names])
            drop_inference_caches(self.attacked)  # new weights: an eval-mode cache is stale
            with self.runtime.autocast():
                return self.attack(self.attacked, x, target, self.attack_generator,
                                   loss_fn=loss_fn)

        return TrainedNetwork(logits, adversarial)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.t_rank is None:
            t = float(torch.rand((), generator=self.generator))
        else:
            rank, count = self.t_rank
            t = float(torch.rand((count,), generator=self.generator)[rank])
        params = self.curve.weights_at(t)  # built once per step, differentiable in the bends
        return self.objective(self.network_at(params), x, y)
