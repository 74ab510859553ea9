"""One typed configuration tree from defaults, a YAML file and CLI flags, all validated alike.

Every component has a frozen dataclass; a command's run config composes them. ``build_config``
merges, in increasing precedence, the dataclass defaults, a YAML mapping (``--config``) and dotted
overrides from the command line (``{"attack.eps": "8/255"}``). Unknown keys, wrong types and
out-of-range values raise :class:`UserError` naming the dotted key.

Values in pixel units (eps, step sizes) are fractions of the [0, 1] image range and accept
``8/255`` or ``0.031``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from robust_mc.errors import UserError
from robust_mc.limits import check_bounded, check_regular_file

if TYPE_CHECKING:
    from attacks.training import TrainingAttack

T = TypeVar("T")


def setting(default: Any, *, lo: float | None = None, hi: float | None = None, pixel: bool = False,
            help: str = "", may_change: bool = False,
            choices: Callable[[], list[str]] | None = None) -> Any:
    """A dataclass field with a range check, pixel-unit parsing and a help string (which the
    command-line flag that sets it shows). ``may_change``: a run may continue with another value
    (where it runs, how its work is batched, laid out or saved: results change at most by float
    rounding). ``choices``: the registry that lists the valid values (curve kinds, alignment
    methods, objectives), so that registering one is all it takes to offer it."""
    meta = {"lo": lo, "hi": hi, "pixel": pixel, "help": help, "may_change": may_change,
            "choices": choices}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def parse_pixel_value(raw: Any, key: str = "value") -> float:
    """Parse an eps or step size in [0, 1] pixel units: ``8/255``, ``0.031`` or ``0``."""
    if isinstance(raw, bool):
        raise UserError(f"{key}: expected a number such as 8/255 or 0.031, got {raw!r}")
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:
            value = float("inf")
    else:
        text = str(raw).strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                if float(den) == 0:
                    raise UserError(f"{key}: division by zero in {text!r}; write e.g. 8/255")
                value = float(Fraction(num.strip()) / Fraction(den.strip()))
            else:
                value = float(text)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise UserError(f"{key}: {text!r} is not a number; write e.g. 8/255 or 0.031") from None
    if value != value or value < 0:
        raise UserError(f"{key}: {raw!r} must be a non-negative number in [0, 1] pixel units")
    if value > 1:
        raise UserError(f"{key}: {raw!r} is above 1, but values are in [0, 1] pixel units; "
                        f"did you mean {raw}/255?")
    return value


def curve_kinds() -> list[str]:
    from robust_mc.core.curves import list_curves

    return list_curves()


def training_attacks() -> list[str]:
    from attacks.training import list_training_attacks

    return list_training_attacks()


def alignment_methods() -> list[str]:
    from robust_mc.core.align import list_alignment_methods

    return list_alignment_methods()


def objectives() -> list[str]:
    from robust_mc.train.objectives import list_objectives

    return list_objectives()


# --- components --------------------------------------------------------------------------------

DEVICE_HELP = "auto (CUDA when there is one), cpu or cuda"

@dataclass(frozen=True)
class DataConfig:
    dataset: str = setting("digits", help="cifar10, cifar100, imagefolder:PATH, digits, "
                                          "synthetic[:SIZE]")
    data_dir: str | None = setting(None, help="root directory of cifar10/cifar100 data")
    download: bool = setting(False, help="allow torchvision to download cifar10/cifar100")
    val_size: int | None = setting(None, lo=0, help="validation images carved from train "
                                                    "(default 10%, at most 5000)")
    val_seed: int = setting(0, help="seed of the train/validation split")
    train_limit: int | None = setting(None, lo=1, help="use only the first N training images")
    test_limit: int | None = setting(None, lo=1, help="use only the first N test images")
    augment: bool = setting(True, help="random crop with padding and horizontal flip in training")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = setting("auto", help="zoo name, path/file.py:Class or package.module:Class; "
                                     "auto: tinyten, or cnn for images under 9x9 (the digits)")
    width: float = setting(1.0, lo=0.01, hi=64, help="width multiplier")
    kwargs: dict = setting({}, help="the architecture's own keyword arguments, e.g. "
                                    "'{depth: 16}' (a user class gets its own width here)")


@dataclass(frozen=True)
class AttackConfig:
    """The attack used inside training loops (and wherever a procedure needs adversarial
    inputs of the training strength)."""

    method: str = setting("pgd", choices=training_attacks,
                          help="the training attack (a registered one)")
    norm: Literal["linf", "l2"] = setting("linf", help="threat model: L-inf or L2 ball")
    eps: float = setting(8 / 255, pixel=True, help="radius in [0,1] pixel units")
    step_size: float | None = setting(None, pixel=True, help="default eps/4")
    steps: int = setting(7, lo=0, help="PGD iterations; 0 trains on clean inputs")
    random_start: bool = setting(True)
    mode: Literal["train", "eval"] = setting(
        "train", help="network mode while attacking: train = batch statistics (running "
                      "statistics untouched), eval = running statistics")

    @property
    def resolved_step_size(self) -> float:
        return self.eps / 4 if self.step_size is None else self.step_size

    def build(self, mode: Literal["train", "eval"] | None = None) -> TrainingAttack:
        """The attack these settings describe, every field honoured: the one way a training
        attack is made. ``mode`` replaces ``self.mode`` where a procedure defines the network's
        mode itself (BN recomputation attacks in train mode)."""
        from attacks.training import build_training_attack

        return build_training_attack(self, mode)


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
    warmup_epochs: float = setting(0.0, lo=0.0)
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
class SpeedConfig:
    channels_last: bool = setting(True, help="NHWC memory layout",
                                  may_change=True)
    precision: Literal["auto", "float32", "bfloat16"] = setting(
        "float32", help="autocast dtype; auto = bfloat16 where the hardware makes it fast (a "
                        "CUDA device that supports it, a CPU with AMX tiles), else float32")
    compile: bool = setting(False, help="torch.compile the network for its training passes",
                            may_change=True)
    threads: int | None = setting(None, lo=1, hi=1024, help="CPU threads (default: all cores)",
                                  may_change=True)
    deterministic: bool = setting(False, help="torch's deterministic algorithms and every seed "
                                              "set (slower on GPU)")
    reuse_memory: bool = setting(
        True, help="keep freed CPU memory for the next tensors (glibc): no page fault per page "
                   "of every large tensor", may_change=True)


@dataclass(frozen=True)
class EvalConfig:
    attack: str = setting("pgd:steps=20", help="attack spec, e.g. pgd:steps=20,alpha=2/255")
    batch_size: int = setting(256, lo=1, may_change=True)
    seed: int = setting(0)


@dataclass(frozen=True)
class AlignConfig:
    method: str = setting("corr", choices=alignment_methods,
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


@dataclass(frozen=True)
class AlignRunConfig:
    """`robust-mc align`: permute b's hidden units to match a's."""

    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    device: str = setting("auto", may_change=True, help=DEVICE_HELP)


@dataclass(frozen=True)
class CurveConfig:
    kind: str = setting("bezier", choices=curve_kinds, help="the curve between the endpoints")
    bends: int = setting(1, lo=1, help="trainable control points (bezier/polychain)")
    objective: str = setting("adversarial", choices=objectives,
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


@dataclass(frozen=True)
class PathConfig:
    """Evaluation along the path."""

    points: int = setting(11, lo=2, hi=1001, help="values of t, both endpoints included")
    bn_data: Literal["clean", "adversarial"] = setting(
        "clean", help="images used to recompute batch-norm statistics at each t: clean, or PGD "
                      "examples against the network at t (2-3x slower per t)")
    bn_images: int = setting(2000, lo=1, help="training images for the BN statistics")
    attack: str = setting("pgd:steps=20", help="eval attack spec; alpha defaults to eps/4")
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
class PlaneConfig:
    """The plane through a curve's endpoints and bend, evaluated on a grid."""

    grid: int = setting(7, lo=2, hi=101, help="grid points per side (grid x grid networks)")
    margin: float = setting(0.2, lo=0, help="border around the endpoints and bend, as a "
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
class LayersConfig:
    groups: Literal["modules", "blocks"] = setting(
        "modules", help="modules: each conv/linear with its BN; blocks: whole residual blocks")
    points: int = setting(5, lo=3, hi=1001,
                          help="values of t per group, endpoints and 0.5 included")
    samples: int = setting(1000, lo=1, help="training images for losses and derivatives")
    batch_size: int = setting(250, lo=1)
    compare_align: bool = setting(False, help="report aligned and unaligned side by side")


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
class ObjectiveConfig:
    """What an endpoint is trained on, batch by batch."""

    name: str = setting("adversarial", choices=objectives,
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


@dataclass(frozen=True)
class BenchConfig:
    methods: list[str] = setting(["line", "line+align", "curve", "curve+align", "curve+pam"],
                                 help="line|curve, then +align and/or +pam")
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


# --- building -----------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, meta)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if meta.get("pixel"):
        return parse_pixel_value(value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{key}: expected an integer, got {value!r}")
        try:
            number = value if isinstance(value, int) else int(str(value))
        except ValueError:
            raise UserError(f"{key}: expected an integer, got {value!r}") from None
        if not -2**63 <= number < 2**63:  # seeds and counts are 64-bit integers in torch
            raise UserError(f"{key}: {value!r} does not fit in 64 bits")
        return number
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"{key}: expected a number, got {value!r}")
        try:
            out = float(Fraction(str(value))) if isinstance(value, str) else float(value)
        except (ValueError, ZeroDivisionError, TypeError, OverflowError):
            raise UserError(f"{key}: expected a finite number, got {value!r}") from None
        if not math.isfinite(out):
            raise UserError(f"{key}: expected a finite number, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is list or origin is list:
        if isinstance(value, str):  # from the command line: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list, got {value!r}")
        element = typing.get_args(tp)
        if not element:
            return list(value)
        return [_coerce(v, element[0], f"{key}[{i}]", {}) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if isinstance(value, str):  # from the command line: YAML or JSON
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise UserError(f"{key}: {value!r} is not a YAML mapping; write e.g. "
                                "'{depth: 16}'") from None
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    raise UserError(f"{key}: unsupported type {_type_name(tp)}")


def _check_range(value: Any, key: str, meta: dict) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo:
        raise UserError(f"{key}: {value} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise UserError(f"{key}: {value} is above the maximum {hi}")


def _check_choice(value: Any, key: str, choices: Callable[[], list[str]] | None) -> None:
    if choices is not None and value not in (valid := choices()):
        raise UserError(f"{key}: {value!r} is not one of {', '.join(valid)}")


def _build(cls: type[T], values: dict, prefix: str, default: Any = None) -> T:
    """Build ``cls`` from ``values``; fields not given keep ``default``'s value (the field's
    default_factory instance for nested sections) or the class default."""
    if not isinstance(values, dict):
        raise UserError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise UserError(f"unknown config key '{prefix}{unknown[0]}'; known keys here: "
                        f"{', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            inner = getattr(default, name) if default is not None else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            kwargs[name] = _build(tp, values.get(name) or {}, key + ".", inner)  # type: ignore
        elif name in values:
            value = _coerce(values[name], tp, key, dict(f.metadata))
            _check_range(value, key, dict(f.metadata))
            _check_choice(value, key, f.metadata.get("choices"))
            kwargs[name] = value
        elif default is not None:
            kwargs[name] = getattr(default, name)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def find_preset(name: str) -> Path:
    """Resolve ``--config``: a YAML path, or the name of a preset shipped in ``configs/``."""
    path = Path(name)
    if path.is_file():
        return path
    stem = name[:-5] if name.endswith(".yaml") else name
    preset = resources.files("configs").joinpath(f"{Path(stem).name}.yaml")
    if preset.is_file():
        return Path(str(preset))
    available = sorted(p.name[:-5] for p in resources.files("configs").iterdir()
                       if p.name.endswith(".yaml"))
    raise UserError(f"config file {name!r} not found; give a YAML path or one of the presets: "
                    f"{', '.join(available)}")


def load_yaml(path: str | Path) -> dict:
    try:
        text = check_regular_file(path, f"config {path}").read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"config {path} is not UTF-8 text; save it as UTF-8") from None
    try:
        data = check_bounded(yaml.safe_load(text), f"config {path}")
    except yaml.YAMLError as exc:
        raise UserError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"config {path} nests deeper than Python can read; a configuration "
                        "has sections and settings, two or three levels deep") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def build_config(cls: type[T], yaml_file: str | None = None,
                 overrides: dict[str, Any] | None = None, base: dict | None = None) -> T:
    """Defaults < ``base`` (e.g. from a checkpoint) < YAML file < dotted CLI overrides."""
    tree: dict = {}
    for source in (base or {}), (load_yaml(find_preset(yaml_file)) if yaml_file else {}):
        for dotted, value in flatten(source).items():
            _set_dotted(tree, dotted, value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, dotted, value)
    return _build(cls, tree, "")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; mappings inside a ``kwargs`` key stay whole."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "kwargs":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def to_dict(config: Any) -> dict:
    """The resolved configuration as plain values (for JSON, YAML and checkpoints)."""
    return dataclasses.asdict(config)


def settings_that_may_change(cls: type) -> set[str]:
    """The dotted keys of ``cls``'s settings marked ``may_change`` (see :func:`setting`)."""
    hints = typing.get_type_hints(cls)
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        inner = hints[f.name]
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            keys |= {f"{f.name}.{k}" for k in settings_that_may_change(inner)}
        elif f.metadata.get("may_change"):
            keys.add(f.name)
    return keys


@dataclass(frozen=True)
class SettingInfo:
    """What the command line needs to offer one setting: its type, default (in the run config
    that holds it), help text and valid values."""

    key: str
    type: Any
    default: Any
    help: str
    choices: list[str] | None
    pixel: bool


def describe_setting(cls: type, key: str) -> SettingInfo:
    """The setting at dotted ``key`` of the run config ``cls``, its default as ``cls`` sets it
    (an unknown key raises ``KeyError``)."""
    *sections, name = key.split(".")
    owner: Any = cls
    defaults: Any = cls()
    for section in sections:
        owner = typing.get_type_hints(owner)[section]
        defaults = getattr(defaults, section)
    field_ = {f.name: f for f in dataclasses.fields(owner)}[name]
    tp = typing.get_type_hints(owner)[name]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    meta = field_.metadata
    if typing.get_origin(tp) is Literal:
        valid: list[str] | None = [str(v) for v in typing.get_args(tp)]
    else:
        valid = meta["choices"]() if meta.get("choices") else None
    return SettingInfo(key, tp, getattr(defaults, name), meta.get("help", ""), valid,
                       bool(meta.get("pixel")))
