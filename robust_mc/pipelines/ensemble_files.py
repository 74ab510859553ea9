"""`robust-mc ensemble a.pt b.pt RUN ... -k K`: the K networks among several endpoint files and
runs' path points that together are most robust, chosen greedily on the validation split as
along one path, measured on the test split beside each file and each run's ends, and written as
an ensemble checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from robust_mc.config import ConnectRunConfig, EnsembleConfig, to_dict
from robust_mc.data import Data, as_float, load_data
from robust_mc.errors import UserError
from robust_mc.evaluation.ensemble import greedy_select
from robust_mc.evaluation.path import PathNetworks, path_attack
from robust_mc.evaluation.robustness import Metrics, evaluate_seeded
from robust_mc.models import Classifier
from robust_mc.models.ensemble import Ensemble
from robust_mc.pipelines.pair import check_fits_data, check_same_network, endpoints_from_run
from robust_mc.run import distributed
from robust_mc.run.files import atomic_write_json, ensure_out_dir
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import Checkpoint, save_checkpoint
from robust_mc.store.meta import CheckpointMeta, RecordedMetrics
from robust_mc.store.model_building import build_model
from robust_mc.store.records import CurveRun


@dataclass(frozen=True)
class Candidate:
    """A network the ensemble may take: a file, or a point of a run's path."""

    label: str
    model: Classifier
    contends: bool  # measured on its own beside the ensemble (files and a run's ends)


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


def ensemble_template(sources: Sequence[Checkpoint | CurveRun], k: int, points: int
                      ) -> Checkpoint:
    """The network an ensemble of ``sources`` is written as (the first file, or the first run's
    endpoint a), once every source is of its architecture, shape and normalization (one ensemble
    checkpoint holds them) and ``k`` fits the candidates."""
    networks = [s if isinstance(s, Checkpoint) else s.checkpoints()[0] for s in sources]
    for ckpt in networks[1:]:
        check_same_network(networks[0], ckpt, "ensemble")
    count = sum(1 if isinstance(s, Checkpoint) else points for s in sources)
    if not 1 <= k <= count:
        raise UserError(f"-k {k}: choose between 1 and the {count} networks given (each run "
                        "gives its --points)")
    return networks[0]


def candidates_of(sources: Sequence[Checkpoint | CurveRun], cfg: ConnectRunConfig, data: Data,
                  runtime: Runtime) -> list[Candidate]:
    """Each file's network, and each run's networks at its ``cfg.path.points`` values of t
    (statistics as ``cfg.path`` says, as along the run's path)."""
    on_device = data.to(runtime.device)
    ts = torch.linspace(0, 1, cfg.path.points).tolist()
    found: list[Candidate] = []
    for source in sources:
        if isinstance(source, Checkpoint):
            check_fits_data(source, data)
            found.append(Candidate(str(source.path), runtime.prepare(build_model(source)), True))
            continue
        for ckpt in source.checkpoints():
            check_fits_data(ckpt, data)
        endpoints = endpoints_from_run(source, runtime, data.train.images[:2].float())
        along = PathNetworks(source.curve.to(runtime.device), endpoints.a, on_device, cfg.path,
                             cfg.attack, runtime, endpoints.b)
        name = source.path.parent.name if source.path is not None else "run"
        found += [Candidate(f"{name} t={t:.2f}", along.at(t), t in (0.0, 1.0)) for t in ts]
    return found


def run_file_ensemble(sources: Sequence[Checkpoint | CurveRun], cfg: ConnectRunConfig,
                      choice: EnsembleConfig, out: Path, runtime: Runtime, reporter: Reporter,
                      argv: list[str] | None = None) -> FileEnsembleResult:
    """Choose ``choice.k`` of the sources' networks; write ``ensemble.pt`` and
    ``ensemble.json`` into ``out``."""
    first = ensemble_template(sources, choice.k, cfg.path.points)
    data = load_data(cfg.data)
    runtime.settle(build_model(first), as_float(data.train.images[:1]))  # before preparing any
    candidates = candidates_of(sources, cfg, data, runtime)
    out = ensure_out_dir(out)
    models = [c.model for c in candidates]
    labels = [c.label for c in candidates]
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
                  **{c.label: c.model for c in candidates if c.contends}}
    if all(c.contends for c in candidates):  # files only: the ensemble of all of them too
        contenders[f"all {len(models)}"] = Ensemble(models, choice.combine)
    figures = distributed.group().map(  # shared out on several processes
        lambda model: evaluate_seeded(model, test, attack, runtime, path.batch_size, path.seed),
        list(contenders.values()))
    result = FileEnsembleResult([labels[i] for i in selection.indices], selection.rounds,
                                dict(zip(contenders, figures, strict=True)))
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
