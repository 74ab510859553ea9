"""Robust mode connectivity in one page, through robust-mc's Python API.

Two small networks are trained with PGD on the digits (shipped with scikit-learn: nothing is
downloaded); the second is permuted to match the first (Tatro et al. 2020: the permutation
that maximises the correlation of matching activations); a quadratic Bezier curve between them
is trained against a PGD adversary at a random point of the curve each step (Garipov et al.
2018, with Zhao et al.'s robust loss); and the straight line, the aligned line and the curve
are evaluated clean and under PGD, giving the robust loss barrier of each.

    python examples/connect_two_robust_networks.py        # about ten seconds on two CPU cores

``robust-mc connect a.pt b.pt`` does all of this (and more: resuming, the best on-path model,
reports); this page shows the method itself.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from robust_mc.attacks import AttackConfig, build_attack
from robust_mc.config import TrainRunConfig, build_config
from robust_mc.core.align import align
from robust_mc.core.curves import Curve
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.spec import permute_model
from robust_mc.data import DataConfig, as_float, batches, load_data
from robust_mc.evaluation.barriers import barrier
from robust_mc.evaluation.path import recompute_batchnorm
from robust_mc.evaluation.robustness import evaluate_model
from robust_mc.pipelines.endpoint_training import train_endpoint
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.model_building import build_model

EPS = 8 / 255
ATTACK = AttackConfig(eps=EPS, steps=3, step_size=3 / 255)  # PGD-3, for training and statistics
POINTS = [i / 4 for i in range(5)]  # where each path is evaluated


def train_robust_network(seed: int, runtime: Runtime) -> nn.Module:
    """One PGD-trained endpoint (the settings robust-mc's train command takes)."""
    cfg = build_config(TrainRunConfig, None, {
        "data.dataset": "digits", "model.arch": "cnn", "model.width": 0.5, "optim.epochs": 4,
        "attack.steps": 3, "attack.step_size": 3 / 255, "eval.attack": "none",
        "optim.seed": seed, "device": "cpu"})
    return build_model(train_endpoint(cfg, runtime, Reporter(quiet=True))).eval()


def aligned_copy(a: nn.Module, b: nn.Module, images: torch.Tensor,
                 labels: torch.Tensor) -> nn.Module:
    """``b`` with its units permuted to match ``a``'s: the same function, other coordinates."""
    spec = trace_permutation_spec(a, images[:2])
    result = align(a, b, [(images, labels)], spec=spec)
    aligned = copy.deepcopy(b)
    permute_model(aligned, spec, result.perm)
    return aligned


def train_curve(a: nn.Module, b: nn.Module, data, epochs: int = 3) -> Curve:
    """A Bezier curve with one bend, trained on the PGD loss at a random t each step."""
    curve = Curve.between("bezier", a, a.state_dict(), b.state_dict(), bends=1)
    optimizer = torch.optim.SGD(curve.parameters(), lr=0.05, momentum=0.9)
    attack = build_attack(ATTACK)
    template = copy.deepcopy(a).train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for x, y in batches(data.train, 64, shuffle=True, generator=generator):
            weights = curve.weights_at(torch.rand((), generator=generator))
            network = PointOnCurve(template, weights)
            x_adv = attack(network, x, y)  # the adversary sees the network at this t
            loss = nn.functional.cross_entropy(network(x_adv), y)
            optimizer.zero_grad()
            loss.backward()  # into the bend only: the ends stay where they are
            optimizer.step()
    return curve


class PointOnCurve(nn.Module):
    """The network with the curve's weights at one t (differentiable in the bend)."""

    def __init__(self, template: nn.Module, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.template, self.weights = template, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, self.weights, (x,))


def robust_losses(curve: Curve, template: nn.Module, data, runtime: Runtime) -> list[float]:
    """The PGD-10 loss on 300 test images at each of POINTS, batch norm re-estimated at each
    t (the ends' own statistics do not fit the networks between them)."""
    attack = build_attack("pgd:steps=10", eps=EPS)
    losses = []
    for t in POINTS:
        network = copy.deepcopy(template)
        network.load_state_dict(curve.weights_at(t), strict=False)
        recompute_batchnorm(network, data.train, images=500, data="clean", attack=ATTACK,
                            runtime=runtime)
        test = data.test.take(300)
        losses.append(evaluate_model(network.eval(), test, attack, runtime).robust_loss)
    return losses


def main() -> None:
    torch.manual_seed(0)
    runtime = Runtime.for_device("cpu")
    data = load_data(DataConfig(dataset="digits"))
    a, b = train_robust_network(0, runtime), train_robust_network(1, runtime)
    probe = data.train.take(500)
    images, labels = as_float(probe.images), probe.labels
    b_aligned = aligned_copy(a, b, images, labels)
    with torch.no_grad():
        moved = float((b_aligned(images) - b(images)).abs().max())
    print(f"aligned b computes b's function: largest logit change {moved:.1e}")
    paths = {"line": Curve.between("line", a, a.state_dict(), b.state_dict()),
             "aligned line": Curve.between("line", a, a.state_dict(), b_aligned.state_dict()),
             "aligned curve": train_curve(a, b_aligned, data)}
    print("robust loss barrier (PGD-10 test loss above the chord between the ends):")
    for name, path in paths.items():
        height, where = barrier(POINTS, robust_losses(path, a, data, runtime))
        print(f"  {name:14s} {height:6.3f} at t = {where:.2f}")


if __name__ == "__main__":
    main()
