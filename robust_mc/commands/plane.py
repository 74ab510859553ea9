"""`robust-mc plane RUN_DIR`: clean and robust loss and accuracy over the plane through a
curve's endpoints and bend, as contour plots with the curve and the line drawn over them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robust_mc.commands import common
from robust_mc.config import ConnectRunConfig, PlaneConfig, build_config, to_dict
from robust_mc.pipelines.connect import reopened_config
from robust_mc.pipelines.plane import run_plane
from robust_mc.report.plane import plot_plane, write_plane_csv
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime
from robust_mc.store.records import CurveRun

ORDER = 48
DISTRIBUTED = True  # torchrun may launch it
HELP = "evaluate the plane through a curve's endpoints and bend on a grid; contour plots"
PLANE_FLAGS = {"--grid": "grid", "--margin": "margin", "--plane-images": "images",
               "--bend": "bend"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_path", metavar="RUN", help="a connect run directory, or its curve.pt")
    common.add_settings(p.add_argument_group("plane"), PlaneConfig, PLANE_FLAGS)
    common.add_settings(p.add_argument_group("evaluation at each grid point"),
                        ConnectRunConfig, {"--eval-attack": "path.attack:SPEC",
                                           "--bn-data": "path.bn_data",
                                           "--bn-images": "path.bn_images",
                                           **common.REPAIR_FLAGS,
                                           "--eval-batch-size": "path.batch_size"})
    common.add_speed_flags(p, ConnectRunConfig)
    common.add_model_file_flags(p, foreign=False)
    common.add_output_flags(p, "directory for plane.json/csv/png (default RUN/plane)")


def run(args: argparse.Namespace) -> int:
    source = Path(args.run_path)
    curve_file = source / "curve.pt" if source.is_dir() else source
    saved = CurveRun.read(curve_file, common.load_options(args))
    cfg = reopened_config(saved.config, common.overrides(args))
    plane_cfg = build_config(PlaneConfig, None, {key: getattr(args, key)
                                                 for key in PLANE_FLAGS.values()
                                                 if getattr(args, key) is not None})
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    out = Path(args.out or curve_file.parent / "plane")
    result = run_plane(saved, cfg, plane_cfg, out, runtime, reporter)
    files = ["plane.json", write_plane_csv(out, result).name,
             *plot_plane(out, result, curve_file.parent.name)]
    if args.json:
        print(json.dumps({"out": str(out), "files": files,
                          "anchors": result.to_state()["anchors"]}, indent=2))
        return 0
    for name, (x, y, m) in result.anchors.items():
        reporter.print(f"{name} at ({x:.3g}, {y:.3g}): clean loss {m.clean_loss:.3f}, robust "
                       f"loss {m.robust_loss:.3f}, robust acc {m.robust_acc:.1f}%")
    reporter.print(f"wrote {out}/: {', '.join(files)} ({to_dict(plane_cfg)})")
    return 0
