"""Adversarial weight perturbation (Wu et al. 2020, "Adversarial Weight Perturbation Helps
Robust Generalization"): each step, after the adversarial examples are made, the weights move to
a nearby point of higher adversarial loss (one ascent step of a proxy copy, rescaled per layer
to ``gamma`` times the layer's norm); the step's gradient is taken there, and the update it
makes is applied to the unperturbed weights."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

PROXY_LR = 0.01  # the proxy's ascent step, as in the reference implementation


class WeightPerturbation:
    """Perturb ``model``'s weights (tensors of 2 or more dims) before the loss, restore after."""

    def __init__(self, model: nn.Module, gamma: float) -> None:
        self.model = model
        self.gamma = gamma
        self.proxy = copy.deepcopy(model)
        self.saved: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {n: p for n, p in model.named_parameters() if p.dim() > 1}

    def perturb(self, x_adv: torch.Tensor, y: torch.Tensor) -> None:
        """Move the weights up the adversarial loss of ``x_adv`` (B, C, H, W) in [0, 1]."""
        self.proxy.load_state_dict(self.model.state_dict())
        self.proxy.train()
        loss = -F.cross_entropy(self.proxy(x_adv).float(), y)
        params = list(self.weights(self.proxy).values())
        grads = torch.autograd.grad(loss, params)
        saved = {}
        with torch.no_grad():
            for (name, weight), grad in zip(self.weights(self.model).items(), grads,
                                            strict=True):
                step = -PROXY_LR * grad  # the proxy's descent on -loss: ascent on the loss
                scale = self.gamma * weight.norm() / (step.norm() + 1e-20)
                perturbed = weight + scale * step
                saved[name] = (weight.detach().clone(), perturbed.clone())
                weight.copy_(perturbed)
        self.saved = saved

    @torch.no_grad()
    def restore(self) -> None:
        """Back to the unperturbed weights plus whatever the optimizer changed since
        :meth:`perturb` (nothing else is touched; exact when nothing changed)."""
        if self.saved is None:
            return
        for name, weight in self.weights(self.model).items():
            original, perturbed = self.saved[name]
            weight.copy_(original + (weight - perturbed))
        self.saved = None
