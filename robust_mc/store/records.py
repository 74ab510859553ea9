"""Typed records of a connect run's state and the file that holds it.

``CurveRun`` is ``curve.pt`` (the resumable state: curve, endpoints, alignment, optimizer,
position, random generators); ``PathLabel`` names a path; :func:`open_model_file` is the one
opener of what a command is given. ``summary.json`` is :mod:`robust_mc.store.path_summary`'s.
Every reader goes through them, with ``to_state()``/``from_state()`` as the only place that
knows the files' keys; files written by earlier versions of the same format load (missing
optional fields take their defaults).

Example::

    run = CurveRun.read(Path("runs/r20/curve.pt"))
    a, b = run.checkpoints()            # the endpoints as connected (b aligned)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robust_mc.core.curves import CURVES, Curve, has_bends
from robust_mc.core.rotation_align import StreamMaps
from robust_mc.data import Normalization
from robust_mc.errors import UserError
from robust_mc.models.huggingface import is_model_dir
from robust_mc.run.files import atomic_torch_save
from robust_mc.store.checkpoint import Checkpoint, LoadOptions, plain
from robust_mc.store.checkpoint_files import (
    checked_meta,
    checked_model_kwargs,
    checked_state_dict,
    checkpoint_from_object,
    load_checkpoint,
    malformed,
    read_checkpoint_file,
    read_torch_file,
    recorded_architecture,
)
from robust_mc.store.meta import CheckpointMeta
from robust_mc.store.typed import write_record
from robust_mc.train.loop import Position

CURVE_FORMAT = "robust-mc-curve/1"
ENDS = ("a", "b")


@dataclass(frozen=True)
class PathLabel:
    """What a path is: its curve kind (``line`` for the straight line) and whether b was
    aligned to a. Shown as ``bezier (aligned)``; never parsed for meaning except to read files
    that store it as text."""

    kind: str
    aligned: bool

    def __str__(self) -> str:
        return f"{self.kind} ({'aligned' if self.aligned else 'unaligned'})"

    @property
    def is_line(self) -> bool:
        return self.kind in CURVES and not has_bends(self.kind)

    @classmethod
    def parse(cls, text: str) -> PathLabel:
        kind, _, rest = text.partition(" (")
        return cls(kind, rest.startswith("aligned"))


@dataclass
class PamHistory:
    """PAM's permutation updates of b: the permutation it started from, each update's share of
    units re-matched per space, and the share moved from the start."""

    start: dict[str, list[int]] | None
    updates: list[dict[str, Any]] = field(default_factory=list)  # after_epoch, moved
    moved_from_start: dict[str, float] | None = None

    def to_state(self) -> dict[str, Any]:
        return {"start": self.start, "updates": self.updates,
                "moved_from_start": self.moved_from_start}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> PamHistory | None:
        if state is None:
            return None
        if not isinstance(state, dict) or not isinstance(state.get("updates") or [], list):
            raise ValueError("pam must be a mapping with a list of updates")
        return cls(state.get("start"), list(state.get("updates") or []),
                   state.get("moved_from_start"))


@dataclass
class CurveRun:
    """``curve.pt``: enough to resume training or re-evaluate without the endpoint files.
    Endpoint states use the architecture's own names, as native checkpoints do; b's is b as
    connected (aligned, and moved by PAM)."""

    curve: Curve
    arch: str
    arch_kwargs: dict[str, Any]
    model_kwargs: dict[str, Any]
    normalization: Normalization
    endpoint_states: dict[str, dict[str, torch.Tensor]]
    config: dict[str, Any]
    endpoint_meta: dict[str, CheckpointMeta] = field(default_factory=dict)
    endpoint_paths: dict[str, str | None] = field(default_factory=dict)
    endpoint_digests: dict[str, str] = field(default_factory=dict)
    permutation: dict[str, list[int]] | None = None  # b as connected = b as given permuted so
    alignment: dict[str, Any] | None = None  # the alignment report (Alignment.as_dict())
    pam: PamHistory | None = None
    position: Position | None = None  # None: written by a version that could not resume
    optimizer: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per curve epoch
    maps: StreamMaps | None = None  # b as connected = b as given permuted, then mapped so
    options: LoadOptions = field(default_factory=LoadOptions, compare=False, repr=False)
    path: Path | None = field(default=None, compare=False)  # the curve.pt it was read from

    def checkpoints(self) -> tuple[Checkpoint, Checkpoint]:
        """The endpoints as connected, as checkpoints that ``build_model`` builds."""
        return tuple(  # type: ignore[return-value]
            Checkpoint(self.arch, dict(self.arch_kwargs), self.endpoint_states[end],
                       self.normalization, self.endpoint_meta.get(end) or CheckpointMeta(),
                       self.endpoint_paths.get(end), model_kwargs=dict(self.model_kwargs),
                       trust=self.options.code)
            for end in ENDS)

    def to_state(self) -> dict[str, Any]:
        position = self.position
        return {"format": CURVE_FORMAT, "curve": self.curve.state(), "arch": self.arch,
                "arch_kwargs": self.arch_kwargs, "model_kwargs": self.model_kwargs,
                "normalization": write_record(self.normalization),
                "endpoint_states": self.endpoint_states,
                "endpoint_meta": {end: plain(write_record(meta))
                                  for end, meta in self.endpoint_meta.items()},
                "endpoints": self.endpoint_paths, "endpoint_digests": self.endpoint_digests,
                "permutation": self.permutation, "alignment": self.alignment,
                "pam": self.pam.to_state() if self.pam is not None else None,
                "config": self.config, "dataset": (self.config.get("data") or {}).get("dataset"),
                "epoch": position.epoch if position is not None else None,
                "position": position.state() if position is not None else None,
                "optimizer": self.optimizer, "rng": self.rng, "history": self.history,
                "maps": self.maps.to_state() if self.maps else None}

    def write(self, path: Path) -> Path:
        return atomic_torch_save(self.to_state(), path)

    @classmethod
    def from_state(cls, obj: Any, source: Path, options: LoadOptions | None = None) -> CurveRun:
        """A curve.pt already read, every field checked; its architecture allowed only as
        ``options`` (the user's) allow."""
        options = options or LoadOptions()
        if not is_curve_state(obj):
            raise UserError(f"{source} is not a robust-mc curve (expected format {CURVE_FORMAT})")
        arch, arch_kwargs, normalization = recorded_architecture(obj, source, options)
        states = obj.get("endpoint_states")
        if not isinstance(states, dict):
            raise malformed(source, "'endpoint_states' must hold the states of a and b")
        metas, paths = obj.get("endpoint_meta") or {}, obj.get("endpoints") or {}
        if not isinstance(metas, dict) or not isinstance(paths, dict):
            raise malformed(source, "'endpoint_meta' and 'endpoints' must be mappings")
        if not isinstance(obj.get("config"), dict):
            raise malformed(source, "'config' must be the run's configuration (a mapping)")
        permutation = obj.get("permutation")
        if permutation is not None and not (isinstance(permutation, dict) and all(
                isinstance(v, list) and all(type(i) is int for i in v)
                and sorted(v) == list(range(len(v))) for v in permutation.values())):
            raise malformed(source, "'permutation' must map spaces to permutations of their "
                                    "units (each index once)")
        for key, kind in (("optimizer", dict), ("rng", dict), ("alignment", dict),
                          ("pam", dict), ("history", list), ("endpoint_digests", dict)):
            if obj.get(key) is not None and not isinstance(obj[key], kind):
                raise malformed(source, f"{key!r} must be a {kind.__name__} or absent")
        endpoint_states = {end: checked_state_dict(states.get(end), source,
                                                   f"endpoint_states.{end}") for end in ENDS}
        try:
            maps = StreamMaps.from_state(obj["maps"]) if obj.get("maps") is not None else None
        except ValueError as exc:
            raise malformed(source, str(exc)) from None
        try:
            curve = Curve.from_state(obj.get("curve"))  # type: ignore[arg-type]
            position = (Position.from_state(obj["position"]) if obj.get("position") is not None
                        else None)
            pam = PamHistory.from_state(obj.get("pam"))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
            reason = f" ({exc})" if isinstance(exc, ValueError) else ""
            raise malformed(source, f"'curve', 'position' or 'pam' is not what robust-mc "
                                    f"wrote{reason}") from None
        for name, shape in zip(curve.names, curve.shapes, strict=True):
            weights = endpoint_states["a"].get(name.removeprefix("net."))
            if weights is None or tuple(weights.shape) != shape:
                raise malformed(source, f"the curve's parameter {name} {list(shape)} is not one "
                                        "of the endpoints' (names and shapes must agree)")
        return cls(curve, arch, arch_kwargs, checked_model_kwargs(obj, source), normalization,
                   endpoint_states, obj["config"],
                   {end: checked_meta(metas.get(end) or {}, source) for end in ENDS},
                   {end: p if isinstance(p := paths.get(end), str) else None for end in ENDS},
                   dict(obj.get("endpoint_digests") or {}), permutation, obj.get("alignment"),
                   pam, position, obj.get("optimizer"), obj.get("rng"),
                   list(obj.get("history") or []), maps, options, source)

    @classmethod
    def read(cls, path: Path, options: LoadOptions | None = None) -> CurveRun:
        """curve.pt, read weights-only and checked (see :meth:`from_state`)."""
        if not path.is_file():
            raise UserError(f"{path} not found; give a run directory holding curve.pt, or "
                            "curve.pt")
        options = options or LoadOptions()
        return cls.from_state(read_torch_file(path, options.unpickle), path, options)


def is_curve_state(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CURVE_FORMAT


def open_model_file(source: str | Path, options: LoadOptions | None = None
                    ) -> Checkpoint | CurveRun:
    """The one way a command opens what it was given, read once and checked: a connect run
    directory or its curve.pt (a :class:`CurveRun`); a model or ensemble checkpoint, robust-mc's
    or another tool's (a :class:`Checkpoint`), a Hugging Face model directory; or
    ``robustbench:<dataset>/<threat>/<Name>`` with its weights in ``options.model_dir``."""
    options = options or LoadOptions()
    if str(source).startswith("robustbench:"):
        return load_checkpoint(str(source), options)
    path = Path(source)
    if is_model_dir(path):
        return load_checkpoint(path, options)
    if path.is_dir():
        return CurveRun.read(path / "curve.pt", options)
    obj = read_checkpoint_file(path, options.unpickle)
    if is_curve_state(obj):
        return CurveRun.from_state(obj, path, options)
    return checkpoint_from_object(obj, path, options, allow_ensemble=True)
