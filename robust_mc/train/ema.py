"""An exponential moving average of a network's weights (as in Rebuffi et al. 2021 and Gowal et
al. 2020, the robust models of RobustBench's top entries): updated after every optimizer step,
evaluated and saved as the endpoint, its batch-norm statistics recomputed for the averaged
weights (``optim.precise_bn``) or, with that off, the live network's."""

from __future__ import annotations

import torch
from torch import nn

from robust_mc.core.spec import drop_inference_caches


class WeightAverage:
    """``average = decay * average + (1 - decay) * weights`` per parameter, after each step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = model
        self.decay = decay
        self.average = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self) -> None:
        for name, param in self.model.named_parameters():
            self.average[name].lerp_(param.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Put the averaged weights into ``model`` (the same architecture)."""
        for name, param in model.named_parameters():
            param.copy_(self.average[name])
        drop_inference_caches(model)

    def state(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().cpu() for n, t in self.average.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.average[name].copy_(value)
