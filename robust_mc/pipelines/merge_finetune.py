"""A merge's short robust fine-tune (`robust-mc merge --finetune-epochs K`): the merged network
trained further, as the first member was trained (its recorded attack, objective and optimizer),
for K epochs from its peak learning rate decayed to 0, resumably as `robust-mc train` is."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from robust_mc.config import MergeRunConfig, TrainRunConfig, build_config, flatten, to_dict
from robust_mc.data import Data
from robust_mc.evaluation.robustness import Metrics
from robust_mc.models import Classifier
from robust_mc.pipelines.endpoint_training import train_endpoint
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import Checkpoint, state_digest


def finetune_config(member: Checkpoint, cfg: MergeRunConfig) -> TrainRunConfig:
    """How the merge is fine-tuned: the member's recorded optimizer, objective and batch size
    (the defaults where its file does not say), the merge's data, attack, device and speed; a
    cosine schedule over ``merge.finetune_epochs`` from ``merge.finetune_lr`` (the member's
    peak learning rate unless given), evaluated as
    the merge is (its test images and attack)."""
    recipe = member.meta.training_recipe()
    objective = member.meta.objective
    values: dict = {**flatten({"data": to_dict(cfg.data), "attack": to_dict(cfg.attack),
                               "speed": to_dict(cfg.speed)}),
                    "device": cfg.device, "model.arch": member.arch,
                    "model.width": float(member.arch_kwargs.get("width", 1.0)),
                    "model.kwargs": dict(member.model_kwargs),
                    "optim.epochs": cfg.merge.finetune_epochs, "optim.schedule": "cosine",
                    "optim.warmup_epochs": 0.0, "optim.seed": cfg.path.seed,
                    "eval.attack": cfg.path.attack, "eval.batch_size": cfg.path.batch_size,
                    "eval.seed": cfg.path.seed}
    if recipe is not None:
        values.update({"optim.optimizer": recipe.optimizer, "optim.momentum": recipe.momentum,
                       "optim.weight_decay": recipe.weight_decay})
        if recipe.batch_size:
            values["optim.batch_size"] = recipe.batch_size
    if objective is not None:
        values.update({"objective.name": objective.name, "objective.beta": objective.beta})
    # by default the member's peak: on 4 digits CNNs, 2 epochs from 1, 0.4 and 0.1 times it
    # took the merge to 64.9, 56.0 and 51.0% robust (docs/merge.md)
    peak = recipe.lr if recipe is not None else TrainRunConfig().optim.lr
    values["optim.lr"] = cfg.merge.finetune_lr if cfg.merge.finetune_lr is not None else peak
    return build_config(TrainRunConfig, None, values)


def finetune_state_path(out: Path, merged: Classifier) -> Path:
    """Where the fine-tune of this merge keeps its resumable state: beside the output, named by
    the merged weights, so a state is continued only from the same merge."""
    digest = state_digest(merged.state_dict())[:8]
    return out.with_name(f"{out.stem}.finetune-{digest}.state.pt")


def finetune(merged: Classifier, member: Checkpoint, cfg: MergeRunConfig, data: Data,
             runtime: Runtime, reporter: Reporter, state_path: Path | None,
             stop: StopSignals | None = None) -> tuple[Classifier, Metrics, TrainRunConfig]:
    """``merged`` fine-tuned in place; its test figures (the merge's test images and attack)
    and the training settings."""
    train_cfg = finetune_config(member, cfg)
    test = replace(data, test=data.test.take(cfg.path.test_limit))
    reporter.print(f"[bold]fine-tune[/] the merge for {train_cfg.optim.epochs} epochs "
                   f"({train_cfg.optim.optimizer}, lr {train_cfg.optim.lr:g} cosine to 0, "
                   f"{train_cfg.objective.name} objective)")
    ckpt = train_endpoint(train_cfg, runtime, reporter, data=test, state_path=state_path,
                          stop=stop, start=merged)
    assert ckpt.meta.metrics is not None and ckpt.meta.metrics.test is not None
    return merged, ckpt.meta.metrics.test, train_cfg
