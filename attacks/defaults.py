"""What an attack is when nothing more is said, for training and for evaluation, side by side:
the two differ in strength and in the network's mode, not in the algorithm (both are
:class:`~robust_mc.attacks.pgd.PGD`).

- training: PGD-7 (Madry et al. 2018), the network in train mode (batch statistics, running
  statistics untouched); `connect` trains its curves with PGD-5, as Tatro et al. do;
- evaluation: PGD-20, the network in eval mode (running statistics), as robust accuracies are
  reported in the papers robust-mc follows;
- both: a step of eps/4 from a uniform random start in the eps-ball, one restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from robust_mc.attacks.pgd import Mode


@dataclass(frozen=True)
class AttackDefaults:
    steps: int
    step_fraction: float  # the step size as a fraction of eps
    random_start: bool
    restarts: int
    mode: Mode


TRAINING = AttackDefaults(steps=7, step_fraction=1 / 4, random_start=True, restarts=1,
                          mode="train")
EVALUATION = AttackDefaults(steps=20, step_fraction=1 / 4, random_start=True, restarts=1,
                            mode="eval")
