"""`robust-mc eval RUN_DIR|curve.pt`: re-evaluate a saved curve, e.g. with another attack."""

from __future__ import annotations

import argparse
from pathlib import Path

from robust_mc import connect as pipeline
from robust_mc.commands import common
from robust_mc.config import ConnectRunConfig, build_config, flatten
from robust_mc.data import load_data
from robust_mc.io import ensure_out_dir
from robust_mc.progress import Reporter
from robust_mc.record import run_record
from robust_mc.report import plot_paths, print_summary, summary_json, write_path_files
from robust_mc.runtime import Runtime

HELP = "re-evaluate a trained curve (other attack, more points) without retraining"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_path", metavar="RUN", help="a connect run directory, or its curve.pt")
    common.add_data_flags(p)
    p.add_argument("--eps", dest="attack.eps", metavar="EPS", help="radius (default: the run's)")
    common.add_path_flags(p)
    common.add_speed_flags(p)
    common.add_output_flags(p, "directory for the new results (default RUN/eval-<attack>)")


def run(args: argparse.Namespace) -> int:
    source = Path(args.run_path)
    curve_file = source / "curve.pt" if source.is_dir() else source
    record, curve, pair = pipeline.load_curve_run(curve_file)
    saved = {k: v for k, v in flatten(record.get("config") or {}).items()}
    cfg = build_config(ConnectRunConfig, None, {**saved, **common.overrides(args)})
    pipeline.preflight(cfg)
    reporter = Reporter(quiet=args.json)
    runtime = Runtime.create(cfg.device, cfg.speed)
    data = load_data(cfg.data)
    pair.check_data(data)
    tag = cfg.path.attack.replace(":", "-").replace(",", "-").replace("/", "_").replace("=", "")
    out = ensure_out_dir(args.out or curve_file.parent / f"eval-{tag}-{cfg.path.points}pts")
    endpoints = pipeline.endpoints_from_record(record, pair, runtime,
                                               data.train.images[:2].float())
    curve = curve.to(runtime.device)
    result = pipeline.evaluate_run(curve, endpoints, cfg, data.to(runtime.device), runtime,
                                   reporter)
    summary = pipeline.summarize(result, cfg)
    summary.update({"source": str(curve_file), "record": run_record(args.argv),
                    "runtime": runtime.describe()})
    paths = {result.label: result.points, **result.lines}
    write_path_files(out, paths, summary)
    pipeline.write_best(result, pair, summary, cfg, out)
    plot_paths(out, paths, f"{curve_file} ({cfg.path.attack})")
    if args.json:
        print(summary_json(out, summary))
        return 0
    print_summary(summary, f"robust-mc eval: {curve_file} under {cfg.path.attack}")
    reporter.print(f"wrote {out}/")
    return 0
