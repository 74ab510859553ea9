"""The evaluation settings: along a path, its verification, and its layer-wise barriers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from robust_mc.attacks import list_attacks
from robust_mc.settings import setting


def attack_help() -> str:
    """``--eval-attack``'s help, naming the attacks registered when the parser is built."""
    return (f"eval attack spec NAME[:key=value,...], NAME one of {', '.join(list_attacks())} "
            "(docs/reference.md#attacks); pgd's alpha defaults to eps/4")


@dataclass(frozen=True)
class PathConfig:
    """Evaluation along the path."""

    points: int = setting(11, lo=2, hi=1001, help="values of t, both endpoints included")
    bn_data: Literal["clean", "adversarial"] = setting(
        "clean", help="images used to recompute batch-norm statistics at each t: clean, or PGD "
                      "examples against the network at t (2-3x slower per t)")
    bn_images: int = setting(2000, lo=1, help="training images for the BN statistics")
    repair: Literal["off", "reset", "repair"] = setting(
        "reset", help="the statistics of the network at each t: off: the endpoints' batch-norm "
                      "statistics interpolated (no correction); reset: batch norm recomputed "
                      "(nothing to do without it); repair: reset, then every unit's mean and "
                      "std set to the interpolation of the endpoints' (REPAIR, Jordan et al. "
                      "2023), folded into the weights")
    repair_inputs: Literal["clean", "adversarial"] = setting(
        "clean", help="images for repair's unit statistics: the first --repair-images training "
                      "images, or each network's own PGD examples (the training attack, random "
                      "starts from the path's seed)")
    repair_images: int = setting(1000, lo=1, help="training images for repair's unit statistics")
    attack: str = setting("pgd:steps=20", help=attack_help)
    batch_size: int = setting(250, lo=1, help="images per evaluation batch (250 measured "
                                              "fastest on a 2-core CPU)", may_change=True)
    val_limit: int | None = setting(None, lo=1, help="validation images evaluated (all)")
    test_limit: int | None = setting(None, lo=1, help="test images evaluated (all)")
    seed: int = setting(0)
    compare_line: bool = setting(False, help="also evaluate the straight lines, aligned and not")
    similarity: bool = setting(False, may_change=True,
                               help="per layer and t, the mean correlation of the network's units "
                                    "with their matches in each endpoint, clean and adversarial "
                                    "(eval only)")
    similarity_images: int = setting(500, lo=1, may_change=True,
                                     help="test images for the activation similarity")


@dataclass(frozen=True)
class VerifyConfig:
    """Reference-strength evaluation of a path's chosen points (endpoints, best t, worst t)."""

    enabled: bool = setting(False, may_change=True,
                            help="after evaluating, verify the endpoints, the best t and the "
                                 "worst t with AutoAttack and gradient-masking checks")
    images: int = setting(500, lo=1, may_change=True,
                          help="test images per verified point")
    threshold: float = setting(1.5, lo=0, may_change=True,
                               help="flag a point whose path-attack and AutoAttack robust "
                                    "accuracies differ by more (points)")
    square_queries: int = setting(1000, lo=1, may_change=True,
                                  help="queries of the black-box Square check")
    seed: int = setting(0, may_change=True)


@dataclass(frozen=True)
class LayersConfig:
    groups: Literal["modules", "blocks"] = setting(
        "modules", help="modules: each conv/linear with its BN; blocks: whole residual blocks")
    points: int = setting(5, lo=3, hi=1001,
                          help="values of t per group, endpoints and 0.5 included")
    samples: int = setting(1000, lo=1, help="training images for losses and derivatives")
    batch_size: int = setting(250, lo=1)
    compare_align: bool = setting(False, help="report aligned and unaligned side by side")
