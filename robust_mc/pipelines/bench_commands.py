"""`robust-mc bench --print-commands`: the grid's missing work as one command line per unit, for
job arrays and schedulers. Each line runs with its settings written beside its output (a YAML
file the command reads with ``--config``), so that the bench reads its result back as its own;
the endpoint training lines, if any, come first and must finish before the connect lines."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

import yaml

from robust_mc.config import BenchRunConfig, to_dict
from robust_mc.pipelines.bench import (
    Cell,
    cell_config,
    cell_dir,
    curve_seeds,
    endpoint_config,
    endpoint_path,
    grid,
    validate,
)
from robust_mc.pipelines.curve_optim import follow_endpoints, follow_recipe
from robust_mc.pipelines.endpoint_training import recipe_of
from robust_mc.pipelines.pair import load_pair
from robust_mc.run.files import atomic_write_text, ensure_out_dir
from robust_mc.store.checkpoint import LoadOptions


def _write_settings(path: Path, settings: dict) -> Path:
    return atomic_write_text(path, yaml.safe_dump(settings, sort_keys=False))


def _line(*words: str | Path) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def missing_work(cfg: BenchRunConfig, out: Path, given: dict[str, str] | None = None
                 ) -> list[str]:
    """``robust-mc train`` lines for endpoints not trained yet, then ``robust-mc connect`` lines
    for cells not finished (their settings written to ``<cell>/connect.yaml``, the curve's
    optimiser following each pair's recipe where ``given``, the connect section's keys the
    user set, leaves it open: endpoints still to be trained record the train section's)."""
    methods, given_pairs = validate(cfg)
    given = given or {}
    out = ensure_out_dir(out)
    lines: list[str] = []
    pairs: list[tuple[str, str, str]] = [(f"pair{i}", a, b)
                                         for i, (a, b) in enumerate(cfg.bench.pairs)]
    train = endpoint_config(cfg)
    for seeds in cfg.bench.endpoint_seeds:
        for seed in seeds:
            path = endpoint_path(out, seed)
            settings = path.with_suffix(".yaml")
            if not path.is_file() and not settings.is_file():
                seeded = replace(train, optim=replace(train.optim, seed=seed))
                _write_settings(settings, to_dict(seeded))
                lines.append(_line("robust-mc", "train", "--config", settings, "--out", path))
        pairs.append((f"seeds{seeds[0]}-{seeds[1]}", str(endpoint_path(out, seeds[0])),
                      str(endpoint_path(out, seeds[1]))))
    known = dict(given_pairs)
    for pair_id, a, b in pairs:
        unfinished: list[Cell] | None = None
        optim = follow_recipe(cfg.connect.optim, given, recipe_of(train.optim))
        if pair_id in known or (Path(a).is_file() and Path(b).is_file()):
            pair = known.get(pair_id) or load_pair(a, b, LoadOptions(named=(train.model.arch,)))
            optim = follow_endpoints(cfg.connect.optim, given, pair.a, pair.b)
            unfinished = [c for c in grid(cfg, methods, [(pair_id, pair)], out,
                                          {pair_id: optim}) if not c.is_done()]
        for method in methods:
            for curve_seed in curve_seeds(cfg, method):
                cell_out = cell_dir(out, pair_id, method, curve_seed)
                if unfinished is not None and all(c.out != cell_out for c in unfinished):
                    continue
                settings = _write_settings(cell_out / "connect.yaml",
                                           to_dict(cell_config(cfg, method, curve_seed,
                                                               optim.optim)))
                lines.append(_line("robust-mc", "connect", a, b, "--config", settings, "--out",
                                   cell_out))
    return lines
