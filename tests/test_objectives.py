"""Each registered objective's loss on a fixed batch, against an independent computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_mc.errors import UserError
from robust_mc.train.objectives import TrainedNetwork, create_objective, list_objectives


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.rand(8, 3, 2, 2, generator=generator)
    y = torch.randint(0, 5, (8,), generator=generator)
    shift = torch.full_like(x, 0.05)
    seen: dict = {}

    def attack(inputs, target, loss_fn):  # a fixed perturbation; records what it was asked
        seen.update(target=target, loss_fn=loss_fn)
        return (inputs + shift).clamp(0, 1)

    return TrainedNetwork(net, attack), net, x, y, (x + shift).clamp(0, 1), seen


def test_adversarial_is_the_cross_entropy_of_the_attacked_batch(batch):
    network, net, x, y, x_adv, seen = batch
    loss, correct = create_objective("adversarial")(network, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(net(x_adv), y))
    assert int(correct) == int((net(x_adv).argmax(1) == y).sum())
    assert torch.equal(seen["target"], y)


def test_trades_is_clean_cross_entropy_plus_beta_kl(batch):
    network, net, x, y, x_adv, seen = batch
    loss, _ = create_objective("trades", beta=3.0)(network, x, y)
    clean_p = F.softmax(net(x), 1)
    kl = (clean_p * (clean_p.log() - F.log_softmax(net(x_adv), 1))).sum(1).mean()
    torch.testing.assert_close(loss, F.cross_entropy(net(x), y) + 3.0 * kl)
    torch.testing.assert_close(seen["target"], clean_p.detach())  # the inner maximisation's KL


def test_mart_matches_its_reference_formula(batch):
    network, net, x, y, x_adv, seen = batch
    loss, _ = create_objective("mart", beta=5.0)(network, x, y)
    # Wang et al.'s code, written out: boosted CE on the adversarial batch, KL weighted by
    # 1 - p_y of the clean batch
    adv_probs = F.softmax(net(x_adv), 1)
    ranked = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(ranked[:, -1] == y, ranked[:, -2], ranked[:, -1])
    loss_adv = F.cross_entropy(net(x_adv), y) + F.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(net(x), 1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1)).squeeze()
    kl = torch.nn.KLDivLoss(reduction="none")(torch.log(adv_probs + 1e-12), nat_probs)
    loss_robust = (1.0 / len(x)) * torch.sum(torch.sum(kl, dim=1) * (1.0000001 - true_probs))
    torch.testing.assert_close(loss, loss_adv + 5.0 * loss_robust)
    assert torch.equal(seen["target"], y)


def test_madry_is_the_adversarial_objective_under_its_author_s_name(batch):
    network, _, x, y, _, _ = batch
    torch.testing.assert_close(create_objective("madry")(network, x, y)[0],
                               create_objective("adversarial")(network, x, y)[0])


def test_clean_never_attacks(batch):
    network, net, x, y, _, seen = batch
    loss, _ = create_objective("clean")(network, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(net(x), y))
    assert not seen


def test_every_objective_gives_a_gradient_and_unknown_names_raise(batch):
    network, net, x, y, _, _ = batch
    for name in list_objectives():
        net.zero_grad()
        create_objective(name)(network, x, y)[0].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(UserError, match="unknown objective 'marrt'; did you mean 'mart'"):
        create_objective("marrt")
