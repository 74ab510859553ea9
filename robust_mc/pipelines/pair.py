"""Two endpoints to be aligned or connected: their files loaded and checked against each other
and the data (:class:`Pair`), and their networks as a path joins them (:class:`Endpoints`: a, and
b as connected, aligned to a unless --no-align and moved by PAM, with b as given beside it)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property

import torch

from robust_mc.config import ConnectRunConfig
from robust_mc.core.curves import Curve
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.rotation_align import StreamMaps, unmap_state
from robust_mc.core.spec import load_weights
from robust_mc.data import Data
from robust_mc.errors import UserError
from robust_mc.models import Classifier
from robust_mc.models.robustbench import is_robustbench
from robust_mc.pipelines.alignment import align_models
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import Checkpoint, LoadOptions, state_digest
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_model
from robust_mc.store.records import CurveRun, PamHistory
from robust_mc.train.learned_maps import describe_learned


@dataclass
class Pair:
    a: Checkpoint
    b: Checkpoint

    @cached_property
    def digests(self) -> dict[str, str]:
        """The endpoints' weight digests, computed once: a saved run continues, and a finished
        one is read back, only between the same weights."""
        return {"a": state_digest(self.a.state_dict), "b": state_digest(self.b.state_dict)}

    def models(self) -> tuple[Classifier, Classifier]:
        return build_model(self.a), build_model(self.b)

    def config_base(self, keep_attack: tuple[str, ...] | None = None) -> dict:
        return recorded_defaults(self.a, keep_attack)

    def describe(self) -> list[str]:
        return [self.a.describe(), self.b.describe()]

    def check_data(self, data: Data) -> None:
        check_fits_data(self.a, data)
        check_fits_data(self.b, data)


def check_fits_data(ckpt: Checkpoint, data: Data) -> None:
    """The checkpoint's classes and input channels match the dataset's. A foreign checkpoint
    that records no shape takes the dataset's (classes, channels, image size)."""
    info = data.info
    for key, value in (("num_classes", info.num_classes), ("in_channels", info.in_channels),
                       ("image_size", info.image_size)):
        ckpt.arch_kwargs.setdefault(key, value)  # what the user gave is kept, and checked
    if ckpt.num_classes != data.info.num_classes:
        raise UserError(f"{ckpt.path} has {ckpt.num_classes} classes but {data.info.name} "
                        f"has {data.info.num_classes}; choose the dataset it was trained on "
                        "with --dataset")
    channels = ckpt.arch_kwargs["in_channels"]
    if channels != data.info.in_channels:
        raise UserError(f"{ckpt.path} takes {channels}-channel images but {data.info.name} "
                        f"has {data.info.in_channels}; choose its dataset with --dataset")
    if len(ckpt.normalization.mean) not in (1, channels):
        raise UserError(f"{ckpt.path}: its normalization has {len(ckpt.normalization.mean)} "
                        f"channels but the network takes {channels}; pass --normalization with "
                        "one mean and std per channel (or one for all), e.g. none")


def same_zoo_architecture(a: Checkpoint, b: Checkpoint) -> bool:
    """Two RobustBench zoo entries built by one architecture (many entries share one, trained
    by different methods): the same parameter and buffer names with the same shapes."""
    if not (is_robustbench(a.arch) and is_robustbench(b.arch)):
        return False
    return {k: tuple(v.shape) for k, v in a.state_dict.items()} == {
        k: tuple(v.shape) for k, v in b.state_dict.items()}


def load_pair(path_a: str, path_b: str, options: LoadOptions | None = None) -> Pair:
    """Two endpoint files of one architecture, shape and normalization, read as ``options``
    (the user's ``--arch``, ``--trust-code``, ...) allow."""
    a, b = (load_checkpoint(path, options) for path in (path_a, path_b))
    check_same_network(a, b, "connect")
    return Pair(a, b)


def check_same_network(a: Checkpoint, b: Checkpoint, verb: str) -> None:
    """``a`` and ``b`` are networks of one architecture, shape and normalization, as two
    networks must be to be aligned and joined; ``verb`` says what the user is doing with
    them."""
    if a.arch != b.arch and not same_zoo_architecture(a, b):
        raise UserError(f"{a.path} and {b.path} have different architectures ({a.arch} vs "
                        f"{b.arch}); {verb} networks of one architecture")
    kwargs_a, kwargs_b = ({**c.arch_kwargs, **c.model_kwargs} for c in (a, b))
    if kwargs_a != kwargs_b:
        diff = sorted(k for k in set(kwargs_a) | set(kwargs_b)
                      if kwargs_a.get(k) != kwargs_b.get(k))
        raise UserError(f"{a.path} and {b.path} differ in {diff[0]} ({kwargs_a.get(diff[0])} "
                        f"vs {kwargs_b.get(diff[0])}); {verb} networks of one shape")
    if not a.normalization.same_as(b.normalization):
        raise UserError(f"{a.path} and {b.path} normalize their inputs differently; {verb} "
                        "networks trained on the same dataset")


def recorded_defaults(ckpt: Checkpoint, keep_attack: tuple[str, ...] | None = None) -> dict:
    """Defaults taken from an endpoint's recorded training: its dataset, the augmentation it
    was trained with (a curve trained on flipped digits that its ends never saw cannot join
    them) and its attack (only the ``keep_attack`` keys of it, when given)."""
    config = ckpt.meta.config
    base: dict = {}
    if isinstance(config.get("data"), dict):
        base["data"] = {k: v for k, v in config["data"].items()
                        if k in ("dataset", "data_dir", "val_size", "val_seed", "augment")}
    elif ckpt.dataset:
        base["data"] = {"dataset": ckpt.dataset}
    if isinstance(config.get("attack"), dict):
        base["attack"] = {k: v for k, v in config["attack"].items()
                          if keep_attack is None or k in keep_attack}
    return base


@dataclass
class Endpoints:
    a: Classifier
    b: Classifier  # as connected
    b_original: Classifier  # as given
    alignment: dict | None = None  # the alignment report (Alignment.as_dict())
    permutation: dict[str, list[int]] | None = None  # b as connected = b as given permuted so
    pam: PamHistory | None = None  # PAM's permutation updates, when it ran
    maps: StreamMaps | None = None  # and then rotated so (the alignment's maps beyond it)


def prepare_endpoints(pair: Pair, cfg: ConnectRunConfig, data: Data, runtime: Runtime,
                      reporter: Reporter) -> Endpoints:
    """The pair's networks on the device, b aligned to a unless ``cfg.aligned`` is off."""
    model_a, model_b = (runtime.prepare(m) for m in pair.models())
    if not cfg.aligned:
        return Endpoints(model_a, model_b, model_b)
    result = align_models(model_a, model_b, data.train, cfg.align, cfg.attack, runtime,
                          maps="permutations" if cfg.pam.enabled else None)
    report = result.alignment.as_dict()
    if (note := result.spec.left_alone(model_a)) is not None:
        reporter.print(note)
    reporter.print(f"aligned b to a ({cfg.align.method}, {cfg.align.inputs} inputs): mean unit "
                   f"correlation {report['mean_corr_before']:.3f} -> "
                   f"{report['mean_corr_after']:.3f}, function error "
                   f"{result.function_error:.1e}")
    if result.maps:
        rotated = [s for s in result.alignment.spaces if s.angle is not None]
        reporter.print(f"  rotated {len(rotated)} spaces beyond their permutation "
                       f"({', '.join(sorted({s.map for s in rotated}))}); "
                       f"{len(result.alignment.plan.refused)} keep permutations only")
    if (learned := result.alignment.learned) is not None:
        reporter.print(f"  {describe_learned(learned)}")
    return Endpoints(model_a, result.model_b, model_b,
                     {**report, "function_error": result.function_error},
                     {k: v.tolist() for k, v in result.alignment.perm.items()},
                     maps=result.maps or None)


def endpoints_from_run(run: CurveRun, runtime: Runtime, example: torch.Tensor) -> Endpoints:
    """The endpoints a saved curve joins, with b as given recovered from the permutation."""
    model_a, model_b = (runtime.prepare(build_model(c)) for c in run.checkpoints())
    b_original = undo_alignment(model_a, model_b, example, run.permutation, run.maps)
    return Endpoints(model_a, model_b, b_original, run.alignment, run.permutation, run.pam,
                     run.maps)


def undo_alignment(model_a: Classifier, model_b: Classifier, example: torch.Tensor,
                   permutation: dict[str, list[int]] | None,
                   maps: StreamMaps | None = None) -> Classifier:
    """b as it was given, from b aligned and the recorded permutation and maps (b itself if
    none)."""
    if not permutation and not maps:
        return model_b
    original = copy.deepcopy(model_b)
    spec = trace_permutation_spec(model_a, example, partial=True)  # as recorded: any spec
    perm = {k: torch.tensor(v) for k, v in (permutation or {}).items()}
    load_weights(original, unmap_state(model_b.state_dict(), spec, perm, maps))
    return original


def make_curve(kind: str, endpoints: Endpoints, bends: int, runtime: Runtime,
               b: Classifier | None = None) -> Curve:
    """A ``kind`` curve from a to b as connected (or to ``b``), its bends on the line."""
    other = endpoints.b if b is None else b
    return Curve.between(kind, endpoints.a, endpoints.a.state_dict(), other.state_dict(),
                         bends).to(runtime.device)
