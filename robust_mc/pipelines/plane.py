"""`robust-mc plane RUN_DIR`: clean and robust loss and accuracy over the plane through a
curve's endpoints and bend, each grid point a network evaluated like a point of the path
(resumable per grid point, shared out over torchrun processes). A grid point stands at the t of
:func:`~robust_mc.core.plane.position_between`; its statistics follow ``--repair`` as the
path's at that t do: the endpoints' batch-norm statistics interpolated (``off``), batch norm
recomputed (``reset``), or its units repaired to the endpoints' interpolated (``repair``)."""

from __future__ import annotations

from pathlib import Path

import torch

from robust_mc.config import ConnectRunConfig, PlaneConfig, to_dict
from robust_mc.core.plane import Plane, position_between
from robust_mc.errors import UserError
from robust_mc.evaluation.path import PathNetworks, path_attack
from robust_mc.evaluation.robustness import Metrics, evaluate_seeded
from robust_mc.pipelines.session import open_saved_run
from robust_mc.run import distributed
from robust_mc.run.files import as_written, at_most, atomic_write_json, remove
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.plane_grid import PlaneResult
from robust_mc.store.records import CurveRun
from robust_mc.store.resume import saved_progress

PROGRESS_FILE = "plane-progress.json"
CURVE_SAMPLES = 41  # points of the curve drawn over the plane


def run_plane(run: CurveRun, cfg: ConnectRunConfig, plane_cfg: PlaneConfig, out: Path,
              runtime: Runtime, reporter: Reporter) -> PlaneResult:
    """Evaluate the grid (continuing a saved one with the same settings) and write
    plane.json; the caller draws the figures."""
    curve = run.curve  # the plane's geometry on the CPU; networks on the run's device
    if plane_cfg.bend >= max(curve.num_bends, 1):
        raise UserError(f"--bend {plane_cfg.bend}: the curve has {curve.num_bends} bend(s)")
    try:
        plane = Plane.of(curve, plane_cfg.bend)
    except ValueError as exc:
        raise UserError(f"{exc}") from None
    saved = open_saved_run(run, cfg, out, runtime, reporter)
    out, on_device = saved.session.out, saved.session.data
    test = on_device.test.take(plane_cfg.images)
    attack = path_attack(cfg.path, cfg.attack, on_device.info.num_classes)
    along = PathNetworks(saved.curve, saved.endpoints.a, on_device, cfg.path, cfg.attack,
                         runtime, saved.endpoints.b)
    anchor_weights = {"a": curve.start, "b": curve.end, "bend": curve.bends[plane_cfg.bend]}
    anchors = {name: plane.coordinates(w) for name, w in anchor_weights.items()}

    def evaluate(point: tuple[float, float]) -> Metrics:
        weights = curve.unflatten(plane.weights_at(*point).to(runtime.device))
        t = position_between(point, anchors["a"], anchors["b"], anchors["bend"])
        model = along.network(weights, t, endpoint=point in (anchors["a"], anchors["b"]))
        return evaluate_seeded(model, test, attack, runtime, cfg.path.batch_size, cfg.path.seed)

    xs, ys = plane.grid(list(anchors.values()), plane_cfg.grid, plane_cfg.margin)
    points = [*anchors.values(), *((x, y) for y in ys for x in xs)]
    settings = {"plane": to_dict(plane_cfg), "path": to_dict(cfg.path),
                "attack": to_dict(cfg.attack)}
    done = saved_points(out / PROGRESS_FILE, settings, len(points))

    def record(_: int, metrics: Metrics) -> None:
        done.append(metrics)
        step.advance(1, f"robust {metrics.robust_acc:.1f}%")
        atomic_write_json(out / PROGRESS_FILE, {"config": settings,
                                                "points": [m.as_dict() for m in done]})

    with reporter.task(f"plane {plane_cfg.grid}x{plane_cfg.grid}", len(points)) as step:
        step.advance(len(done))
        distributed.group().map(evaluate, points[len(done):], record)
    ts = torch.linspace(0, 1, CURVE_SAMPLES).tolist()
    with torch.no_grad():
        projected = [plane.coordinates(curve.flat_at(t)) for t in ts]
    result = PlaneResult(xs, ys, done[len(anchors):],
                         {name: (*anchors[name], done[i]) for i, name in enumerate(anchors)},
                         projected, settings)
    atomic_write_json(out / "plane.json", result.to_state())
    remove(out / PROGRESS_FILE)
    return result


def saved_points(path: Path, settings: dict, count: int) -> list[Metrics]:
    """The grid points (of ``count``) an interrupted run with the same settings evaluated."""
    saved = saved_progress(path, settings)
    if saved is None:
        return []
    with as_written(path, "delete it to evaluate the plane from its first point"):
        return [Metrics.from_state(m) for m in at_most(saved.get("points") or [], count)]
