"""Training objectives: the loss of one batch, given the network being trained and the attack on
it. Endpoints and curves share them; a new objective is one function here plus its test.

``@register_objective("name")`` registers a factory ``make(**settings) -> Objective``;
``create_objective(name, **settings)`` builds one (unknown names raise); ``list_objectives()``
names them. An objective sees the network only through :class:`TrainedNetwork`, so the same
objective trains one network's weights (an endpoint) or a curve's bends (at a sampled t).

Example::

    objective = create_objective("trades", beta=6.0)
    loss, correct = objective(TrainedNetwork(logits, attack), x, y)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robust_mc.attacks.pgd import LossFn, cross_entropy_sum
from robust_mc.registry import Registry


@dataclass(frozen=True)
class TrainedNetwork:
    """The network an objective trains, as the task presents it at this step.

    ``logits(x)``: the network in train mode, differentiable in what is trained.
    ``attack(x, target, loss_fn)``: adversarial inputs maximising ``loss_fn(logits, target)``
    against the network as it stands (its weights held fixed), x (B, C, H, W) in [0, 1].
    """

    logits: Callable[[torch.Tensor], torch.Tensor]
    attack: Callable[[torch.Tensor, torch.Tensor, LossFn], torch.Tensor]


# (network, x, y) -> (mean loss to minimise, correct predictions on the inputs trained on)
Objective = Callable[[TrainedNetwork, torch.Tensor, torch.Tensor],
                     tuple[torch.Tensor, torch.Tensor]]

# make(**settings) -> Objective, by name
OBJECTIVES = Registry[Callable[..., Objective]]("objective")
register_objective = OBJECTIVES.register
list_objectives = OBJECTIVES.names


def create_objective(name: str, **settings: Any) -> Objective:
    """The objective ``name`` with its ``settings`` (each takes the ones it knows)."""
    return OBJECTIVES.get(name)(**settings)


def kl_sum(logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """KL(clean || adversarial), summed over the batch: the TRADES inner objective."""
    return F.kl_div(F.log_softmax(logits.float(), 1), clean_probs, reduction="sum")


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == y).sum()


@register_objective("adversarial")
def adversarial(**_: Any) -> Objective:
    """Madry et al. (2018): the cross-entropy of PGD examples (clean ones when the attack has
    no steps)."""

    def loss(net: TrainedNetwork, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net.logits(net.attack(x, y, cross_entropy_sum))
        return F.cross_entropy(logits.float(), y), _correct(logits, y)

    return loss


@register_objective("mart")
def mart(beta: float = 6.0, **_: Any) -> Objective:
    """Wang et al. (2020), MART: a boosted cross-entropy of PGD examples (plus the margin to
    the most likely wrong class) + ``beta`` KL(clean || adversarial) weighted by how
    misclassified each clean example is (1 - p_y(clean))."""

    def loss(net: TrainedNetwork, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        adv_logits = net.logits(net.attack(x, y, cross_entropy_sum)).float()
        clean_logits = net.logits(x).float()
        adv_probs = F.softmax(adv_logits, 1)
        top2 = adv_probs.argsort(1)[:, -2:]
        wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
        boosted = F.cross_entropy(adv_logits, y) + F.nll_loss(
            torch.log(1.0001 - adv_probs + 1e-12), wrong)
        clean_probs = F.softmax(clean_logits, 1)
        true_probs = clean_probs.gather(1, y[:, None]).squeeze(1)
        kl = (clean_probs * (torch.log(clean_probs + 1e-12)
                             - torch.log(adv_probs + 1e-12))).sum(1)
        value = boosted + beta * (kl * (1.0000001 - true_probs)).mean()
        return value, _correct(adv_logits, y)

    return loss


register_objective("madry")(adversarial)  # the same objective under its author's name


@register_objective("trades")
def trades(beta: float = 6.0, **_: Any) -> Objective:
    """Zhang et al. (2019): clean cross-entropy + ``beta`` KL(clean || adversarial), the
    adversarial examples maximising that KL."""

    def loss(net: TrainedNetwork, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        clean_logits = net.logits(x)
        probs = F.softmax(clean_logits.detach().float(), 1)
        adv_logits = net.logits(net.attack(x, probs, kl_sum))
        value = F.cross_entropy(clean_logits.float(), y) + beta * kl_sum(
            adv_logits, F.softmax(clean_logits.float(), 1)) / x.shape[0]
        return value, _correct(adv_logits, y)

    return loss


@register_objective("clean")
def clean(**_: Any) -> Objective:
    """Plain cross-entropy on the clean batch (no attack)."""

    def loss(net: TrainedNetwork, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net.logits(x)
        return F.cross_entropy(logits.float(), y), _correct(logits, y)

    return loss
