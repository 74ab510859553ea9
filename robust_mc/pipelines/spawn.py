"""`robust-mc spawn`: where on the training trajectory two robust runs part (Landscaping Linear
Mode Connectivity, 2024; Frankle et al.'s spawning experiment, with PGD training).

One parent is trained for the train section's epochs; its resumable state is kept at each spawn
epoch k. From each, two children continue with their own seeds (data order, random starts) to
the parent's last epoch, on the parent's schedule. Between the two children of each k the
straight line is measured, unaligned and aligned (clean and robust barriers), and the layer-wise
barriers with their second-order prediction. Everything is cached: a rerun computes only what is
missing, and an interrupted training continues.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from robust_mc.config import (
    LayersRunConfig,
    SpawnRunConfig,
    TrainRunConfig,
    to_dict,
)
from robust_mc.data import load_data
from robust_mc.errors import UserError
from robust_mc.pipelines.connect import run_connect
from robust_mc.pipelines.endpoint_training import (
    state_path_for,
    train_endpoint,
    trained_endpoint,
)
from robust_mc.pipelines.layers import run_layers
from robust_mc.pipelines.pair import Pair, load_pair
from robust_mc.run.files import as_written, ensure_out_dir, remove
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import LoadOptions, save_checkpoint
from robust_mc.store.records import PathLabel
from robust_mc.store.resume import ResumePolicy, attack_generator, rng_state, saved_progress
from robust_mc.store.spawn_points import LayerFigures, SpawnPoint
from robust_mc.store.train_state import TrainState, read_train_state

WHOLE = "(whole network)"


def validate(cfg: SpawnRunConfig) -> list[int]:
    epochs = sorted(set(cfg.spawn.epochs))
    last = cfg.train.optim.epochs
    if not epochs or epochs[0] < 0 or epochs[-1] >= last:
        raise UserError(f"spawn.epochs {cfg.spawn.epochs}: give epochs from 0 to "
                        f"{last - 1} (the parent trains {last}; children need at least one)")
    seeds = cfg.spawn.child_seeds
    if len(seeds) != 2 or seeds[0] == seeds[1] or cfg.train.optim.seed in seeds:
        raise UserError(f"spawn.child_seeds {seeds}: give two seeds that differ from each "
                        f"other and from the parent's ({cfg.train.optim.seed})")
    return epochs


def parent_config(cfg: SpawnRunConfig) -> TrainRunConfig:
    train = replace(cfg.train, data=cfg.data, device=cfg.device)
    return replace(train, optim=replace(train.optim, save_every=1))


def snapshot_path(out: Path, epoch: int) -> Path:
    return out / "parent" / f"epoch{epoch}.state.pt"


def train_parent(cfg: SpawnRunConfig, epochs: list[int], out: Path, runtime: Runtime,
                 reporter: Reporter, stop: StopSignals) -> None:
    """The parent, keeping its resumable state at each spawn epoch (skipped when kept)."""
    parent = parent_config(cfg)
    path = out / "parent" / "parent.pt"
    if path.is_file() and all(snapshot_path(out, k).is_file() for k in epochs):
        return

    def keep(epoch: int, state: TrainState) -> None:
        if epoch in epochs:
            state.write(snapshot_path(out, epoch))

    reporter.print(f"[bold]parent[/] seed {parent.optim.seed}, {parent.optim.epochs} epochs; "
                   f"children fork at epochs {', '.join(map(str, epochs))}")
    ckpt = train_endpoint(parent, runtime, reporter, state_path=state_path_for(path),
                          stop=stop, snapshot=keep)
    save_checkpoint(ckpt, path)
    remove(state_path_for(path))


def fork(out: Path, epoch: int, child: TrainRunConfig, path: Path, device: torch.device) -> None:
    """Start ``child`` from the parent's state at ``epoch``: the parent's weights, optimizer
    and position, the child's own configuration and random streams."""
    state_file = state_path_for(path)
    if path.is_file() or state_file.is_file():
        return  # trained, or training (it continues)
    snapshot = snapshot_path(out, epoch)
    fix = "delete it (the parent is retrained to that epoch)"
    if not snapshot.is_file():
        raise UserError(f"{snapshot}: the parent's training state at epoch {epoch} is missing; "
                        "rerun the same command (the parent is retrained to that epoch)")
    state = read_train_state(snapshot, fix)
    seed = child.optim.seed
    state.with_run(to_dict(child), rng_state(torch.Generator().manual_seed(seed),
                                             attack_generator(seed, device))).write(state_file)


def run_spawn(cfg: SpawnRunConfig, out: Path, runtime: Runtime, reporter: Reporter,
              argv: list[str] | None = None, stop: StopSignals | None = None
              ) -> list[SpawnPoint]:
    """The parent, the children of every spawn epoch, and the lines between them."""
    stop = stop or StopSignals()
    epochs = validate(cfg)
    out = ensure_out_dir(out)
    data = load_data(cfg.data)
    train_parent(cfg, epochs, out, runtime, reporter, stop)
    parent = parent_config(cfg)
    points = []
    for k in epochs:
        children = []
        for number, seed in enumerate(cfg.spawn.child_seeds, start=1):
            child = replace(parent, optim=replace(parent.optim, seed=seed))
            path = out / f"epoch{k}" / f"child{number}.pt"
            fork(out, k, child, path, runtime.device)
            reporter.print(f"[bold]epoch {k}[/]: child {number} (seed {seed})")
            trained_endpoint(child, path, runtime, reporter, data=data, argv=argv, stop=stop)
            children.append(str(path))
        points.append(measure(cfg, k, children, out / f"epoch{k}", runtime, reporter, argv,
                              stop))
    return points


def measure(cfg: SpawnRunConfig, epoch: int, children: list[str], out: Path, runtime: Runtime,
            reporter: Reporter, argv: list[str] | None, stop: StopSignals) -> SpawnPoint:
    """The lines between two children (aligned and not) and the layer-wise barriers."""
    pair = load_pair(children[0], children[1], LoadOptions(named=(cfg.train.model.arch,)))
    connect = cfg.connect
    line_cfg = replace(connect, data=cfg.data, device=cfg.device, aligned=True,
                       curve=replace(connect.curve, kind="line"),
                       path=replace(connect.path, compare_line=True))
    summary = run_connect(pair, line_cfg, out / "line", runtime, reporter, argv,
                          ResumePolicy.AUTO, stop)
    layers_cfg = LayersRunConfig(data=cfg.data, attack=connect.attack, align=connect.align,
                                 aligned=True, layers=cfg.layers, path=connect.path,
                                 speed=connect.speed, device=cfg.device)
    groups = layer_figures(pair, layers_cfg, out / "layers", runtime, reporter, argv)
    return SpawnPoint(epoch, summary.lines[PathLabel("line", False)]["test"],
                      summary.barriers["test"], groups)


def layer_figures(pair: Pair, cfg: LayersRunConfig, out: Path, runtime: Runtime,
                  reporter: Reporter, argv: list[str] | None) -> LayerFigures:
    """The whole network's measured and predicted midpoint barriers (aligned), and the layer
    group with the largest measured robust barrier; read back when computed with ``cfg``."""
    saved = saved_progress(out / "layers.json", to_dict(cfg))
    if saved is None:
        rows = [r.as_dict() for r in run_layers(pair, cfg, runtime, reporter, out,
                                                argv)["aligned"]]
        return _layer_figures(rows)
    with as_written(out / "layers.json", "delete it to measure the layers again"):
        return _layer_figures(saved["aligned"]["groups"])


def _layer_figures(rows: list[dict]) -> LayerFigures:
    """The figures of the whole network's row and the worst group's; ValueError for rows that
    are not what ``layers`` writes."""
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("group"), str) for r in rows):
        raise ValueError("groups must be a list of rows, each naming its group")
    whole = next((r for r in rows if r["group"] == WHOLE), None)
    if whole is None:
        raise ValueError(f"no row for the whole network ({WHOLE!r})")
    groups = [r for r in rows if r["group"] != WHOLE]
    worst = max(groups, key=lambda r: float(r["measured_robust_barrier"])) if groups else whole
    return LayerFigures(float(whole["measured_clean_midpoint"]),
                        float(whole["predicted_clean_barrier"]),
                        float(whole["measured_robust_midpoint"]),
                        float(whole["predicted_robust_barrier"]),
                        worst["group"], float(worst["measured_robust_barrier"]))
