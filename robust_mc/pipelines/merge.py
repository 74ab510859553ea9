"""`robust-mc merge a.pt b.pt c.pt ... -o merged.pt`: several robust endpoints of one
architecture as one network. The members are put in one frame (:mod:`merge_frames`), averaged
with the merge weights, their average's statistics set as along a path (batch norm recomputed,
then with ``--repair repair`` every unit's moments repaired to the members' average), and the
merge measured beside each member, their unaligned average and their ensemble."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from robust_mc.config import MergeRunConfig, to_dict
from robust_mc.core.merge import check_weights, uniform_weights
from robust_mc.data import Data, as_float
from robust_mc.errors import UserError
from robust_mc.evaluation.path import path_attack
from robust_mc.evaluation.robustness import Metrics, evaluate_seeded
from robust_mc.models import Classifier
from robust_mc.models.ensemble import Ensemble
from robust_mc.pipelines.merge_barriers import member_barriers
from robust_mc.pipelines.merge_finetune import finetune, finetune_state_path
from robust_mc.pipelines.merge_frames import (
    Aligner,
    Framed,
    FrameRound,
    as_given,
    averaged,
    consensus_frame,
    pairwise_frame,
    reference_frame,
)
from robust_mc.pipelines.merge_select import SelectionStep, greedy_weights
from robust_mc.pipelines.merge_statistics import settled
from robust_mc.pipelines.merge_verify import verify_models
from robust_mc.pipelines.pair import check_fits_data, check_same_network
from robust_mc.report.merge import Contender
from robust_mc.run import distributed
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import Checkpoint, LoadOptions, state_digest
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.meta import (
    CheckpointMeta,
    MergeMemberRecord,
    MergeRecord,
    MergeRoundRecord,
    MergeSelectionRecord,
    RecordedMetrics,
)
from robust_mc.store.model_building import build_model


def load_members(paths: Sequence[str], options: LoadOptions | None = None) -> list[Checkpoint]:
    """The members' files: at least two, of one architecture, shape and normalization, each
    trained against an attack where its file says how it was trained."""
    if len(paths) < 2:
        raise UserError("merge needs at least two models; give two or more files")
    members = [load_checkpoint(path, options) for path in paths]
    for member in members[1:]:
        check_same_network(members[0], member, "merge")
    for member in members:
        attack = member.meta.config.get("attack")
        if isinstance(attack, dict) and (attack.get("steps") == 0 or attack.get("eps") == 0):
            raise UserError(f"{member.path} was trained on clean images (no attack); merge "
                            "robust models (trained with --attack-steps above 0)")
    return members


@dataclass
class MergeResult:
    merged: Classifier  # the final stage
    framed: Framed
    weights: list[float]
    contenders: list[Contender]
    checkpoint: Checkpoint
    state_path: Path | None = None  # the fine-tune's resumable state, removed once written


def merge_weights(cfg: MergeRunConfig, members: int) -> list[float]:
    """The merge weights (equal unless given), checked; also refuses settings that cannot
    work together, before any work."""
    if cfg.merge.barrier_points == 1:
        raise UserError("merge.barrier_points: 1 value of t measures no line; give 0 (none) "
                        "or at least 2")
    if cfg.merge.select == "greedy" and cfg.merge.weights:
        raise UserError("--merge-select greedy chooses the weights; drop --merge-weights, or "
                        "use --merge-select all")
    try:
        return check_weights(cfg.merge.weights or uniform_weights(members), members)
    except ValueError as exc:
        raise UserError(f"--merge-weights: {exc}") from None


def run_merge(checkpoints: Sequence[Checkpoint], cfg: MergeRunConfig, data: Data,
              runtime: Runtime, reporter: Reporter, argv: list[str] | None = None,
              out: Path | None = None, stop: StopSignals | None = None) -> MergeResult:
    """Align, average, settle the statistics of, fine-tune and measure the merge of
    ``checkpoints``; the fine-tune keeps its resumable state beside ``out``."""
    say = reporter.print
    for ckpt in checkpoints:
        check_fits_data(ckpt, data)
    weights = merge_weights(cfg, len(checkpoints))
    models = [build_model(c) for c in checkpoints]
    runtime.settle(models[0], as_float(data.train.images[:1]))
    for model in models[1:]:
        runtime.prepare(model)
    say(f"[bold]merge[/] {len(models)} members on {data.info.name}; {runtime.summary()}")
    attack = path_attack(cfg.path, cfg.attack, data.info.num_classes)
    test = data.test.take(cfg.path.test_limit).to(runtime.device)

    def measured(model: nn.Module) -> Metrics:
        return evaluate_seeded(model, test, attack, runtime, cfg.path.batch_size, cfg.path.seed)

    framed, stages = _framed(models, weights, cfg, data, runtime, say)
    selection: list[SelectionStep] = []
    if cfg.merge.select == "greedy":
        weights, selection = greedy_weights(framed.members, cfg, data, runtime, say)
    merged_stages = settled(averaged(framed.members[0], framed.members, weights),
                            framed.members, weights, cfg, data, runtime)
    stages.update(dict(merged_stages))
    size = sum(p.numel() for p in models[0].parameters())
    contenders = _baselines(models, measured, size)
    figures = distributed.group().map(measured, list(stages.values()))
    contenders += [Contender(name, m, size, 1) for name, m in zip(stages, figures, strict=True)]
    merged = merged_stages[-1][1]
    state_path, trained = None, {}
    if cfg.merge.finetune_epochs:
        merged = copy.deepcopy(merged)
        state_path = finetune_state_path(out, merged) if out is not None else None
        merged, metrics, train_cfg = finetune(merged, checkpoints[0], cfg, data, runtime,
                                              reporter, state_path, stop)
        contenders.append(Contender("merge + fine-tune", metrics, size, 1))
        trained = to_dict(train_cfg)
    barriers = (member_barriers(framed.members, merged, cfg, data, runtime)
                if cfg.merge.barrier_points else None)
    if barriers is not None:
        contenders[:len(models)] = [replace(c, barrier=b)
                                    for c, b in zip(contenders, barriers, strict=False)]
    elif cfg.merge.barrier_points:
        say("no barriers to the merge: repair gave a layer a bias its members lack")
    if cfg.verify.enabled:
        contenders = _verified(contenders, models, merged, cfg, data, runtime)
    record = MergeRecord(
        members=[MergeMemberRecord(c.path, state_digest(c.state_dict), w)
                 for c, w in zip(checkpoints, weights, strict=True)],
        frame=cfg.merge.frame if cfg.aligned else "as given", reference=framed.reference,
        rounds=[MergeRoundRecord(r.round, r.agreement, r.changed) for r in framed.rounds],
        align={"method": cfg.align.method, "inputs": cfg.align.inputs,
               "maps": cfg.align.map_class()},
        repair=cfg.path.repair, repair_inputs=cfg.path.repair_inputs,
        function_error=framed.function_error, finetune=trained, barriers=barriers or [],
        selection=[MergeSelectionRecord(s.member, s.val_robust_acc, s.kept)
                   for s in selection])
    meta = CheckpointMeta(kind="merged", dataset=cfg.data.dataset, config=to_dict(cfg),
                          metrics=RecordedMetrics(test=contenders[-1].metrics,
                                                  eval_attack=cfg.path.attack,
                                                  eps=cfg.attack.eps),
                          objective=checkpoints[0].meta.objective,
                          record=run_record(argv), merge=record)
    return MergeResult(merged, framed, weights, contenders,
                       checkpoints[0].with_weights(merged, meta), state_path)


def _framed(models: list[Classifier], weights: list[float], cfg: MergeRunConfig, data: Data,
            runtime: Runtime, say: Callable[[str], None]
            ) -> tuple[Framed, dict[str, Classifier]]:
    """The members in one frame (as given with ``--no-align``), and the unaligned average at
    its last stage, the baseline the aligned merge is judged by (none without alignment: the
    merge is that average)."""
    if not cfg.aligned:
        framed = as_given(models, weights)
        say(f"no alignment: agreement {framed.rounds[0].agreement:.3f}")
        return framed, {}
    reference = _reference(models, cfg, data, runtime, say)
    framed = _frame(models, weights, reference, cfg, data, runtime, say)
    say(f"frame: {cfg.merge.frame}, agreement {framed.rounds[0].agreement:.3f} -> "
        f"{framed.rounds[-1].agreement:.3f}, largest change of a member's logits by its maps "
        f"{framed.function_error:.1e}")
    unaligned = settled(averaged(models[0], models, weights), models, weights, cfg, data,
                        runtime)[-1][1]
    return framed, {"unaligned average": unaligned}


def _baselines(models: list[Classifier], measured: Callable[[nn.Module], Metrics],
               size: int) -> list[Contender]:
    """Each member, the best of them and their ensemble, measured."""
    contenders = [Contender(f"member {i + 1}", m, size, 1) for i, m in enumerate(
        distributed.group().map(measured, models))]
    best = max(contenders, key=lambda c: (c.metrics.robust_acc, -c.metrics.robust_loss))
    contenders.append(replace(best, name=f"best member ({best.name.split()[-1]})"))
    contenders.append(Contender(f"ensemble of {len(models)}", measured(Ensemble(models)),
                                size * len(models), len(models)))
    return contenders


def _verified(contenders: list[Contender], models: list[Classifier], merged: Classifier,
              cfg: MergeRunConfig, data: Data, runtime: Runtime) -> list[Contender]:
    """The contenders with AutoAttack and the checks on each member, their ensemble and the
    final merge."""
    ensemble = next(c.name for c in contenders if c.name.startswith("ensemble"))
    chosen: list[tuple[str, nn.Module]] = [(f"member {i + 1}", m) for i, m in enumerate(models)]
    chosen += [(ensemble, Ensemble(models)), (contenders[-1].name, merged)]
    points = verify_models(chosen, cfg, data, runtime)
    best = next(c for c in contenders if c.name.startswith("best member"))
    # the best member's row is a copy of its member's (the same figures): the same verification
    points[best.name] = points[next(c.name for c in contenders[:len(models)]
                                    if c.metrics is best.metrics)]
    return [replace(c, verified=points.get(c.name)) for c in contenders]


def _reference(models: list[Classifier], cfg: MergeRunConfig, data: Data, runtime: Runtime,
               say: Callable[[str], None]) -> int:
    """The member the others are aligned to first: the first, or the most robust on the
    validation images."""
    if cfg.merge.reference == "first":
        return 0
    if len(data.val) == 0:
        raise UserError("--merge-reference robust chooses on the validation split, which is "
                        "empty; set --val-size above 0 or use --merge-reference first")
    val = data.val.take(cfg.path.val_limit).to(runtime.device)
    attack = path_attack(cfg.path, cfg.attack, data.info.num_classes)
    figures = distributed.group().map(lambda m: evaluate_seeded(
        m, val, attack, runtime, cfg.path.batch_size, cfg.path.seed), models)
    best = max(range(len(models)), key=lambda i: (figures[i].robust_acc, -i))
    say(f"reference: member {best + 1} ({figures[best].robust_acc:.1f}% robust on "
        f"{len(val)} validation images)")
    return best


def _frame(models: list[Classifier], weights: list[float], reference: int,
           cfg: MergeRunConfig, data: Data, runtime: Runtime,
           say: Callable[[str], None]) -> Framed:
    align = Aligner(data.train, cfg.align, cfg.attack, runtime)

    def show(r: FrameRound) -> None:
        moved = ", ".join(str(i + 1) for i in r.changed) or "none"
        say(f"  round {r.round}: agreement {r.agreement:.4f} (moved: {moved})")

    if cfg.merge.frame == "reference":
        return reference_frame(models, weights, reference, align)
    if cfg.merge.frame == "consensus":
        return consensus_frame(models, weights, reference, align, cfg.merge.rounds, show)
    return pairwise_frame(models, weights, align, show)
