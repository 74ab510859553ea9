"""`robust-mc ensemble RUN`: the points of a trained path that together are most robust, chosen
greedily on the validation split, measured on the test split beside the endpoints, and written
as an ensemble checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from robust_mc.config import ConnectRunConfig, EnsembleConfig, to_dict
from robust_mc.evaluation.ensemble import greedy_select
from robust_mc.evaluation.path import PathNetworks, path_attack
from robust_mc.evaluation.robustness import Metrics, evaluate_seeded
from robust_mc.models.ensemble import Ensemble
from robust_mc.pipelines.pair import Pair
from robust_mc.pipelines.session import open_saved_run
from robust_mc.run import distributed
from robust_mc.run.files import atomic_write_json
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import Checkpoint, save_checkpoint
from robust_mc.store.meta import CheckpointMeta, RecordedMetrics
from robust_mc.store.records import CurveRun

CONTENDERS = ("ensemble", "endpoint a", "endpoint b", "a + b")


@dataclass
class EnsembleResult:
    """The chosen points, the selection rounds, and each contender's test figures."""

    members_t: list[float]
    rounds: list[dict]  # per round: the candidate added and the ensemble's validation figures
    test: dict[str, Metrics]  # CONTENDERS -> figures
    files: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"members_t": self.members_t, "selection": self.rounds,
                "test": {name: m.as_dict() for name, m in self.test.items()}}


def run_ensemble(run: CurveRun, source: Path, cfg: ConnectRunConfig, choice: EnsembleConfig,
                 out: Path, runtime: Runtime, reporter: Reporter,
                 argv: list[str] | None = None) -> EnsembleResult:
    """Choose ``choice.k`` of the path's ``cfg.path.points`` points, write ``ensemble.pt`` and
    ``ensemble.json`` into ``out``."""
    saved = open_saved_run(run, cfg, out, runtime, reporter)
    pair, on_device = saved.session.pair, saved.session.data
    endpoints, curve = saved.endpoints, saved.curve
    path, attack = cfg.path, path_attack(cfg.path, cfg.attack, on_device.info.num_classes)
    ts = torch.linspace(0, 1, path.points).tolist()
    reporter.print(f"[bold]ensemble[/] of {choice.k} from {len(ts)} points on {source} "
                   f"({choice.combine}), selected on validation robust accuracy ({path.attack})")
    along = PathNetworks(curve, endpoints.a, on_device, path, cfg.attack, runtime, endpoints.b)
    candidates = [along.at(t) for t in ts]
    val, test = on_device.val.take(path.val_limit), on_device.test.take(path.test_limit)
    selection = greedy_select(candidates, choice.k, val, attack, runtime,
                              batch_size=path.batch_size, seed=path.seed,
                              combine=choice.combine, reporter=reporter,
                              labels=[f"t={t:.2f}" for t in ts])
    chosen = [candidates[i] for i in selection.indices]
    contenders = dict(zip(CONTENDERS, (
        Ensemble(chosen, choice.combine), endpoints.a, endpoints.b,
        Ensemble([endpoints.a, endpoints.b], choice.combine)), strict=True))
    figures = distributed.group().map(  # shared out on several processes
        lambda model: evaluate_seeded(model, test, attack, runtime, path.batch_size, path.seed),
        list(contenders.values()))
    result = EnsembleResult([ts[i] for i in selection.indices], selection.rounds,
                            dict(zip(contenders, figures, strict=True)))
    out = saved.session.out
    save_checkpoint(ensemble_checkpoint(pair, chosen, result, cfg, choice, source),
                    out / "ensemble.pt")
    atomic_write_json(out / "ensemble.json", {
        "source": str(source), "k": choice.k, "combine": choice.combine, **result.summary(),
        "eval_attack": path.attack, "eps": cfg.attack.eps, "config": to_dict(cfg),
        "record": run_record(argv)})
    result.files = ["ensemble.pt", "ensemble.json"]
    return result


def ensemble_checkpoint(pair: Pair, chosen: list, result: EnsembleResult,
                        cfg: ConnectRunConfig, choice: EnsembleConfig, source: Path
                        ) -> Checkpoint:
    """An ensemble checkpoint (``robust-mc-ensemble/1``) that eval and info read."""
    members = [pair.a.with_weights(m).state_dict for m in chosen]
    meta = CheckpointMeta(kind="ensemble", dataset=cfg.data.dataset,
                          members_t=list(result.members_t),
                          metrics=RecordedMetrics(test=result.test["ensemble"],
                                                  eval_attack=cfg.path.attack,
                                                  eps=cfg.attack.eps),
                          source=str(source), config=to_dict(cfg))
    return replace(pair.a.with_weights(chosen[0], meta), members=members,
                   combine=choice.combine)
