"""Evaluating a connect run's path (and the straight lines beside it), resumably, and what it
yields: barriers, the best on-path robust model and the check that t = 0 and t = 1 reproduce the
endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from robust_mc.config import ConnectRunConfig, to_dict
from robust_mc.core.curves import Curve
from robust_mc.errors import Interrupted
from robust_mc.evaluation.barriers import path_summary
from robust_mc.evaluation.path import PointResult, batchnorm_layers, evaluate_path, path_attack
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.evaluation.similarity import Activations
from robust_mc.models import Classifier
from robust_mc.pipelines.pair import Endpoints, Pair, make_curve
from robust_mc.pipelines.session import ConnectSession
from robust_mc.run.files import as_written, at_most, atomic_write_json
from robust_mc.run.interrupt import StopSignals
from robust_mc.store.checkpoint import Checkpoint, save_checkpoint
from robust_mc.store.meta import CheckpointMeta, RecordedMetrics
from robust_mc.store.path_summary import (
    BestPoint,
    CurveInfo,
    EndpointCheck,
    PathSummary,
    SecondsPerT,
)
from robust_mc.store.records import PathLabel
from robust_mc.store.resume import saved_progress

PROGRESS_FILE = "path-progress.json"
REPRODUCE_TOLERANCE = 0.5  # accuracy points


@dataclass
class PathRun:
    """Everything evaluated for one curve (and, optionally, the straight lines beside it)."""

    label: PathLabel
    points: list[PointResult]
    best: Classifier | None = None
    lines: dict[PathLabel, list[PointResult]] = field(default_factory=dict)
    endpoints: dict[str, EndpointCheck] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    activations: Activations | None = None  # eval --similarity only

    @property
    def paths(self) -> dict[PathLabel, list[PointResult]]:
        return {self.label: self.points, **self.lines}


class EvaluationProgress:
    """path-progress.json: the points evaluated so far on each path of a run, written after
    every t, so that an interrupted evaluation continues at the next t. Points saved with other
    settings are ignored."""

    def __init__(self, path: Path, cfg: ConnectRunConfig, stop: StopSignals | None = None
                 ) -> None:
        self.path = path
        self.config = to_dict(cfg)
        self.stop = stop or StopSignals()
        self.paths: dict[str, list[PointResult]] = {}
        saved = saved_progress(path, self.config)
        if saved is not None:
            with as_written(path, "delete it to evaluate the path from its first t"):
                self.paths = {
                    str(label): [PointResult.from_dict(p) for p in at_most(pts, cfg.path.points)]
                    for label, pts in dict(saved.get("paths") or {}).items()}

    def done(self, label: PathLabel) -> list[PointResult]:
        return self.paths.get(str(label), [])

    def saver(self, label: PathLabel) -> Callable[[list[PointResult]], None]:
        def after_point(points: list[PointResult]) -> None:
            self.paths[str(label)] = list(points)
            atomic_write_json(self.path, {"config": self.config, "paths": {
                name: [p.as_dict() for p in pts] for name, pts in self.paths.items()}})
            if self.stop.requested:
                assert self.stop.signum is not None
                raise Interrupted(self.stop.signum, f"stopped while evaluating {label} at "
                                  f"t={points[-1].t:g}; state saved in {self.path.parent}; "
                                  "rerun the same command to continue")
        return after_point


def endpoint_reproduction(points: list[PointResult], endpoints: Endpoints,
                          session: ConnectSession) -> dict[str, EndpointCheck]:
    """Each endpoint's own test figures (its own BN statistics) against t=0 and t=1 of the path."""
    cfg, data = session.cfg, session.data
    attack = path_attack(cfg.path, cfg.attack, data.info.num_classes)
    test = data.test.take(cfg.path.test_limit)
    checks = {}
    for name, model, point in (("a", endpoints.a, points[0]), ("b", endpoints.b, points[-1])):
        own = evaluate_seeded(model, test, attack, session.runtime, cfg.path.batch_size,
                              cfg.path.seed)
        diff = max(abs(own.clean_acc - point.test.clean_acc),
                   abs(own.robust_acc - point.test.robust_acc))
        checks[name] = EndpointCheck(own, point.test, diff, diff <= REPRODUCE_TOLERANCE)
        if not checks[name].reproduced:
            session.reporter.console.print(
                f"[bold red]WARNING[/]: endpoint {name} is not reproduced at t={point.t:g} "
                f"(accuracy differs by {diff:.2f} points > {REPRODUCE_TOLERANCE}); the "
                "recomputed batch-norm statistics differ from its own: try --bn-data "
                "clean|adversarial or more --bn-images")
    return checks


def evaluate_run(session: ConnectSession, curve: Curve, endpoints: Endpoints,
                 progress: EvaluationProgress | None = None) -> PathRun:
    """The curve (and, with ``compare_line``, the straight lines) evaluated along t;
    ``progress`` saves each point and holds those of an interrupted run."""
    cfg, runtime, reporter, data = session.cfg, session.runtime, session.reporter, session.data
    start = time.perf_counter()
    label = PathLabel(cfg.curve.kind, cfg.aligned)
    if not batchnorm_layers(endpoints.a):
        reporter.print("no batch norm layers: the statistics step at each t has nothing to "
                       "recompute (LayerNorm and GroupNorm normalise each input themselves)")

    def resumable(name: PathLabel) -> dict:
        if progress is None:
            return {}
        return {"done": progress.done(name), "after_point": progress.saver(name)}

    points, best = evaluate_path(curve, endpoints.a, data, cfg.path, cfg.attack, runtime,
                                 reporter, f"{cfg.curve.kind} path", **resumable(label),
                                 endpoint_b=endpoints.b)
    run = PathRun(label, points, best)
    run.seconds["evaluate"] = time.perf_counter() - start
    run.endpoints = endpoint_reproduction(points, endpoints, session)
    if cfg.path.compare_line:
        lines = {PathLabel("line", True): endpoints.b} if cfg.aligned else {}
        lines[PathLabel("line", False)] = endpoints.b_original
        # every line joins the path's own endpoints: a, and b (as connected, or as given: one
        # function, its units in another order), measured once, at the path's ends
        ends = {points[0].t: points[0], points[-1].t: points[-1]}
        for line_label, b in lines.items():
            if line_label == label:  # the path is itself this line
                run.lines[line_label] = points
                continue
            line = make_curve("line", endpoints, 0, runtime, b)
            run.lines[line_label], _ = evaluate_path(line, endpoints.a, data, cfg.path,
                                                     cfg.attack, runtime, reporter,
                                                     str(line_label), keep_best=False,
                                                     **resumable(line_label), endpoint_b=b,
                                                     known=ends)
    return run


def summarize(run: PathRun, cfg: ConnectRunConfig) -> PathSummary:
    """Barriers per split, best t, endpoint reproduction, timings, resolved config."""
    splits = ("val", "test")
    interior = [p for p in run.points if 0 < p.t < 1]
    best = max(interior, key=lambda p: p.val.robust_acc) if interior else None
    return PathSummary(
        CurveInfo(cfg.curve.kind, cfg.curve.bends, cfg.aligned),
        {split: path_summary(run.points, split) for split in splits}, to_dict(cfg),
        lines={label: {split: path_summary(points, split) for split in splits}
               for label, points in run.lines.items()},
        best=BestPoint(best.t, best.val, best.test) if best is not None else None,
        endpoints=run.endpoints, seconds=dict(run.seconds),
        per_t=SecondsPerT.mean_of([p.seconds for p in run.points]))


def best_checkpoint(run: PathRun, pair: Pair, summary: PathSummary, cfg: ConnectRunConfig
                    ) -> Checkpoint | None:
    """The best on-path robust model as a native checkpoint (None for a path without one)."""
    if run.best is None or summary.best is None:
        return None
    best = summary.best
    meta = CheckpointMeta(kind="on-path", dataset=cfg.data.dataset, t=best.t,
                          metrics=RecordedMetrics(best.test, best.val, cfg.path.attack,
                                                  cfg.attack.eps),
                          endpoints={"a": pair.a.path, "b": pair.b.path}, config=to_dict(cfg))
    return pair.a.with_weights(run.best, meta)


def write_best(run: PathRun, pair: Pair, summary: PathSummary, cfg: ConnectRunConfig,
               out: Path) -> Path | None:
    ckpt = best_checkpoint(run, pair, summary, cfg)
    return save_checkpoint(ckpt, out / "best.pt") if ckpt is not None else None
