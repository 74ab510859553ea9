"""PAM: proximal alternating minimization of a robust curve over its bends and the permutation of
b's units (Tatro et al. 2020). Spaces grouped into heads or convolution groups keep their
alignment: a doubly stochastic relaxation does not respect blocks.

The curve's bends are trained with the permutation fixed (ordinary curve training); between
phases the bends are fixed and each space's permutation is relaxed to a doubly stochastic matrix
P, initialised at the identity (b as it stands), and trained by proximal gradient steps on the
same robust curve loss with the proximal term ``prox/2 * ||P - I||^2``, each step projected back
onto the doubly stochastic matrices (Sinkhorn normalisation). The result is rounded to the
nearest permutation by the assignment solver, and b's units are permuted by it for the next
phase.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from robust_mc.attacks.training import AttackConfig
from robust_mc.core.curves import Curve, flatten_params
from robust_mc.core.permutation import Permutation, PermutationSpec
from robust_mc.core.spec import mix_state
from robust_mc.train.loop import Trainer, TrainingContext
from robust_mc.train.settings import CurveConfig, OptimConfig, PamConfig
from robust_mc.train.tasks import CurveTask


def soft_permute(params: dict[str, torch.Tensor], spec: PermutationSpec,
                 relaxed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` with each space's units mixed by its (size, size) matrix: new unit i =
    sum_j P[i, j] old unit j. A permutation matrix (P[i, perm[i]] = 1) gives exactly
    ``apply_permutation``; differentiable in P. Buffers are not on the curve: only the
    ``params`` given are mixed."""
    return mix_state(params, spec, relaxed)


def sinkhorn(matrix: torch.Tensor, iters: int) -> torch.Tensor:
    """Nearly doubly stochastic: negatives clipped, then rows and columns normalised in turn."""
    m = matrix.clamp_min(0) + 1e-12
    for _ in range(iters):
        m = m / m.sum(1, keepdim=True)
        m = m / m.sum(0, keepdim=True)
    return m


class ProximalBirkhoff(torch.optim.Optimizer):
    """Proximal gradient steps on doubly stochastic matrices: each step solves
    ``min_P <g, P> + ||P - P_k||^2 / (2 lr) + prox * ||P - A||^2 / 2`` in closed form,
    ``P <- (P - lr * g + lr * prox * A) / (1 + lr * prox)`` (stable for any step size), and
    projects back (Sinkhorn). Where the loss is stationary nothing moves."""

    def __init__(self, params, *, lr: float, prox: float, iters: int) -> None:
        super().__init__(params, {"lr": lr})
        self.prox = prox
        self.iters = iters
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["anchor"] = p.detach().clone()

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                moved = (p - lr * p.grad + lr * self.prox * self.state[p]["anchor"])
                p.copy_(sinkhorn(moved / (1 + lr * self.prox), self.iters))
        return None


class PermutedEnd:
    """The curve with its end point b soft-permuted by ``relaxed`` and its bends held fixed: what
    the permutation phase differentiates (in the matrices only)."""

    def __init__(self, curve: Curve, spec: PermutationSpec, relaxed: dict[str, torch.Tensor]
                 ) -> None:
        self.curve = curve
        self.names = curve.names
        self.spec = spec
        self.relaxed = relaxed
        self.end = curve.unflatten(curve.end)

    def weights_at(self, t: float) -> dict[str, torch.Tensor]:
        c = self.curve.coefficients(t)
        end = flatten_params(soft_permute(self.end, self.spec, self.relaxed), self.names,
                             detach=False)
        flat = c[0] * self.curve.start + c[-1] * end
        if self.curve.num_bends:
            flat = flat + c[1:-1] @ self.curve.bends.detach()
        return self.curve.unflatten(flat)


def permutation_phase(curve: Curve, template: nn.Module, spec: PermutationSpec,
                      context: TrainingContext, *, attack: AttackConfig, curve_cfg: CurveConfig,
                      optim_settings: OptimConfig, pam: PamConfig, label: str) -> Permutation:
    """One permutation update: the permutation of b (relative to b now) that the relaxed,
    proximal problem rounds to."""
    device = curve.start.device
    relaxed = {s.name: torch.eye(s.size, device=device).requires_grad_() for s in spec
               if s.blocks is None and not spec.members(s.name)}  # grouped spaces stay
    task = CurveTask(template, PermutedEnd(curve, spec, relaxed), attack, curve_cfg,
                     context.runtime, context.generator, context.attack_generator)
    optimizer = ProximalBirkhoff(list(relaxed.values()), lr=pam.lr, prox=pam.prox,
                                 iters=pam.sinkhorn_iters)
    schedule = replace(optim_settings, epochs=pam.perm_epochs, lr=pam.lr, weight_decay=0.0,
                       schedule="constant", warmup_epochs=0.0)
    Trainer(task, optimizer, schedule, context).fit(
        label, on_epoch=lambda epoch, result: None, save=lambda: None,
        resume_hint="rerun the same command to continue from the last saved state")
    return {name: torch.as_tensor(linear_sum_assignment(m.detach().double().cpu().numpy(),
                                                        maximize=True)[1])
            for name, m in relaxed.items()}


def compose(first: dict[str, list[int]] | None, then: Permutation) -> dict[str, list[int]]:
    """The permutation that applies ``first`` and then ``then`` (new i = original
    first[then[i]])."""
    out = dict(first or {})  # spaces ``then`` leaves alone keep their order
    for name, p in then.items():
        base = torch.tensor(first[name]) if first and name in first else torch.arange(len(p))
        out[name] = base[p.cpu()].tolist()
    return out


def moved_fraction(perm: Permutation | dict[str, list[int]],
                   start: dict[str, list[int]] | None) -> dict[str, float]:
    """Per space, the fraction of units whose match differs from ``start`` (identity if None)."""
    out = {}
    for name, p in perm.items():
        p = torch.as_tensor(p)
        base = torch.tensor(start[name]) if start and name in start else torch.arange(len(p))
        out[name] = float((p != base).float().mean())
    return out
