"""`robust-mc ensemble RUN_DIR -k K`: a robust ensemble of points on a trained path."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from robust_mc.commands import common
from robust_mc.config import ConnectRunConfig, EnsembleRunConfig, build_config, to_dict
from robust_mc.data import load_data
from robust_mc.errors import UserError
from robust_mc.evaluation.ensemble import greedy_select
from robust_mc.evaluation.path import network_at, path_attack
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.models.ensemble import Ensemble
from robust_mc.pipelines.connect import config_from_run, load_curve_run
from robust_mc.pipelines.pair import endpoints_from_run
from robust_mc.report.progress import Reporter
from robust_mc.run.checkpoint import Checkpoint, checkpoint_from_model, save_checkpoint
from robust_mc.run.files import atomic_write_json, ensure_out_dir
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import start_runtime

HELP = "choose K points on a trained path that together are most robust (greedy, validation)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_path", metavar="RUN", help="a connect run directory, or its curve.pt")
    common.add_settings(p, EnsembleRunConfig, {"-k": "ensemble.k:K",
                                               "--combine": "ensemble.combine"})
    common.add_data_flags(p, ConnectRunConfig)
    common.add_path_flags(p)
    common.add_speed_flags(p, ConnectRunConfig)
    common.add_model_file_flags(p)
    common.add_output_flags(p, "directory for ensemble.pt and ensemble.json "
                               "(default RUN/ensemble-k<K>-<combine>)")


def run(args: argparse.Namespace) -> int:
    source = Path(args.run_path)
    curve_file = source / "curve.pt" if source.is_dir() else source
    saved, pair = load_curve_run(curve_file, common.load_options(args))
    typed = common.overrides(args)
    choice = build_config(EnsembleRunConfig, None, {k: v for k, v in typed.items()
                                                    if k.startswith("ensemble.")}).ensemble
    cfg = config_from_run(saved, {k: v for k, v in typed.items()
                                  if not k.startswith("ensemble.")})
    k, combine = choice.k, choice.combine
    if not 1 <= k <= cfg.path.points:
        raise UserError(f"-k {k}: choose between 1 and the {cfg.path.points} points on the "
                        "path (--points sets how many)")
    out = Path(args.out) if args.out else curve_file.parent / f"ensemble-k{k}-{combine}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory path")
    reporter = Reporter(quiet=args.json)
    runtime = start_runtime(cfg.device, cfg.speed)
    data = load_data(cfg.data)
    pair.check_data(data)
    endpoints = endpoints_from_run(saved, runtime, data.train.images[:2].float())
    on_device = data.to(runtime.device)
    curve = saved.curve.to(runtime.device)
    path, attack = cfg.path, path_attack(cfg.path, cfg.attack, data.info.num_classes)
    ts = torch.linspace(0, 1, path.points).tolist()
    reporter.print(f"[bold]ensemble[/] of {k} from {len(ts)} points on {curve_file} "
                   f"({combine}), selected on validation robust accuracy ({path.attack})")
    candidates = [network_at(curve, endpoints.a, t, on_device, path, cfg.attack, runtime)
                  for t in ts]
    val, test = on_device.val.take(path.val_limit), on_device.test.take(path.test_limit)
    selection = greedy_select(candidates, k, val, attack, runtime,
                              batch_size=path.batch_size, seed=path.seed, combine=combine,
                              reporter=reporter, labels=[f"t={t:.2f}" for t in ts])
    chosen = [candidates[i] for i in selection.indices]
    ensemble = Ensemble(chosen, combine)
    contenders = {"ensemble": ensemble, "endpoint a": endpoints.a, "endpoint b": endpoints.b,
                  "a + b": Ensemble([endpoints.a, endpoints.b], combine)}
    results = {name: evaluate_seeded(model, test, attack, runtime, path.batch_size,
                                     path.seed).as_dict()
               for name, model in contenders.items()}
    members_t = [ts[i] for i in selection.indices]
    summary = {"source": str(curve_file), "k": k, "combine": combine,
               "members_t": members_t, "selection": selection.rounds, "test": results,
               "eval_attack": path.attack, "eps": cfg.attack.eps, "config": to_dict(cfg),
               "record": run_record(args.argv)}
    out = ensure_out_dir(out)
    members = [checkpoint_from_model(m, pair.a.arch, pair.a.arch_kwargs).state_dict
               for m in chosen]
    meta = {"dataset": cfg.data.dataset, "kind": "ensemble", "members_t": members_t,
            "metrics": {"test": results["ensemble"], "eval_attack": path.attack,
                        "eps": cfg.attack.eps},
            "source": str(curve_file), "config": to_dict(cfg)}
    ckpt = Checkpoint(pair.a.arch, pair.a.arch_kwargs, members[0], pair.a.normalization, meta,
                      members=members, combine=combine)
    save_checkpoint(ckpt, out / "ensemble.pt")
    atomic_write_json(out / "ensemble.json", summary)
    if args.json:
        print(json.dumps({"out": str(out), **{k: summary[k] for k in
                                              ("members_t", "test", "selection")}}, indent=2))
        return 0
    table = Table(title=f"robust-mc ensemble: {k} points of {curve_file} "
                        f"(test, {path.attack}, eps {cfg.attack.eps * 255:.3g}/255)")
    for column in ("model", "members", "clean acc", "robust acc", "robust loss"):
        table.add_column(column, justify="left" if column in ("model", "members") else "right")
    described = {"ensemble": ", ".join(f"t={t:.2f}" for t in members_t), "endpoint a": "t=0",
                 "endpoint b": "t=1", "a + b": "t=0, t=1"}
    for name, metrics in results.items():
        table.add_row(name, described[name], f"{metrics['clean_acc']:.2f}%",
                      f"{metrics['robust_acc']:.2f}%", f"{metrics['robust_loss']:.3f}")
    Console().print(table)
    reporter.print(f"wrote {out}/: ensemble.pt (robust-mc eval/info read it), ensemble.json")
    return 0
