"""The settings of every command: each run's configuration composes its components' settings.

The components' settings live beside what they configure (``DataConfig`` in :mod:`robust_mc.data`,
``AttackConfig`` in :mod:`attacks.training`, ``SpeedConfig`` in :mod:`robust_mc.run.runtime`, the
training and evaluation settings in ``train/settings.py`` and ``evaluation/settings.py``); this
module composes them into one run configuration per command and re-exports them, with the
settings engine (:mod:`robust_mc.settings`: ``build_config``, presets, validation), so that
``from robust_mc.config import ...`` reaches every setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from robust_mc.attacks.training import AttackConfig
from robust_mc.core.align import METHODS as ALIGNMENT_METHODS
from robust_mc.core.rotatable import MapClass
from robust_mc.core.unit_statistics import TOKENS as ALIGN_TOKENS
from robust_mc.data import DataConfig
from robust_mc.errors import UserError
from robust_mc.evaluation.settings import LayersConfig, PathConfig, VerifyConfig, attack_help
from robust_mc.run.runtime import DEVICE_HELP, SpeedConfig
from robust_mc.settings import (
    SettingInfo,
    build_config,
    describe_setting,
    find_preset,
    flatten,
    given_settings,
    load_yaml,
    parse_pixel_value,
    setting,
    settings_that_may_change,
    to_dict,
)
from robust_mc.train.settings import CurveConfig, ObjectiveConfig, OptimConfig, PamConfig

__all__ = [
    "AlignConfig", "AlignRunConfig", "AttackConfig", "BenchConfig", "BenchRunConfig",
    "ConnectRunConfig", "CurveConfig", "DataConfig", "EnsembleConfig", "EnsembleRunConfig",
    "EvalConfig", "LayersConfig", "LayersRunConfig", "MergeConfig",
    "MergeRunConfig", "ModelConfig", "ObjectiveConfig",
    "OptimConfig", "PamConfig", "PathConfig", "PlaneConfig", "SettingInfo", "SpawnConfig",
    "SpawnRunConfig", "SpeedConfig", "TrainRunConfig", "VerifyConfig", "build_config",
    "describe_setting", "find_preset", "flatten", "given_settings", "load_yaml",
    "parse_pixel_value", "setting", "settings_that_may_change", "to_dict",
]


# --- components --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    arch: str = setting("auto", help="zoo name, path/file.py:Class, package.module:Class or "
                                     "hf:DIR (a transformers model directory's config); auto: "
                                     "tinyten, or cnn for images under 9x9 (the digits)")
    width: float = setting(1.0, lo=0.01, hi=64, help="width multiplier")
    kwargs: dict = setting({}, help="the architecture's own keyword arguments, e.g. "
                                    "'{depth: 16}' (a user class gets its own width here)")


@dataclass(frozen=True)
class EvalConfig:
    attack: str = setting("pgd:steps=20", help=attack_help)
    batch_size: int = setting(256, lo=1, may_change=True)
    seed: int = setting(0)


@dataclass(frozen=True)
class AlignConfig:
    method: str = setting("corr", choices=ALIGNMENT_METHODS,
                          help="corr: activation correlation (Tatro et al.); weights: weight "
                               "matching (Ainsworth et al.)")
    inputs: Literal["clean", "adversarial"] = setting(
        "clean", help="activations on clean images or on each model's own PGD examples")
    samples: int = setting(5000, lo=1, help="training images used for alignment")
    batch_size: int = setting(250, lo=1, may_change=True)
    seed: int = setting(0, help="seed of the random starts of adversarial alignment inputs")
    partial: bool = setting(False, help="where an operation has no tracing rule, leave the "
                                        "units it touches as they are and align the rest "
                                        "(the share left unaligned is printed), instead of "
                                        "stopping")
    maps: Literal["auto", "permutations", "head-rotations", "orthogonal"] = setting(
        "auto", help="the maps of b's hidden spaces: permutations; head-rotations (also one "
                     "orthogonal map per attention head); orthogonal (also one per residual "
                     "stream, LayerNorms folded); each only where it is exact, checked. auto: "
                     "orthogonal for corr, permutations for weights")
    tokens: int = setting(ALIGN_TOKENS, lo=0, hi=1_000_000,
                          help="at most this many tokens per image (evenly spaced) enter a "
                               "transformer's statistics, more where the images are few "
                               "(40,000 samples at least); 0: every token")
    learn_steps: int = setting(
        0, lo=0, hi=1_000_000, help="then train the maps this many steps on the loss of the "
                                    "line from a to b mapped, on clean images or on PGD "
                                    "examples (as --align-inputs says): permutations through "
                                    "a straight-through estimator, rotations as matrix "
                                    "exponentials; 0: off")
    learn_lr: float = setting(1e-3, lo=0.0, hi=10.0, help="Adam's step size for the learned "
                                                           "maps")
    learn_batch: int = setting(64, lo=1, hi=1_000_000, help="images per learned-map step")

    def map_class(self) -> MapClass:
        """The map class ``maps`` names (``auto`` resolved for the method); a rotation class
        with a method that reads no activations is refused."""
        if self.maps == "auto":
            return "orthogonal" if self.method == "corr" else "permutations"
        if self.maps != "permutations" and self.method != "corr":
            raise UserError(f"--align-maps {self.maps} is solved from activations; use "
                            "--align-method corr (or --align-maps permutations)")
        return self.maps


@dataclass(frozen=True)
class AlignRunConfig:
    """`robust-mc align`: permute b's hidden units to match a's."""

    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    device: str = setting("auto", may_change=True, help=DEVICE_HELP)


@dataclass(frozen=True)
class PlaneConfig:
    """The plane through a curve's endpoints and bend, evaluated on a grid."""

    grid: int = setting(7, lo=2, hi=101, help="grid points per side (grid x grid networks)")
    margin: float = setting(0.2, lo=0, hi=10, help="border around the endpoints and bend, as a "
                                            "fraction of their extent")
    images: int = setting(500, lo=1, help="test images evaluated at each grid point")
    bend: int = setting(0, lo=0, help="which bend spans the plane (polychain/bezier with more)")


def _connect_attack() -> AttackConfig:
    return AttackConfig(steps=5)  # PGD-5 with step eps/4, as Tatro et al. train robust curves


def _connect_optim() -> OptimConfig:
    return OptimConfig(epochs=20, lr=0.015, weight_decay=5e-4, schedule="cosine")


@dataclass(frozen=True)
class ConnectRunConfig:
    """`robust-mc connect`: align, train a robust curve, evaluate it, report barriers."""

    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=_connect_attack)
    optim: OptimConfig = field(default_factory=_connect_optim)
    curve: CurveConfig = field(default_factory=CurveConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    aligned: bool = setting(True, help="align b to a first (--no-align: as given)")
    pam: PamConfig = field(default_factory=PamConfig)
    path: PathConfig = field(default_factory=PathConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    device: str = setting("auto", may_change=True, help=DEVICE_HELP)


@dataclass(frozen=True)
class LayersRunConfig:
    """`robust-mc layers`: layer-wise barriers, measured and predicted."""

    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=_connect_attack)
    align: AlignConfig = field(default_factory=AlignConfig)
    aligned: bool = setting(True, help="align b to a first (--no-align: as given)")
    layers: LayersConfig = field(default_factory=LayersConfig)
    path: PathConfig = field(default_factory=PathConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    device: str = setting("auto", may_change=True, help=DEVICE_HELP)


@dataclass(frozen=True)
class TrainRunConfig:
    """`robust-mc train`: one PGD-trained endpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    device: str = setting("auto", may_change=True, help=DEVICE_HELP)


@dataclass(frozen=True)
class EnsembleConfig:
    k: int = setting(3, help="ensemble size: points chosen on the path (1 to --points)")
    combine: Literal["logits", "probs"] = setting(
        "logits", help="average the members' logits, or their probabilities")


@dataclass(frozen=True)
class EnsembleRunConfig:
    """`robust-mc ensemble`: the choice of members; the path's settings come from its run."""

    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)


def _merge_path() -> PathConfig:
    return PathConfig(test_limit=1000)


@dataclass(frozen=True)
class MergeConfig:
    frame: Literal["reference", "consensus", "pairwise"] = setting(
        "consensus", help="how the members are put in one frame: reference (each aligned to "
                          "one member), consensus (each to the average of the others, round "
                          "after round) or pairwise (a balanced tree of two-model merges)")
    reference: Literal["first", "robust"] = setting(
        "first", help="the member the others are aligned to first: the first given, or the "
                      "most robust on the validation images")
    rounds: int = setting(5, lo=1, hi=100, help="consensus: at most this many rounds")
    weights: list[float] = setting([], help="the members' weights in the average, summing to "
                                            "1, e.g. 0.4,0.3,0.3 (default: equal)")
    select: Literal["all", "greedy"] = setting(
        "all", help="which members the merge averages: all (with --merge-weights), or a greedy "
                    "soup: members ranked by validation robust accuracy, each kept if the "
                    "merge's does not fall (equal weights among those kept)")
    barrier_points: int = setting(5, lo=0, hi=101,
                                  help="values of t on each member's line to the merge, for "
                                       "its robust loss barrier; 0: not measured")
    finetune_epochs: int = setting(0, lo=0, hi=10_000, help="epochs of robust training of the "
                                                            "merge (the first member's attack, "
                                                            "objective and optimizer); 0: none")
    finetune_lr: float | None = setting(None, lo=0.0, hi=10.0,
                                        help="the fine-tune's starting learning rate, decayed "
                                             "to 0 (default: the first member's recorded "
                                             "peak)")


@dataclass(frozen=True)
class MergeRunConfig:
    """`robust-mc merge`: align several endpoints to one frame, average them, repair the
    average's statistics and measure it against the members and their ensemble."""

    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    aligned: bool = setting(True, help="align the members to one frame first (--no-align: "
                                       "average them as given)")
    merge: MergeConfig = field(default_factory=MergeConfig)
    path: PathConfig = field(default_factory=_merge_path)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    device: str = setting("auto", may_change=True, help=DEVICE_HELP)


@dataclass(frozen=True)
class BenchConfig:
    methods: list[str] = setting(["line", "line+align", "curve", "curve+align", "curve+pam"],
                                 help="line|curve, then +align (or +permutations, "
                                      "+head-rotations, +orthogonal: its map class), "
                                      "+learned or +learned-adv (the maps trained on the "
                                      "line's clean or robust loss), +pam and/or +repair "
                                      "(clean statistics) or +repair-adv (adversarial)")
    seeds: list[int] = setting([0], help="curve seeds: each curve method runs per pair and seed")
    pairs: list[list[str]] = setting([], help="endpoint checkpoint pairs: [[a.pt, b.pt], ...]")
    endpoint_seeds: list[list[int]] = setting(
        [], help="seed pairs [[0, 1], ...] whose endpoints are trained with the train section")
    train_preset: str | None = setting(
        None, help="preset or YAML the endpoints are trained with; the train section's "
                   "non-default values override it")
    arch: str | None = setting(
        None, help="architecture of the pairs: needed for plain state dicts; naming a pair's "
                   "recorded import spec (file.py:Class) allows it")
    trust_code: bool = setting(False, help="let the pairs' files name any importable "
                                           "architecture (runs that code)")
    model_kwargs: dict = setting({}, help="the pairs' architecture's own arguments (plain "
                                          "state dicts)")
    normalization: str | None = setting(None, help="what plain state-dict pairs expect of "
                                                   "their [0, 1] inputs: none, cifar10, "
                                                   "cifar100, imagenet or MEAN,..:STD,..")
    model_dir: str | None = setting(None, help="where pairs given as robustbench:<dataset>/"
                                               "<threat>/<Name> keep their weights")
    verify: bool = setting(False, may_change=True,
                           help="verify every cell's endpoints, best and worst t with AutoAttack "
                                "and gradient-masking checks (the connect section's verify "
                                "settings); adds AutoAttack columns to the table")


@dataclass(frozen=True)
class SpawnConfig:
    epochs: list[int] = setting([0, 1, 2, 4], help="parent epochs at which two children fork")
    child_seeds: list[int] = setting([101, 102], help="the two children's seeds: their data "
                                                      "order and random starts")


@dataclass(frozen=True)
class SpawnRunConfig:
    """`robust-mc spawn`: one parent run, two children forked at each spawn epoch and trained to
    the parent's last epoch, the straight line between them measured (Landscaping Linear Mode
    Connectivity, 2024, with robust training)."""

    data: DataConfig = field(default_factory=DataConfig)
    spawn: SpawnConfig = field(default_factory=SpawnConfig)
    train: TrainRunConfig = field(default_factory=TrainRunConfig)
    connect: ConnectRunConfig = field(default_factory=ConnectRunConfig)
    layers: LayersConfig = field(default_factory=LayersConfig)
    device: str = setting("auto", may_change=True, help=DEVICE_HELP)


@dataclass(frozen=True)
class BenchRunConfig:
    """`robust-mc bench`: a grid of connect runs. ``data`` and ``device`` apply to every cell
    and every trained endpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    train: TrainRunConfig = field(default_factory=TrainRunConfig)
    connect: ConnectRunConfig = field(default_factory=ConnectRunConfig)
    device: str = setting("auto", may_change=True, help=DEVICE_HELP)
