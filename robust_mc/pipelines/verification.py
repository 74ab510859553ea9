"""Verifying a connect run's chosen points: after connect (``--verify``), or later on a
finished run (``robust-mc verify RUN_DIR``). The networks are rebuilt at each t exactly as the
path evaluation built them (the same curve, the same recomputed batch-norm statistics)."""

from __future__ import annotations

from pathlib import Path

from robust_mc.attacks.reference import reference_version
from robust_mc.config import ConnectRunConfig, to_dict
from robust_mc.core.curves import Curve
from robust_mc.errors import UserError
from robust_mc.evaluation.path import PathNetworks, PointResult
from robust_mc.evaluation.verification import (
    PointVerification,
    Verification,
    points_to_verify,
    verification_settings,
    verify_point,
)
from robust_mc.pipelines.pair import Endpoints
from robust_mc.pipelines.session import ConnectSession, open_saved_run
from robust_mc.report.path import path_points
from robust_mc.run import distributed
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import LoadOptions
from robust_mc.store.path_summary import PathSummary
from robust_mc.store.records import CurveRun
from robust_mc.store.verified_points import VerifiedPoints


def verify_path(session: ConnectSession, curve: Curve, endpoints: Endpoints,
                points: list[PointResult], best_t: float | None,
                verified: VerifiedPoints | None = None) -> Verification:
    """The endpoints, ``best_t`` and the t of the worst test robust loss among ``points``,
    each verified on the first ``verify.images`` test images; a point ``verified`` already holds
    (the same network, images and settings) is read back instead."""
    cfg, data, runtime = session.cfg, session.data, session.runtime
    chosen = points_to_verify([p.t for p in points], [p.test.robust_loss for p in points],
                              best_t)
    images = data.test.take(cfg.verify.images)
    context = None if verified is None else verified.context(images, {
        "path_attack": cfg.path.attack, "eps": cfg.attack.eps, "norm": cfg.attack.norm,
        "verify": verification_settings(cfg.verify), "batch_size": cfg.path.batch_size,
        "reference": reference_version()})

    along = PathNetworks(curve, endpoints.a, data, cfg.path, cfg.attack, runtime, endpoints.b)

    def verify(item: tuple[float, list[str]]) -> tuple[str, PointVerification, bool]:
        t, roles = item
        model = along.at(t)
        key = "" if context is None else VerifiedPoints.key(model, context)
        if verified is not None and (point := verified.get(key, t, roles)) is not None:
            return key, point, True
        return key, verify_point(model, t, roles, images, path_attack=cfg.path.attack,
                                 eps=cfg.attack.eps, norm=cfg.attack.norm,
                                 num_classes=data.info.num_classes, settings=cfg.verify,
                                 runtime=runtime, batch_size=cfg.path.batch_size), False

    def done(key: str, point: PointVerification, read_back: bool) -> str:
        if verified is not None and not read_back and distributed.writes_files():
            verified.put(key, point)
        return (f"t={point.t:.2f} AutoAttack {point.autoattack_figure:.1f}%"
                + (" (verified before)" if read_back else ""))

    with session.reporter.task("verify points", len(chosen)) as step:
        # on several processes the points are shared out and gathered
        results = distributed.group().map(verify, list(chosen.items()),
                                          lambda _, r: step.advance(1, done(*r)))
    return Verification([point for _, point, _ in results], verification_settings(cfg.verify),
                        reference_version(), cfg.attack.eps)


def needs_verification(summary: PathSummary, cfg: ConnectRunConfig) -> bool:
    """Whether a finished run lacks the verification these settings ask for."""
    done = summary.verification
    return cfg.verify.enabled and (done is None or done.eps != cfg.attack.eps
                                   or done.settings != verification_settings(cfg.verify))


def verify_finished_run(run_dir: Path, summary: PathSummary, cfg: ConnectRunConfig,
                        runtime: Runtime, reporter: Reporter,
                        options: LoadOptions | None = None,
                        verified: VerifiedPoints | None = None) -> PathSummary:
    """Verify the path of a finished connect (or eval) run in ``run_dir`` (reading back the
    points ``verified`` holds) and rewrite its summary.json with the ``verification`` section."""
    curve_file = run_dir / "curve.pt"
    if not curve_file.is_file() and summary.source:  # an eval directory: its curve is elsewhere
        curve_file = Path(summary.source)
    if not curve_file.is_file():
        raise UserError(f"{run_dir}: no curve.pt (nor the curve its summary names); give a "
                        "connect run directory")
    points = path_points(run_dir).get(str(summary.label))
    if not points:
        raise UserError(f"{run_dir}/path.json lacks the {summary.label} path; re-evaluate "
                        f"the run with robust-mc eval {run_dir}")
    saved = open_saved_run(CurveRun.read(curve_file, options), cfg, run_dir, runtime, reporter)
    summary.verification = verify_path(saved.session, saved.curve, saved.endpoints, points,
                                       summary.best.t if summary.best else None, verified)
    summary.config = {**summary.config, "verify": to_dict(cfg.verify)}
    summary.write(run_dir / "summary.json")
    return summary
