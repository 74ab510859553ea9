"""Adversarial attacks: robust-mc's PGD for training loops, and spec-built attacks for evaluation.

``build_attack("pgd:steps=20,alpha=2/255", eps=8/255)`` returns a callable ``attack(model, x, y)``;
``list_attacks()`` names the registered specs. Adding an attack touches one file.
"""

from robust_mc.attacks import builtin, reference, torchattacks_adapters  # noqa: F401  (registers them)
from robust_mc.attacks.pgd import PGD, attack_mode, pgd
from robust_mc.attacks.spec import (
    Attack,
    build_attack,
    describe_attacks,
    list_attacks,
    parse_attack_spec,
)
from robust_mc.attacks.training import (
    TrainingAttack,
    build_training_attack,
    list_training_attacks,
    register_training_attack,
)

__all__ = ["PGD", "Attack", "TrainingAttack", "attack_mode", "build_attack",
           "build_training_attack", "describe_attacks", "list_attacks", "list_training_attacks",
           "parse_attack_spec", "pgd", "register_training_attack"]
