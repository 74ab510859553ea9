"""What a checkpoint records about its network beside the weights (its ``meta``), as typed
records: how it was trained, what it measured, where it came from. Written and read with
:mod:`robust_mc.store.typed`; every field is optional, so files of every earlier version load."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from robust_mc.evaluation.robustness import Metrics
from robust_mc.store.typed import read_record

Kind = Literal["endpoint", "on-path", "ensemble", "merged"]


@dataclass(frozen=True)
class RecordedMetrics:
    """The network's figures when it was written: test (and validation) clean and robust
    loss/accuracy under ``eval_attack`` at radius ``eps``."""

    test: Metrics | None = None
    val: Metrics | None = None
    eval_attack: str | None = None
    eps: float | None = None


@dataclass(frozen=True)
class ObjectiveRecord:
    """What an endpoint was trained on (the train command's objective section)."""

    name: str = "adversarial"
    beta: float = 6.0
    ema: float | None = None
    awp: float | None = None
    awp_warmup: int = 0


@dataclass(frozen=True)
class RecipeRecord:
    """How an endpoint was optimised (the train command's optim section): what a curve between
    two endpoints follows by default (``pipelines/curve_optim.py``)."""

    optimizer: str
    lr: float  # peak learning rate
    weight_decay: float
    warmup_epochs: float = 0.0
    schedule: str = "piecewise"
    epochs: int = 0
    batch_size: int = 0
    momentum: float = 0.9  # SGD momentum; AdamW's beta1


@dataclass(frozen=True)
class EpochRecord:
    """One training epoch: its loss, speed and validation accuracies."""

    epoch: int
    loss: float
    train_acc: float
    images_per_s: float
    seconds: float
    val_clean_acc: float
    val_robust_acc: float


@dataclass(frozen=True)
class Timings:
    train_s: float
    images_per_s: float


@dataclass(frozen=True)
class AlignmentRecord:
    """How b was aligned to a (`robust-mc align`): the method, the per-space report, the
    permutation and the settings."""

    method: str
    inputs: str
    samples: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    spaces: list[dict[str, Any]] = field(default_factory=list)
    mean_corr_before: float | None = None
    mean_corr_after: float | None = None
    function_error: float | None = None
    a: str | None = None
    b: str | None = None
    left_alone: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    permutation: dict[str, list[int]] = field(default_factory=dict)
    map_class: str = "permutations"  # --align-maps, resolved
    maps: dict[str, Any] = field(default_factory=dict)  # rotations and folds, as tensors
    kept_permutations: dict[str, str] = field(default_factory=dict)  # spaces not rotated: why
    learned: dict[str, Any] | None = None  # the maps' training (--align-learn-steps)


@dataclass(frozen=True)
class MergeMemberRecord:
    """One member of a merge: its file, its weights' digest, its weight in the average."""

    path: str | None
    digest: str
    weight: float


@dataclass(frozen=True)
class MergeRoundRecord:
    """One round of the frame's search: the members' agreement after it, the members it moved."""

    round: int
    agreement: float
    changed: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class MergeSelectionRecord:
    """One step of a greedy soup: the member tried, the merge's validation robust accuracy with
    it, whether it was kept."""

    member: int
    val_robust_acc: float
    kept: bool


@dataclass(frozen=True)
class MergeRecord:
    """How a merged network was made (`robust-mc merge`): its members, the frame they were
    aligned to and how it was found, the alignment's settings, the statistics treatment."""

    members: list[MergeMemberRecord]
    frame: str
    reference: int = 0
    rounds: list[MergeRoundRecord] = field(default_factory=list)
    align: dict[str, Any] = field(default_factory=dict)  # method, inputs, map class
    repair: str = "reset"
    repair_inputs: str = "clean"
    function_error: float | None = None  # the largest change of a member's logits by its maps
    finetune: dict[str, Any] = field(default_factory=dict)  # the fine-tune's train settings
    barriers: list[float] = field(default_factory=list)  # each member's robust loss barrier
    selection: list[MergeSelectionRecord] = field(default_factory=list)  # --merge-select greedy


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's ``meta``. ``kind``: a trained endpoint, the best network on a path, an
    ensemble of path points, or endpoints merged into one; ``config``: the resolved settings
    of the run that wrote it (its command's run configuration, as written); ``source_format``
    and ``normalization_from``: a foreign file's, as it was read."""

    kind: Kind = "endpoint"
    dataset: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: RecordedMetrics | None = None
    objective: ObjectiveRecord | None = None
    recipe: RecipeRecord | None = None  # endpoint: how it was optimised
    history: list[EpochRecord] = field(default_factory=list)
    timings: Timings | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)  # provenance: command line, versions
    t: float | None = None  # on-path: where on the path
    endpoints: dict[str, str | None] | None = None  # on-path: the endpoint files
    members_t: list[float] | None = None  # ensemble: the members' t
    source: str | None = None  # ensemble: the run it was chosen from
    alignment: AlignmentRecord | None = None  # b aligned to a by `robust-mc align`
    merge: MergeRecord | None = None  # merged: how (`robust-mc merge`)
    source_format: Literal["robust-mc", "foreign"] = "robust-mc"
    normalization_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    @property
    def eps(self) -> float | None:
        return self.metrics.eps if self.metrics is not None else None

    def training_recipe(self) -> RecipeRecord | None:
        """How the network was optimised: the recorded recipe, or for an endpoint written
        before recipes were recorded, its training configuration's optim section (None when
        neither says, as for foreign files)."""
        if self.recipe is not None or self.kind != "endpoint":
            return self.recipe
        optim = self.config.get("optim")
        if not isinstance(optim, dict):
            return None
        known = {f.name for f in fields(RecipeRecord)}
        try:
            return read_record(RecipeRecord, {k: v for k, v in optim.items() if k in known},
                               "optim")
        except ValueError:
            return None
