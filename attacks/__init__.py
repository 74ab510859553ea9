"""Adversarial attacks: robust-mc's PGD for training loops, and spec-built attacks for evaluation.

``build_attack("pgd:steps=20,alpha=2/255", eps=8/255)`` returns a callable ``attack(model, x, y)``;
``build_attack(AttackConfig(...))`` the training attack; ``list_attacks()`` names the registered
specs. Adding an attack touches one file. Training and evaluation defaults: ``defaults.py``.
"""

from robust_mc.attacks import builtin, reference, torchattacks_adapters  # noqa: F401  (registers them)
from robust_mc.attacks.build import build_attack
from robust_mc.attacks.pgd import PGD, attack_mode, pgd
from robust_mc.attacks.spec import Attack, describe_attacks, list_attacks, parse_attack_spec
from robust_mc.attacks.training import (
    AttackConfig,
    TrainingAttack,
    list_training_attacks,
    register_training_attack,
)

__all__ = ["PGD", "Attack", "AttackConfig", "TrainingAttack", "attack_mode", "build_attack",
           "describe_attacks", "list_attacks", "list_training_attacks", "parse_attack_spec", "pgd",
           "register_training_attack"]
