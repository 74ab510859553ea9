"""`robust-mc ensemble a.pt b.pt c.pt -k K`: the K of several endpoint files that together are
most robust, chosen greedily on the validation split as along a path, measured on the test split
beside each file and the ensemble of all, and written as an ensemble checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from robust_mc.config import ConnectRunConfig, EnsembleConfig, to_dict
from robust_mc.data import load_data
from robust_mc.errors import UserError
from robust_mc.evaluation.ensemble import greedy_select
from robust_mc.evaluation.path import path_attack
from robust_mc.evaluation.robustness import Metrics, evaluate_seeded
from robust_mc.models.ensemble import Ensemble
from robust_mc.pipelines.pair import check_fits_data, check_same_network
from robust_mc.run import distributed
from robust_mc.run.files import atomic_write_json, ensure_out_dir
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import Checkpoint, build_model, save_checkpoint
from robust_mc.store.meta import CheckpointMeta, RecordedMetrics


@dataclass
class FileEnsembleResult:
    """The chosen files, the selection rounds, and each contender's test figures (the chosen
    ensemble, each file, the ensemble of all)."""

    members: list[str]
    rounds: list[dict]
    test: dict[str, Metrics]

    def summary(self) -> dict:
        return {"members": self.members, "selection": self.rounds,
                "test": {name: m.as_dict() for name, m in self.test.items()}}


def check_ensemble_files(checkpoints: Sequence[Checkpoint], k: int) -> None:
    """Files one ensemble checkpoint can hold (one architecture, shape and normalization), and a
    size they can fill."""
    for ckpt in checkpoints[1:]:
        check_same_network(checkpoints[0], ckpt, "ensemble")
    if not 1 <= k <= len(checkpoints):
        raise UserError(f"-k {k}: choose between 1 and the {len(checkpoints)} models given")


def run_file_ensemble(checkpoints: Sequence[Checkpoint], cfg: ConnectRunConfig,
                      choice: EnsembleConfig, out: Path, runtime: Runtime, reporter: Reporter,
                      argv: list[str] | None = None) -> FileEnsembleResult:
    """Choose ``choice.k`` of ``checkpoints``; write ``ensemble.pt`` and ``ensemble.json`` into
    ``out``."""
    check_ensemble_files(checkpoints, choice.k)
    data = load_data(cfg.data)
    for ckpt in checkpoints:
        check_fits_data(ckpt, data)
    out = ensure_out_dir(out)
    models = [runtime.prepare(build_model(c)) for c in checkpoints]
    labels = [str(c.path) for c in checkpoints]
    path, attack = cfg.path, path_attack(cfg.path, cfg.attack, data.info.num_classes)
    val = data.val.take(path.val_limit).to(runtime.device)
    test = data.test.take(path.test_limit).to(runtime.device)
    if len(val) == 0:
        raise UserError("the ensemble is chosen on the validation split, which is empty; set "
                        "--val-size above 0")
    reporter.print(f"[bold]ensemble[/] of {choice.k} from {len(models)} models "
                   f"({choice.combine}), selected on validation robust accuracy ({path.attack})")
    selection = greedy_select(models, choice.k, val, attack, runtime,
                              batch_size=path.batch_size, seed=path.seed,
                              combine=choice.combine, reporter=reporter, labels=labels)
    chosen = [models[i] for i in selection.indices]
    contenders = {"ensemble": Ensemble(chosen, choice.combine),
                  **dict(zip(labels, models, strict=True)),
                  f"all {len(models)}": Ensemble(models, choice.combine)}
    figures = distributed.group().map(  # shared out on several processes
        lambda model: evaluate_seeded(model, test, attack, runtime, path.batch_size, path.seed),
        list(contenders.values()))
    result = FileEnsembleResult([labels[i] for i in selection.indices], selection.rounds,
                                dict(zip(contenders, figures, strict=True)))
    first = checkpoints[0]
    meta = CheckpointMeta(kind="ensemble", dataset=cfg.data.dataset,
                          metrics=RecordedMetrics(test=result.test["ensemble"],
                                                  eval_attack=path.attack, eps=cfg.attack.eps),
                          source=", ".join(result.members), config=to_dict(cfg))
    ensemble = replace(first.with_weights(chosen[0], meta),
                       members=[first.with_weights(m).state_dict for m in chosen],
                       combine=choice.combine)
    save_checkpoint(ensemble, out / "ensemble.pt")
    atomic_write_json(out / "ensemble.json", {
        "k": choice.k, "combine": choice.combine, **result.summary(),
        "eval_attack": path.attack, "eps": cfg.attack.eps, "config": to_dict(cfg),
        "record": run_record(argv)})
    return result
