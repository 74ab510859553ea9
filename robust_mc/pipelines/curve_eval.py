"""`robust-mc eval RUN`: a saved curve re-evaluated (another attack, more points) without
retraining, through the same path evaluation and report as connect."""

from __future__ import annotations

from pathlib import Path

from robust_mc.config import ConnectRunConfig
from robust_mc.pipelines.connect import write_outputs
from robust_mc.pipelines.path_evaluation import evaluate_run, summarize
from robust_mc.pipelines.session import open_saved_run
from robust_mc.pipelines.similarity import similarity_along
from robust_mc.pipelines.verification import verify_path
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import Runtime
from robust_mc.store.path_summary import PathSummary
from robust_mc.store.records import CurveRun


def run_eval(run: CurveRun, source: Path, cfg: ConnectRunConfig, out: Path, runtime: Runtime,
             reporter: Reporter, argv: list[str] | None = None) -> PathSummary:
    """Evaluate ``run``'s curve (read from ``source``) as ``cfg.path`` says; write path.json,
    path.csv, best.pt, path.png and summary.json into ``out``."""
    saved = open_saved_run(run, cfg, out, runtime, reporter)
    session, endpoints, curve = saved.session, saved.endpoints, saved.curve
    result = evaluate_run(session, curve, endpoints)
    if cfg.path.similarity:
        result.activations = similarity_along(session, curve, endpoints, result.paths)
    summary = summarize(result, cfg)
    if cfg.verify.enabled:
        summary.verification = verify_path(session, curve, endpoints, result.points,
                                           summary.best.t if summary.best else None)
    summary.source, summary.record = str(source), run_record(argv)
    summary.runtime = runtime.describe()
    summary.files = ["summary.json", *write_outputs(session, result, summary,
                                                    f"{source} ({cfg.path.attack})")]
    summary.write(session.out / "summary.json")
    return summary
