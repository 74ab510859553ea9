"""The one way an attack is made, for training and for evaluation (defaults side by side in
:mod:`robust_mc.attacks.defaults`)."""

from __future__ import annotations

from typing import overload

from robust_mc.attacks.pgd import Mode
from robust_mc.attacks.spec import Attack, build_spec_attack
from robust_mc.attacks.training import TRAINING_ATTACKS, AttackConfig, TrainingAttack


@overload
def build_attack(spec: AttackConfig, *, mode: Mode | None = None) -> TrainingAttack: ...


@overload
def build_attack(spec: str, *, eps: float, norm: str = "linf", num_classes: int = 10
                 ) -> Attack: ...


def build_attack(spec: str | AttackConfig, *, eps: float | None = None, norm: str = "linf",
                 num_classes: int = 10, mode: Mode | None = None) -> Attack | TrainingAttack:
    """The attack ``spec`` describes, every setting honoured.

    - an :class:`AttackConfig` (the ``attack`` section: ``--attack-method``, ``--attack-steps``,
      ``--eps``, ...): the training attack, called as ``attack(model, x, y, generator,
      forward=..., loss_fn=...)`` by training loops, batch-norm recomputation on adversarial
      data, adversarial alignment, layers and PAM; ``mode`` replaces its ``mode`` where a
      procedure defines the network's mode itself (BN recomputation attacks in train mode);
    - a spec string (``pgd:steps=20,alpha=2/255``, ``--eval-attack``): an evaluation attack at
      radius ``eps``, called as ``attack(model, x, y)``.

    Example::

        train = build_attack(AttackConfig(eps=8 / 255))  # PGD-7, eps/4 steps, train mode
        test = build_attack("pgd", eps=8 / 255)  # PGD-20, eps/4 steps, eval mode
    """
    if isinstance(spec, AttackConfig):
        if eps is not None:
            raise TypeError("an AttackConfig carries its own eps and norm")
        return TRAINING_ATTACKS.get(spec.method)(spec, mode or spec.mode)
    if eps is None or mode is not None:
        raise TypeError("an evaluation attack takes eps (and norm, num_classes), not mode")
    return build_spec_attack(spec, eps=eps, norm=norm, num_classes=num_classes)
