"""`robust-mc layers a.pt b.pt`: which layers carry the (robust) barrier, measured and predicted."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robust_mc.commands import common
from robust_mc.config import LayersRunConfig, build_config
from robust_mc.evaluation.layers import GroupResult
from robust_mc.pipelines.layers import layers_json, run_layers
from robust_mc.pipelines.pair import load_pair
from robust_mc.report.plot import figure
from robust_mc.run.files import (
    atomic_write_text,
)
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime

ORDER = 70
DISTRIBUTED = True  # torchrun may launch it
HELP = "layer-wise clean and robust barriers, measured and predicted to second order"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="first endpoint")
    p.add_argument("b", help="second endpoint (aligned to a unless --no-align)")
    common.add_config_flag(p)
    common.add_data_flags(p, LayersRunConfig)
    common.add_attack_flags(p, LayersRunConfig)
    common.add_align_flags(p, LayersRunConfig)
    common.add_settings(p.add_argument_group("layers"), LayersRunConfig, {
        "--groups": "layers.groups", "--points": "layers.points", "--samples": "layers.samples",
        "--compare-align": "layers.compare_align", "--bn-data": "path.bn_data",
        **common.REPAIR_FLAGS})
    common.add_speed_flags(p, LayersRunConfig)
    common.add_model_file_flags(p)
    common.add_output_flags(p, "directory for layers.json/csv/png (default runs/layers-<a>-<b>)")


def run(args: argparse.Namespace) -> int:
    pair = load_pair(args.a, args.b, common.load_options(args))
    overrides = common.overrides(args)
    cfg = build_config(LayersRunConfig, args.config, overrides,
                       base=pair.config_base(keep_attack=("eps", "norm")))
    cfg.align.map_class()  # a rotation class with a method that reads no activations: refused
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    out = Path(args.out or Path("runs") / f"layers-{Path(args.a).stem}-{Path(args.b).stem}")
    reports = run_layers(pair, cfg, runtime, reporter, out, args.argv)
    result = layers_json(reports)
    atomic_write_text(out / "layers.csv", to_csv(reports))
    plot(out, reports)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console = Console()
    for label, rows in reports.items():
        console.print(table(rows, f"layer-wise barriers ({label}), {args.a} -> {args.b}"))
        rho = result[label]["rank_correlation"]
        console.print(f"rank correlation over groups, predicted vs measured midpoint: clean "
                      f"{rho['clean']:.2f}, robust {rho['robust']:.2f}")
    reporter.print(f"wrote {out}/: layers.json, layers.csv, layers.png")
    return 0


def table(rows: list[GroupResult], title: str) -> Table:
    t = Table(title=title)
    t.add_column("group", no_wrap=True)
    for column in ("params", "clean measured", "clean midpoint", "clean predicted",
                   "robust measured", "robust midpoint", "robust predicted"):
        t.add_column(column, justify="right")
    for r in rows:
        t.add_row(r.name, f"{r.parameters:,}", f"{r.measured('clean'):.4f}",
                  f"{r.midpoint('clean'):.4f}", f"{r.predicted_clean:.4f}",
                  f"{r.measured('robust'):.4f}", f"{r.midpoint('robust'):.4f}",
                  f"{r.predicted_robust:.4f}")
    return t


def to_csv(reports: dict[str, list[GroupResult]]) -> str:
    buffer = io.StringIO()
    fields = ["alignment", "group", "parameters", "measured_clean_barrier",
              "measured_clean_midpoint", "predicted_clean_barrier", "measured_robust_barrier",
              "measured_robust_midpoint", "predicted_robust_barrier"]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for label, rows in reports.items():
        for r in rows:
            writer.writerow({"alignment": label, **r.as_dict()})
    return buffer.getvalue()


def plot(out: Path, reports: dict[str, list[GroupResult]]) -> None:
    with figure(out / "layers.png", 1, 2, size=(10, 4.5)) as (fig, axes):
        if fig is None:
            return
        for ax, kind in zip(axes, ("clean", "robust"), strict=True):
            for label, rows in reports.items():
                rows = [r for r in rows if not r.name.startswith("(")]
                ax.scatter([getattr(r, f"predicted_{kind}") for r in rows],
                           [r.midpoint(kind) for r in rows], label=label)
                for r in rows:
                    ax.annotate(r.name, (getattr(r, f"predicted_{kind}"), r.midpoint(kind)),
                                fontsize=6)
            lo, hi = ax.get_xlim()
            ax.plot([lo, hi], [lo, hi], ":", color="grey")
            ax.set_xlabel("predicted midpoint barrier")
            ax.set_ylabel("measured midpoint barrier")
            ax.set_title(f"{kind} loss, per group")
            ax.legend(fontsize=8)
