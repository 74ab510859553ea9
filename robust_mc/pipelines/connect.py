"""`robust-mc connect` and `robust-mc eval`: one pipeline from two endpoints to barriers.

connect = align b to a -> train a robust curve -> evaluate along it -> barriers and the best
on-path robust model. eval = load a saved curve -> evaluate along it -> the same report. The
stages live in ``pair.py`` (the endpoints, aligned), ``curve_training.py`` and
``path_evaluation.py``; the files in ``store/records.py``; this module only sequences them and
decides what a saved run becomes.
"""

from __future__ import annotations

import time
from pathlib import Path

from robust_mc.attacks import parse_attack_spec
from robust_mc.config import ConnectRunConfig, build_config, flatten, to_dict
from robust_mc.core.curves import has_bends
from robust_mc.data import as_float, load_data
from robust_mc.errors import UserError
from robust_mc.pipelines.curve_training import train_curve_run
from robust_mc.pipelines.pair import Pair, endpoints_from_run, make_curve, prepare_endpoints
from robust_mc.pipelines.path_evaluation import (
    PROGRESS_FILE,
    EvaluationProgress,
    PathRun,
    evaluate_run,
    summarize,
    write_best,
)
from robust_mc.pipelines.session import ConnectSession
from robust_mc.pipelines.verification import (
    needs_verification,
    verify_finished_run,
    verify_path,
)
from robust_mc.report.path import plot_paths, write_path_files
from robust_mc.report.similarity import plot_similarity, plot_variance
from robust_mc.run import distributed
from robust_mc.run.files import ensure_out_dir, remove
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import Runtime, seeded
from robust_mc.store.checkpoint import LoadOptions
from robust_mc.store.model_building import build_model
from robust_mc.store.path_summary import PathSummary
from robust_mc.store.records import CurveRun
from robust_mc.store.resume import (
    Resume,
    ResumePolicy,
    decide_resume,
    remove_stale_temps,
    require_saved,
)
from robust_mc.store.verified_points import VerifiedPoints

RUN_FILES = ("curve.pt", PROGRESS_FILE, "path.json", "path.csv", "summary.json", "best.pt",
             "path.png")


def preflight(cfg: ConnectRunConfig, re_evaluation: bool = False) -> None:
    """Checks that fail in seconds rather than after hours of training; ``re_evaluation``:
    for eval, which also measures the activation similarity."""
    parse_attack_spec(cfg.path.attack)
    if cfg.curve.t_per_rank and not re_evaluation and not distributed.launched():
        raise UserError("--t-per-rank gives each torchrun process its own t; one process has "
                        "one t per step anyway: launch with torchrun, or drop it")
    if cfg.path.similarity and not re_evaluation:
        raise UserError("path.similarity is measured by robust-mc eval RUN --similarity, not by "
                        "connect; remove it from the configuration")
    if has_bends(cfg.curve.kind) and cfg.curve.bends < 1:
        raise UserError(f"--bends must be at least 1 for a {cfg.curve.kind} curve")
    if cfg.pam.enabled and not has_bends(cfg.curve.kind):
        raise UserError("--pam alternates curve and permutation training; use a curve with "
                        "bends (--curve bezier or polychain)")
    if cfg.pam.enabled and cfg.aligned and cfg.align.maps not in ("auto", "permutations"):
        raise UserError(f"--pam updates b's permutations while the curve trains; it cannot "
                        f"follow --align-maps {cfg.align.maps}: use --align-maps permutations")
    cfg.align.map_class()  # a rotation class needs a method that reads activations
    if cfg.pam.enabled and cfg.optim.epochs < cfg.pam.outer + 1:
        raise UserError(f"--pam-outer {cfg.pam.outer} needs at least {cfg.pam.outer + 1} curve "
                        "epochs (one phase before and after each update); raise --epochs")


def reopened_config(saved: dict, overrides: dict) -> ConnectRunConfig:
    """The one way a saved run's settings (curve.pt's or summary.json's ``config``) become a
    typed configuration again, with the user's overrides on top, validated: eval, ensemble,
    plane and verify reopen runs with it."""
    cfg = build_config(ConnectRunConfig, None, {**flatten(saved), **overrides})
    preflight(cfg, re_evaluation=True)
    return cfg


def completed_run(out: Path, cfg: ConnectRunConfig, digests: dict[str, str]
                  ) -> PathSummary | None:
    """The summary of a finished run in ``out`` with these settings and endpoints, if any."""
    summary = PathSummary.read(out / "summary.json")
    if summary is None:
        return None
    other = None
    if summary.endpoint_digests != digests:
        other = "other endpoints"
    elif not all((out / name).is_file() for name in summary.files):
        other = "files missing"
    decision = decide_resume(ResumePolicy.REPLACE, out, summary.config, to_dict(cfg),
                             other=other)
    return summary if decision is Resume.CONTINUE else None


def saved_run(session: ConnectSession, policy: ResumePolicy) -> CurveRun | None:
    """The interrupted run in ``session.out`` to continue, or None to start afresh, as
    ``policy`` decides (a run that cannot continue is refused, or replaced)."""
    path, pair = session.out / "curve.pt", session.pair
    if policy is ResumePolicy.FRESH:
        return None
    if not path.exists():
        require_saved(policy, session.out)
        return None
    run = CurveRun.read(path, LoadOptions(named=(pair.a.arch,)))
    other = None
    if (run.endpoint_digests != session.digests or run.arch != pair.a.arch
            or run.arch_kwargs != pair.a.arch_kwargs or run.model_kwargs != pair.a.model_kwargs):
        other = "other endpoints"
    elif run.position is None:
        other = "written by an older robust-mc that cannot resume"
    if decide_resume(policy, session.out, run.config, to_dict(session.cfg),
                     other=other) is Resume.CONTINUE:
        return run
    session.reporter.print(f"  {session.out}: the settings or endpoints changed; starting over")
    return None


def write_outputs(session: ConnectSession, run: PathRun, summary: PathSummary,
                  title: str) -> list[str]:
    """path.json, path.csv, best.pt and path.png (and the similarity heatmaps); the names of
    those written."""
    out = session.out
    extra = {}
    files = ["path.json", "path.csv"]
    if run.activations is not None:
        extra["similarity"] = {label: [row.as_dict() for row in rows]
                               for label, rows in run.activations.similarity.items()}
        extra["variance"] = {label: [row.as_dict() for row in rows]
                             for label, rows in run.activations.variance.items()}
        files += plot_similarity(out, run.activations.similarity)
        files += plot_variance(out, run.activations.variance)
    write_path_files(out, run.paths, extra)
    if write_best(run, session.pair, summary, session.cfg, out) is not None:
        files.append("best.pt")
    if plot_paths(out, run.paths, title) is not None:
        files.append("path.png")
    return files


def run_connect(pair: Pair, cfg: ConnectRunConfig, out: Path, runtime: Runtime,
                reporter: Reporter, argv: list[str] | None = None,
                policy: ResumePolicy = ResumePolicy.AUTO, stop: StopSignals | None = None,
                verified: VerifiedPoints | None = None, notes: tuple[str, ...] = ()
                ) -> PathSummary:
    """The whole of `robust-mc connect`: align, train, evaluate, write every output file.

    Args:
        pair: the endpoints (see ``load_pair``); b is aligned to a unless ``cfg.aligned`` is
            off.
        cfg: the resolved configuration.
        out: the run directory; a run saved there continues, is returned finished, is refused
            or is replaced, as ``policy`` says.
        runtime, reporter, argv, stop: where it runs, where it reports, the command line to
            record, the signals that stop it after saving.
        verified: verified points to read back (and add to) with ``cfg.verify``: a bench shares
            them between its cells, whose endpoints are the same networks.
        notes: lines shown as the run starts (where its curve's optimiser settings came from).

    Returns:
        The run's summary (also in ``out/summary.json``).

    Example::

        summary = run_connect(load_pair("a.pt", "b.pt"), cfg, Path("runs/ab"),
                              start_runtime("auto"), Reporter())
        print(summary.barriers["test"].robust_loss_barrier)
    """
    if not (out / "curve.pt").is_file():
        require_saved(policy, out)  # refused before anything is loaded or written
    data = load_data(cfg.data)
    pair.check_data(data)
    out = ensure_out_dir(out, RUN_FILES)  # only once the inputs are known to be good
    remove_stale_temps(out)
    session = ConnectSession(pair, cfg, out, runtime, reporter, data.to(runtime.device),
                             stop or StopSignals(), notes)
    if policy is ResumePolicy.FRESH:
        for name in RUN_FILES:
            remove(out / name)
    elif (finished := completed_run(out, cfg, session.digests)) is not None:
        reporter.print(f"{out} already holds this run, complete; --fresh recomputes it")
        if needs_verification(finished, cfg):
            return verify_finished_run(out, finished, cfg, runtime, reporter,
                                       LoadOptions(named=(pair.a.arch,)), verified)
        return finished
    saved = saved_run(session, policy)
    with seeded(cfg.optim.seed):  # what draws from torch's global streams (user modules)
        return align_train_evaluate(session, saved, run_record(argv), verified)


def align_train_evaluate(session: ConnectSession, saved: CurveRun | None, record: dict,
                         verified: VerifiedPoints | None = None) -> PathSummary:
    """Align (or take the saved run's endpoints), train the curve from where ``saved`` stopped,
    evaluate along it and write every output file; summary.json last."""
    pair, cfg, out, runtime = session.pair, session.cfg, session.out, session.runtime
    runtime.settle(build_model(pair.a), as_float(session.data.train.images[:1]))
    session.reporter.print(f"[bold]connect[/] {pair.a.path} -> {pair.b.path} on "
                           f"{session.data.info.name}, eps {cfg.attack.eps * 255:.3g}/255, "
                           f"output {out}; {runtime.summary()}")
    for line in (*pair.describe(), *session.notes):
        session.reporter.print(line)
    start = time.perf_counter()
    example = session.data.train.images[:2].float()
    if saved is None:
        endpoints = prepare_endpoints(pair, cfg, session.data, runtime, session.reporter)
        curve = make_curve(cfg.curve.kind, endpoints, cfg.curve.bends, runtime)
    else:
        endpoints = endpoints_from_run(saved, runtime, example)
        curve = saved.curve.to(runtime.device)
    history = train_curve_run(session, curve, endpoints, saved)
    train_s = time.perf_counter() - start
    result = evaluate_run(session, curve, endpoints,
                          EvaluationProgress(out / PROGRESS_FILE, cfg, session.stop))
    result.seconds["align_and_train"] = train_s
    summary = summarize(result, cfg)
    if cfg.verify.enabled:
        summary.verification = verify_path(session, curve, endpoints, result.points,
                                           summary.best.t if summary.best else None, verified)
    summary.alignment, summary.pam, summary.training = (endpoints.alignment, endpoints.pam,
                                                        history)
    summary.record, summary.runtime = record, runtime.describe()
    summary.endpoint_digests = session.digests
    title = f"{Path(pair.a.path or 'a').name} -> {Path(pair.b.path or 'b').name}"
    summary.files = ["curve.pt", "summary.json", *write_outputs(session, result, summary, title)]
    summary.write(out / "summary.json")  # last: it marks the run complete
    remove(out / PROGRESS_FILE)
    return summary
