"""`robust-mc bench`: robust barriers over a grid of endpoint pairs, methods and curve seeds, in
the form of the paper's tables (mean +- std over pairs and seeds).

Every cell is one `connect` run in ``OUT/cells/<pair>/<method>[/seed<N>]``. A finished cell
(same settings, same endpoints) is read back, an interrupted one continues where it stopped, so a
rerun computes only what is missing. Endpoints trained from seeds live in ``OUT/endpoints``.

Methods: ``line`` or ``curve`` (the connect curve kind, bezier by default), then ``+align``
(neuron alignment of b to a first, with the connect section's map class; ``+permutations``,
``+head-rotations`` or ``+orthogonal`` align with that class; ``+learned`` or ``+learned-adv``
then train the maps on the line's loss, on clean or PGD inputs), ``+pam`` (PAM's permutation
updates while the curve trains; ``curve+pam`` starts from b as given, ``curve+align+pam``
from the alignment) and/or ``+repair`` or ``+repair-adv`` (every t's unit statistics
repaired, ``path.repair: repair``, on clean inputs or on each network's own PGD examples).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from robust_mc.config import (
    BenchRunConfig,
    ConnectRunConfig,
    OptimConfig,
    PathConfig,
    TrainRunConfig,
    build_config,
    find_preset,
    load_yaml,
)
from robust_mc.core.align import Inputs
from robust_mc.core.curves import has_bends
from robust_mc.data import load_data, parse_normalization
from robust_mc.errors import UserError
from robust_mc.pipelines.connect import completed_run, run_connect
from robust_mc.pipelines.curve_optim import CurveOptim, follow_endpoints
from robust_mc.pipelines.endpoint_training import trained_endpoint
from robust_mc.pipelines.pair import Pair, load_pair
from robust_mc.pipelines.verification import needs_verification
from robust_mc.report.path import robust_accuracy_along_t
from robust_mc.run.claims import holding, try_claim, wait_for
from robust_mc.run.files import ensure_out_dir
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.bench_table import (
    BenchResult,
    CellResult,
    Method,
    aggregate,
    parse_method,
)
from robust_mc.store.checkpoint import LoadOptions
from robust_mc.store.path_summary import PathSummary
from robust_mc.store.resume import ResumePolicy, remove_stale_temps
from robust_mc.store.verified_points import VerifiedPoints


def cell_config(cfg: BenchRunConfig, method: Method, seed: int | None,
                curve_optim: OptimConfig | None = None) -> ConnectRunConfig:
    """The connect settings of one cell: the bench's connect section, its data and device, the
    method's curve, alignment and PAM, the curve's optimiser (``curve_optim``: the pair's, see
    :func:`pair_optims`; else the connect section's) and the cell's curve seed."""
    base = cfg.connect
    kind = base.curve.kind if has_bends(base.curve.kind) else "bezier"
    optim = curve_optim or base.optim
    optim = replace(optim, seed=seed) if seed is not None else optim
    align = replace(base.align, maps=method.maps) if method.maps is not None else base.align
    if method.learned is not None:
        align = replace(align, inputs=method.learned,
                        learn_steps=align.learn_steps or LEARN_STEPS)
    return replace(base, data=cfg.data, device=cfg.device, aligned=method.align, align=align,
                   curve=replace(base.curve, kind=kind if method.curve else "line"),
                   pam=replace(base.pam, enabled=method.pam), optim=optim,
                   path=repaired(replace(base.path, compare_line=False), method.repair),
                   verify=replace(base.verify, enabled=base.verify.enabled or cfg.bench.verify))


LEARN_STEPS = 200  # +learned's steps where the connect section sets none (align.learn_steps)


def repaired(path: PathConfig, inputs: Inputs | None) -> PathConfig:
    """The path settings of a ``+repair`` (clean) or ``+repair-adv`` (adversarial) method."""
    if inputs is None:
        return path
    return replace(path, repair="repair", repair_inputs=inputs)


def validate(cfg: BenchRunConfig) -> tuple[list[Method], list[tuple[str, Pair]]]:
    """Everything about the grid that can be wrong, checked before anything is written: the
    methods, the seeds, and the given endpoint pairs (loaded)."""
    methods = [parse_method(m) for m in cfg.bench.methods]
    if not methods:
        raise UserError("bench.methods is empty; list e.g. line, line+align, curve, curve+align")
    if not cfg.bench.seeds and any(m.curve for m in methods):
        raise UserError("bench.seeds is empty; give at least one curve seed")
    if not cfg.bench.pairs and not cfg.bench.endpoint_seeds:
        raise UserError("the bench has no endpoints: give bench.pairs (checkpoints) or "
                        "bench.endpoint_seeds (seed pairs to train) in its config")
    for seeds in cfg.bench.endpoint_seeds:
        if len(seeds) != 2 or seeds[0] == seeds[1]:
            raise UserError(f"bench.endpoint_seeds: {seeds} is not a pair of two seeds")
    given = []
    for i, pair in enumerate(cfg.bench.pairs):
        if len(pair) != 2:
            raise UserError(f"bench.pairs[{i}]: give two checkpoints [a.pt, b.pt]")
        given.append((f"pair{i}", load_pair(pair[0], pair[1], load_options(cfg))))
    return methods, given


def load_options(cfg: BenchRunConfig) -> LoadOptions:
    """How the bench reads endpoint files: the config the user passed names the code they allow
    (``bench.arch``, the train section's architecture, ``bench.trust_code``)."""
    b = cfg.bench
    return LoadOptions(arch=b.arch, trust_code=b.trust_code, named=(cfg.train.model.arch,),
                       arch_kwargs=b.model_kwargs or None, model_dir=b.model_dir,
                       normalization=parse_normalization(b.normalization)
                       if b.normalization else None)


def endpoint_pairs(cfg: BenchRunConfig, given: list[tuple[str, Pair]], out: Path,
                   runtime: Runtime, reporter: Reporter, argv: list[str] | None,
                   policy: ResumePolicy,
                   stop: StopSignals) -> list[tuple[str, Pair]]:
    """The pairs to connect: the given checkpoints, then those trained from seed pairs (each
    trained once by whichever worker claims it first; the others wait for it)."""
    pairs = list(given)
    if cfg.bench.endpoint_seeds:
        train = endpoint_config(cfg)
        data = load_data(train.data)
        trained: dict[int, str] = {}
        for seeds in cfg.bench.endpoint_seeds:
            for seed in seeds:
                if seed not in trained:
                    path = endpoint_path(out, seed)
                    reporter.print(f"[bold]endpoint[/] seed {seed}: {path}")
                    seeded = replace(train, optim=replace(train.optim, seed=seed))
                    while (claim := try_claim(path)) is None:
                        reporter.print(f"  another worker trains {path}; waiting for it")
                        wait_for(path, path.is_file)
                    with holding(claim):
                        trained_endpoint(seeded, path, runtime, reporter, data=data, argv=argv,
                                         policy=policy, stop=stop)
                    trained[seed] = str(path)
            pairs.append((f"seeds{seeds[0]}-{seeds[1]}",
                          load_pair(trained[seeds[0]], trained[seeds[1]],
                                    LoadOptions(named=(train.model.arch,)))))
    return pairs


def endpoint_config(cfg: BenchRunConfig) -> TrainRunConfig:
    """The train settings of the bench's endpoints (before each one's seed)."""
    return replace(cfg.train, data=cfg.data, device=cfg.device)


def endpoint_path(out: Path, seed: int) -> Path:
    return out / "endpoints" / f"seed{seed}.pt"


def load_bench_config(yaml_file: str, overrides: dict) -> BenchRunConfig:
    """The bench configuration; with ``bench.train_preset``, the preset is the base of the train
    section (which overrides it key by key)."""
    cfg = build_config(BenchRunConfig, yaml_file, overrides)
    preset = cfg.bench.train_preset
    if preset is None:
        return cfg
    base = {"train": load_yaml(find_preset(preset))}
    return build_config(BenchRunConfig, yaml_file, overrides, base=base)


@dataclass(frozen=True)
class Shard:
    """``--shard i/n``: this worker takes every n-th cell of the grid, from the i-th (0-based)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, _, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = cls(-1, 0)
        if not 0 <= shard.index < shard.count:
            raise UserError(f"--shard {text!r}: give i/n with 0 <= i < n, e.g. 0/4")
        return shard

    def takes(self, number: int) -> bool:
        return number % self.count == self.index


@dataclass(frozen=True)
class Cell:
    """One connect run of the grid: its pair, method, curve seed, directory and settings."""

    pair_id: str
    pair: Pair
    digests: dict[str, str]
    method: Method
    seed: int | None
    out: Path
    cfg: ConnectRunConfig
    notes: tuple[str, ...] = ()  # shown as the cell's run starts

    def finished(self) -> PathSummary | None:
        """The cell's summary if it is complete with these settings (and verified if asked)."""
        summary = completed_run(self.out, self.cfg, self.digests)
        return summary if summary is not None and not needs_verification(summary, self.cfg) \
            else None

    def is_done(self) -> bool:
        return self.finished() is not None

    def result(self, summary: PathSummary, cached: bool) -> CellResult:
        return CellResult(self.pair_id, self.method.name, self.seed, self.out, cached,
                          summary.barriers["test"], robust_accuracy_along_t(self.out),
                          summary.verification)


def pair_optims(cfg: BenchRunConfig, pairs: list[tuple[str, Pair]],
                given: dict[str, str]) -> dict[str, CurveOptim]:
    """Per pair, the curve's optimiser: the connect section's settings, following the pair's
    recipe where ``given`` (the connect section's keys the user set) names no optimizer."""
    return {pair_id: follow_endpoints(cfg.connect.optim, given, pair.a, pair.b)
            for pair_id, pair in pairs}


def grid(cfg: BenchRunConfig, methods: list[Method], pairs: list[tuple[str, Pair]],
         out: Path, optims: dict[str, CurveOptim] | None = None) -> list[Cell]:
    """Every cell, in a fixed order (pairs, then methods, then curve seeds); ``optims``: each
    pair's curve optimiser (:func:`pair_optims`), the connect section's where not given."""
    cells = []
    for pair_id, pair in pairs:
        digests = pair.digests
        chosen = optims.get(pair_id) if optims else None
        for method in methods:
            notes = (chosen.describe(),) if chosen is not None and method.curve else ()
            for seed in curve_seeds(cfg, method):
                cells.append(Cell(pair_id, pair, digests, method, seed,
                                  cell_dir(out, pair_id, method, seed),
                                  cell_config(cfg, method, seed,
                                              chosen.optim if chosen is not None else None),
                                  notes))
    return cells


def curve_seeds(cfg: BenchRunConfig, method: Method) -> list[int | None]:
    """A curve method runs once per curve seed; a line once."""
    return list(cfg.bench.seeds) if method.curve else [None]


def cell_dir(out: Path, pair_id: str, method: Method, seed: int | None) -> Path:
    cell = out / "cells" / pair_id / method.name
    return cell / f"seed{seed}" if seed is not None else cell


def run_bench(cfg: BenchRunConfig, out: Path, runtime: Runtime, reporter: Reporter,
              argv: list[str] | None = None, fresh: bool = False,
              stop: StopSignals | None = None, shard: Shard | None = None,
              given: dict[str, str] | None = None) -> BenchResult:
    """Every cell of the grid (this worker's share with ``shard``), then the aggregated table.
    The grid is checked before ``out`` is created; finished cells are read back, interrupted ones
    continued, and cells whose settings changed started over (all recomputed with ``fresh``).
    Several workers may fill one ``out`` at once: each cell is claimed by one of them, and a
    worker without a shard waits for the cells others hold, so that it ends with the table.
    ``given``: the connect section's keys the user set (``given_settings``); curves follow each
    pair's recipe in the optimiser settings it leaves open."""
    stop = stop or StopSignals()
    methods, given_pairs = validate(cfg)
    out = ensure_out_dir(out)
    remove_stale_temps(out)
    policy = ResumePolicy.FRESH if fresh else ResumePolicy.REPLACE
    pairs = endpoint_pairs(cfg, given_pairs, out, runtime, reporter, argv, policy, stop)
    cells = grid(cfg, methods, pairs, out, pair_optims(cfg, pairs, given or {}))
    verified = VerifiedPoints(out / "verified")  # an endpoint is the same network in every cell
    mine = [cell for number, cell in enumerate(cells) if shard is None or shard.takes(number)]
    results: dict[Path, CellResult] = {}
    held_elsewhere = []
    for number, cell in enumerate(mine, start=1):
        summary = None if fresh else cell.finished()
        if summary is not None:
            results[cell.out] = cell.result(summary, cached=True)
        elif (claim := try_claim(cell.out)) is None:
            held_elsewhere.append(cell)
        else:
            results[cell.out] = compute(cell, claim, number, len(mine), runtime, reporter,
                                        argv, policy, stop, verified)
    for cell in held_elsewhere:
        reporter.print(f"waiting for {cell.out}, which another worker computes")
        while not wait_for(cell.out, cell.is_done):
            if (claim := try_claim(cell.out)) is not None:  # its worker left it unfinished
                results[cell.out] = compute(cell, claim, 0, len(mine), runtime, reporter,
                                            argv, policy, stop, verified)
                break
        else:
            summary = cell.finished()
            assert summary is not None
            results[cell.out] = cell.result(summary, cached=True)
    for cell in cells:  # other shards' cells that are already done
        if cell.out not in results and (summary := cell.finished()) is not None:
            results[cell.out] = cell.result(summary, cached=True)
    done = [results[c.out] for c in cells if c.out in results]
    missing = [c.out for c in cells if c.out not in results]
    cached = sum(c.cached for c in done)
    if cached:
        reporter.print(f"{cached} of {len(cells)} cells read back from {out / 'cells'}")
    return BenchResult(methods, done, aggregate(done, [m.name for m in methods]), missing)


def compute(cell: Cell, claim: Path, number: int, total: int, runtime: Runtime,
            reporter: Reporter, argv: list[str] | None, policy: ResumePolicy,
            stop: StopSignals, verified: VerifiedPoints) -> CellResult:
    """Run one claimed cell, holding its claim; its verified points are read back from (and
    added to) ``verified``, shared by every cell."""
    reporter.print(f"[bold]cell {number}/{total}[/]: {cell.pair_id} {cell.method.name}"
                   + (f" seed {cell.seed}" if cell.seed is not None else ""))
    with holding(claim):
        summary = run_connect(cell.pair, cell.cfg, cell.out, runtime, reporter, argv, policy,
                              stop, verified, cell.notes)
    return cell.result(summary, cached=False)


