"""The training settings: optimizer and schedule, what an endpoint is trained on, the curve and
proximal alternating minimization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from robust_mc.core.curves import CURVES
from robust_mc.settings import setting
from robust_mc.train.objectives import OBJECTIVES


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = setting(10, lo=1, help="training epochs")
    batch_size: int = setting(128, lo=1, help="images per step")
    optimizer: Literal["sgd", "adamw"] = setting(
        "sgd", help="sgd: SGD with momentum; adamw: AdamW (decoupled weight decay), which "
                    "transformers such as vit_cifar train with")
    lr: float = setting(0.1, lo=0.0, help="peak learning rate")
    momentum: float = setting(0.9, lo=0.0, hi=1.0, help="SGD momentum; AdamW's beta1")
    weight_decay: float = setting(5e-4, lo=0.0, help="L2 weight decay")
    schedule: Literal["piecewise", "cosine", "constant"] = setting(
        "piecewise", help="learning-rate schedule")
    warmup_epochs: float = setting(0.0, lo=0.0,
                                   help="epochs over which the learning rate ramps linearly "
                                        "up from 0 before the schedule (transformers need a "
                                        "few)")
    seed: int = setting(0, help="seed of the run: shuffles, crops, t and attack random starts")
    save_every: int = setting(1, lo=1, help="epochs between saved resumable states (and always "
                                            "at the end and on an interrupt)", may_change=True)
    skip_nonfinite: int = setting(0, lo=0, help="batches with a non-finite loss to skip before "
                                                "the run stops", may_change=True)
    precise_bn: Literal["clean", "adversarial", "off"] = setting(
        "clean", help="after training, recompute BN statistics on 2000 training images, as "
                      "connect does at every t (its --bn-data), instead of keeping the noisy "
                      "moving average; off keeps it")


@dataclass(frozen=True)
class ObjectiveConfig:
    """What an endpoint is trained on, batch by batch."""

    name: str = setting("adversarial", choices=OBJECTIVES,
                        help="adversarial (= madry): PGD examples; trades; mart; clean")
    beta: float = setting(6.0, lo=0.0, help="the robust term's weight (trades, mart)")
    ema: float | None = setting(None, lo=0.0, hi=1.0,
                                help="decay of an exponential moving average of the weights, "
                                     "per step, evaluated and saved as the endpoint")
    awp: float | None = setting(None, lo=0.0,
                                help="adversarial weight perturbation: its size relative to "
                                     "each layer's weights (Wu et al. use 5e-3)")
    awp_warmup: int = setting(0, lo=0, help="epochs before the weight perturbation starts")


@dataclass(frozen=True)
class CurveConfig:
    kind: str = setting("bezier", choices=CURVES, help="the curve between the endpoints")
    bends: int = setting(1, lo=1, hi=64, help="trainable control points (bezier/polychain)")
    objective: str = setting("adversarial", choices=OBJECTIVES,
                             help="what the curve is trained on: PGD examples (adversarial), "
                                  "TRADES, or clean images")
    trades_beta: float = setting(6.0, lo=0.0,
                                 help="the robust term's weight (objectives trades, mart)")
    t_per_rank: bool = setting(False, help="on several processes (torchrun), each trains its "
                                           "rows at a t of its own (lower-variance steps); off: "
                                           "one t per step, the one-process computation")


@dataclass(frozen=True)
class PamConfig:
    """Proximal alternating minimization (Tatro et al. 2020): between phases of curve training,
    optimise the permutation of b's units with the curve fixed."""

    enabled: bool = setting(False, help="alternate curve and permutation updates")
    outer: int = setting(2, lo=1, help="permutation updates, evenly spaced in curve training")
    perm_epochs: int = setting(1, lo=1, help="epochs of each permutation update")
    lr: float = setting(3000.0, lo=0.0, help="proximal gradient step on the relaxed "
                                             "permutation matrices (their gradients are small)")
    prox: float = setting(0.01, lo=0.0, help="weight of the proximal term ||P - I||^2 / 2 that "
                                             "holds each update near b as it stands")
    sinkhorn_iters: int = setting(20, lo=1, help="row/column normalisations per projection")
