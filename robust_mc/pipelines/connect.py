"""`robust-mc connect` and `robust-mc eval`: one pipeline from two endpoints to barriers.

connect = align b to a -> train a robust curve -> evaluate along it -> barriers and the best
on-path robust model. eval = load a saved curve -> evaluate along it -> the same report.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attacks import parse_attack_spec
from robust_mc.config import ConnectRunConfig, build_config, flatten, to_dict
from robust_mc.core.align import align_models
from robust_mc.core.barriers import path_summary
from robust_mc.core.curves import Curve, flatten_params
from robust_mc.core.permutation import inverse, permute_model, trace_permutation_spec
from robust_mc.data import Data
from robust_mc.errors import Interrupted, UserError
from robust_mc.evaluation.path import PointResult, evaluate_path, path_attack
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.models import Classifier
from robust_mc.pipelines.pair import Pair
from robust_mc.report.progress import Reporter
from robust_mc.run.checkpoint import (
    Checkpoint,
    LoadOptions,
    checked_state_dict,
    checkpoint_from_model,
    malformed,
    plain,
    read_torch_file,
    recorded_architecture,
    save_checkpoint,
    state_digest,
)
from robust_mc.run.files import atomic_torch_save, atomic_write_json, read_json
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.resume import (
    attack_generator,
    check_same_config,
    config_differences,
    remove_stale_temps,
    restore_rng,
    rng_state,
)
from robust_mc.run.runtime import Runtime, seed_everything
from robust_mc.train.loop import EpochResult, Position, Trainer, TrainingContext, make_sgd
from robust_mc.train.tasks import CurveTask

CURVE_FORMAT = "robust-mc-curve/1"
PROGRESS_FILE = "path-progress.json"
RUN_FILES = ("curve.pt", PROGRESS_FILE, "path.json", "path.csv", "summary.json", "best.pt",
             "path.png")
REPRODUCE_TOLERANCE = 0.5  # accuracy points


@dataclass
class Endpoints:
    """The two networks a path joins: a, and b as connected (aligned unless --no-align)."""

    a: Classifier
    b: Classifier
    b_original: Classifier
    alignment: dict | None = None
    permutation: dict[str, list[int]] | None = None  # b as connected = b as given permuted so
    pam: dict | None = None  # PAM's permutation updates, when it ran


@dataclass
class PathRun:
    """Everything evaluated for one curve (and, optionally, the straight lines beside it)."""

    label: str
    points: list[PointResult]
    best: Classifier | None = None
    lines: dict[str, list[PointResult]] = field(default_factory=dict)
    endpoints: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def preflight(cfg: ConnectRunConfig) -> None:
    """Checks that fail in seconds rather than after hours of training."""
    parse_attack_spec(cfg.path.attack)
    if cfg.curve.kind != "line" and cfg.curve.bends < 1:
        raise UserError("--bends must be at least 1 for bezier and polychain curves")
    if cfg.pam.enabled and cfg.curve.kind == "line":
        raise UserError("--pam alternates curve and permutation training; use --curve bezier "
                        "or polychain")
    if cfg.pam.enabled and cfg.optim.epochs < cfg.pam.outer + 1:
        raise UserError(f"--pam-outer {cfg.pam.outer} needs at least {cfg.pam.outer + 1} curve "
                        "epochs (one phase before and after each update); raise --epochs")


def prepare_endpoints(pair: Pair, cfg: ConnectRunConfig, data: Data, runtime: Runtime,
                      reporter: Reporter) -> Endpoints:
    model_a, model_b = (runtime.prepare(m) for m in pair.models())
    if not cfg.aligned:
        return Endpoints(model_a, model_b, model_b)
    result = align_models(model_a, model_b, data.train, cfg.align, cfg.attack, runtime)
    summary = result.alignment.as_dict()
    reporter.print(f"aligned b to a ({cfg.align.method}, {cfg.align.inputs} inputs): mean unit "
                   f"correlation {summary['mean_corr_before']:.3f} -> "
                   f"{summary['mean_corr_after']:.3f}, function error "
                   f"{result.function_error:.1e}")
    return Endpoints(model_a, result.model_b, model_b, {**summary,
                                                        "function_error": result.function_error},
                     {k: v.tolist() for k, v in result.alignment.perm.items()})


def undo_alignment(model_a: Classifier, model_b: Classifier, example: torch.Tensor,
                   permutation: dict[str, list[int]] | None) -> Classifier:
    """b as it was given, from b aligned and the recorded permutation (b itself if none)."""
    if not permutation:
        return model_b
    original = copy.deepcopy(model_b)
    spec = trace_permutation_spec(model_a, example)
    permute_model(original, spec, inverse({k: torch.tensor(v) for k, v in permutation.items()}))
    return original


def make_curve(kind: str, endpoints: Endpoints, bends: int, runtime: Runtime,
               b: Classifier | None = None) -> Curve:
    other = endpoints.b if b is None else b
    return Curve.between(kind, endpoints.a, endpoints.a.state_dict(), other.state_dict(),
                         bends).to(runtime.device)


def curve_record(curve: Curve, pair: Pair, endpoints: Endpoints, cfg: ConnectRunConfig,
                 digests: dict[str, str], history: list,
                 optimizer: torch.optim.Optimizer | None = None,
                 position: Position | None = None, rng: dict | None = None) -> dict:
    """curve.pt: enough to resume training or re-evaluate without the endpoint files. Endpoint
    states use the architecture's own names, as native checkpoints do."""
    state_a = checkpoint_from_model(endpoints.a, pair.a.arch, pair.a.arch_kwargs).state_dict
    state_b = checkpoint_from_model(endpoints.b, pair.b.arch, pair.b.arch_kwargs).state_dict
    position = position or Position(epoch=cfg.optim.epochs if cfg.curve.kind == "line" else 0)
    return {"format": CURVE_FORMAT, "curve": curve.state(), "arch": pair.a.arch,
            "arch_kwargs": pair.a.arch_kwargs, "normalization": pair.a.normalization,
            "endpoint_states": {"a": state_a, "b": state_b},
            "endpoint_meta": {"a": pair.a.meta, "b": pair.b.meta},
            "endpoints": {"a": pair.a.path, "b": pair.b.path},
            "endpoint_digests": digests,
            "permutation": endpoints.permutation, "alignment": endpoints.alignment,
            "pam": endpoints.pam, "config": to_dict(cfg), "dataset": cfg.data.dataset,
            "epoch": position.epoch, "position": position.state(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "rng": rng, "history": history}


def endpoint_digests(pair: Pair) -> dict[str, str]:
    return {"a": state_digest(pair.a.state_dict), "b": state_digest(pair.b.state_dict)}


def train(curve: Curve, pair: Pair, endpoints: Endpoints, cfg: ConnectRunConfig, data: Data,
          runtime: Runtime, reporter: Reporter, out: Path, digests: dict[str, str],
          saved: dict | None = None, stop: StopSignals | None = None) -> list[dict]:
    """Train the bends, writing curve.pt (the resumable state, keyed on the endpoints'
    ``digests``) every ``save_every`` epochs; ``saved`` is the curve.pt of an interrupted run to
    continue."""
    history: list[dict] = list(saved["history"]) if saved else []
    if cfg.curve.kind == "line":
        if saved is None:
            atomic_torch_save(curve_record(curve, pair, endpoints, cfg, digests, history),
                              out / "curve.pt")
        return history
    template = copy.deepcopy(endpoints.a)
    optimizer = make_sgd([curve.bends], cfg.optim)
    generator = torch.Generator().manual_seed(cfg.optim.seed)
    attack_stream = attack_generator(cfg.optim.seed, runtime.device)
    context = TrainingContext(runtime, reporter, stop or StopSignals(), generator, attack_stream,
                              data.train, data.info, cfg.data.augment)
    position = Position()
    if saved is not None:
        position = Position.from_state(saved["position"])
        if saved["optimizer"] is not None:
            optimizer.load_state_dict(saved["optimizer"])
        if saved["rng"] is not None:
            restore_rng(saved["rng"], generator, attack_stream)
    a = cfg.attack
    reporter.print(f"[bold]train[/] {cfg.curve.kind} curve ({curve.num_bends} bend(s)), "
                   f"{cfg.curve.objective} objective, PGD-{a.steps} eps {a.eps * 255:.3g}/255 "
                   f"step {a.resolved_step_size * 255:.3g}/255, attack in {a.mode} mode")
    if saved is not None and position.epoch < cfg.optim.epochs:
        reporter.print(f"resuming {out / 'curve.pt'} at epoch {position.epoch + 1}, step "
                       f"{position.step}")

    pam_update = pam_updater(curve, template, endpoints, cfg, context)

    def on_epoch(epoch: int, result: EpochResult) -> None:
        history.append({"epoch": epoch + 1, "loss": result.loss, "train_acc": result.train_acc,
                        "images_per_s": result.images_per_s, "seconds": result.seconds})
        reporter.print(f"  curve epoch {epoch + 1}: loss {result.loss:.3f}, adversarial acc "
                       f"{result.train_acc:.1f}%, {result.images_per_s:.0f} img/s")
        if pam_update is not None:
            pam_update(epoch + 1)

    def save() -> None:
        atomic_torch_save(curve_record(curve, pair, endpoints, cfg, digests, history,
                                       optimizer, position,
                                       rng_state(generator, attack_stream)),
                          out / "curve.pt")

    task = CurveTask(template, curve, cfg.attack, cfg.curve, runtime, generator, attack_stream)
    Trainer(task, optimizer, cfg.optim, context, position).fit("curve epoch", on_epoch, save,
                                                               resume_hint(out))
    return history


def pam_updater(curve: Curve, template: Classifier, endpoints: Endpoints, cfg: ConnectRunConfig,
                context: TrainingContext) -> Callable[[int], None] | None:
    """With PAM on, what runs after each curve epoch: at ``pam.outer`` evenly spaced epochs, a
    permutation update of b (recorded in ``endpoints``), the curve's end moved with it."""
    if not cfg.pam.enabled:
        return None
    from robust_mc.train.pam import compose, moved_fraction, permutation_phase

    epochs, outer = cfg.optim.epochs, cfg.pam.outer
    after = [round(k * epochs / (outer + 1)) for k in range(1, outer + 1)]
    assert context.train is not None
    spec = trace_permutation_spec(endpoints.a,
                                  context.runtime.images(context.train.images[:2].float()))
    if endpoints.pam is None:
        endpoints.pam = {"start": endpoints.permutation, "updates": []}

    def update(epochs_done: int) -> None:
        assert endpoints.pam is not None
        if epochs_done not in after or len(endpoints.pam["updates"]) > after.index(epochs_done):
            return
        number = after.index(epochs_done) + 1
        perm = permutation_phase(curve, template, spec, context, attack=cfg.attack,
                                 curve_cfg=cfg.curve, optim=cfg.optim, pam=cfg.pam,
                                 label=f"permutation update {number}/{outer}, epoch")
        permute_model(endpoints.b, spec, perm)
        with torch.no_grad():
            curve.end.copy_(flatten_params(dict(endpoints.b.named_parameters()), curve.names))
        endpoints.permutation = compose(endpoints.permutation, perm)
        moved = moved_fraction(perm, None)
        endpoints.pam["updates"].append({"after_epoch": epochs_done, "moved": moved})
        endpoints.pam["moved_from_start"] = moved_fraction(endpoints.permutation,
                                                           endpoints.pam["start"])
        share = sum(moved.values()) / max(len(moved), 1)
        context.reporter.print(f"  PAM update {number}/{outer} after epoch {epochs_done}: "
                       f"{100 * share:.1f}% of units re-matched (mean over spaces)")

    return update


def resume_hint(out: Path) -> str:
    return f"state saved in {out}; rerun the same command to continue"


class PathProgress:
    """path-progress.json: the points evaluated so far on each path of a run, written after
    every t, so that an interrupted evaluation continues at the next t."""

    def __init__(self, path: Path, cfg: ConnectRunConfig, stop: StopSignals | None = None
                 ) -> None:
        self.path = path
        self.config = to_dict(cfg)
        self.stop = stop or StopSignals()
        self.paths: dict[str, list[PointResult]] = {}
        if path.is_file():
            saved = read_json(path)
            if isinstance(saved, dict) and not config_differences(saved.get("config") or {},
                                                                  self.config):
                self.paths = {label: [PointResult.from_dict(p) for p in points]
                              for label, points in saved.get("paths", {}).items()}

    def done(self, label: str) -> list[PointResult]:
        return self.paths.get(label, [])

    def saver(self, label: str) -> Callable[[list[PointResult]], None]:
        def after_point(points: list[PointResult]) -> None:
            self.paths[label] = list(points)
            atomic_write_json(self.path, {"config": self.config, "paths": {
                name: [p.as_dict() for p in pts] for name, pts in self.paths.items()}})
            if self.stop.requested:
                assert self.stop.signum is not None
                raise Interrupted(self.stop.signum, f"stopped while evaluating {label} at "
                                  f"t={points[-1].t:g}; {resume_hint(self.path.parent)}")
        return after_point


def endpoint_reproduction(points: list[PointResult], endpoints: Endpoints, data: Data,
                          cfg: ConnectRunConfig, runtime: Runtime, reporter: Reporter) -> dict:
    """Each endpoint's own test figures (its own BN statistics) against t=0 and t=1 of the path."""
    attack = path_attack(cfg.path, cfg.attack, data.info.num_classes)
    test = data.test.take(cfg.path.test_limit)
    out = {}
    for name, model, point in (("a", endpoints.a, points[0]), ("b", endpoints.b, points[-1])):
        own = evaluate_seeded(model, test, attack, runtime, cfg.path.batch_size, cfg.path.seed)
        diff = max(abs(own.clean_acc - point.test.clean_acc),
                   abs(own.robust_acc - point.test.robust_acc))
        ok = diff <= REPRODUCE_TOLERANCE
        out[name] = {"own": own.as_dict(), "on_path": point.test.as_dict(), "max_diff": diff,
                     "reproduced": ok}
        if not ok:
            reporter.console.print(
                f"[bold red]WARNING[/]: endpoint {name} is not reproduced at t={point.t:g} "
                f"(accuracy differs by {diff:.2f} points > {REPRODUCE_TOLERANCE}); the "
                "recomputed batch-norm statistics differ from its own: try --bn-data "
                "clean|adversarial or more --bn-images")
    return out


def evaluate_run(curve: Curve, endpoints: Endpoints, cfg: ConnectRunConfig, data: Data,
                 runtime: Runtime, reporter: Reporter, progress: PathProgress | None = None
                 ) -> PathRun:
    """The curve (and, with ``compare_line``, the straight lines) evaluated along t;
    ``progress`` saves each point and holds those of an interrupted run."""
    start = time.perf_counter()
    label = f"{cfg.curve.kind} ({'aligned' if cfg.aligned else 'unaligned'})"

    def resumable(name: str) -> dict:
        if progress is None:
            return {}
        return {"done": progress.done(name), "after_point": progress.saver(name)}

    points, best = evaluate_path(curve, endpoints.a, data, cfg.path, cfg.attack, runtime,
                                 reporter, f"{cfg.curve.kind} path", **resumable(label))
    run = PathRun(label, points, best)
    run.seconds["evaluate"] = time.perf_counter() - start
    run.endpoints = endpoint_reproduction(points, endpoints, data, cfg, runtime, reporter)
    if cfg.path.compare_line:
        lines = {"line (aligned)": endpoints.b} if cfg.aligned else {}
        lines["line (unaligned)"] = endpoints.b_original
        for label, b in lines.items():
            if cfg.curve.kind == "line" and b is endpoints.b:
                run.lines[label] = points
                continue
            line = make_curve("line", endpoints, 0, runtime, b)
            run.lines[label], _ = evaluate_path(line, endpoints.a, data, cfg.path, cfg.attack,
                                                runtime, reporter, label, keep_best=False,
                                                **resumable(label))
    return run


def summarize(run: PathRun, cfg: ConnectRunConfig) -> dict:
    """Barriers per split, best t, endpoint reproduction, timings, resolved config."""
    summary: dict = {"curve": {"kind": cfg.curve.kind, "bends": cfg.curve.bends,
                               "aligned": cfg.aligned},
                     "barriers": {split: path_summary(run.points, split)
                                  for split in ("val", "test")}}
    if run.lines:
        summary["lines"] = {label: {split: path_summary(points, split)
                                    for split in ("val", "test")}
                            for label, points in run.lines.items()}
    interior = [p for p in run.points if 0 < p.t < 1]
    if interior:
        best = max(interior, key=lambda p: p.val.robust_acc)
        summary["best"] = {"t": best.t, "val": best.val.as_dict(), "test": best.test.as_dict()}
    summary["endpoints"] = run.endpoints
    per_t = [p.seconds for p in run.points]
    summary["timings"] = {**run.seconds, "per_t": {
        key: sum(s.get(key, 0.0) for s in per_t) / len(per_t)
        for key in ("bn", "clean", "attack", "total")}}
    summary["config"] = to_dict(cfg)
    return summary


def best_checkpoint(run: PathRun, pair: Pair, summary: dict, cfg: ConnectRunConfig
                    ) -> Checkpoint | None:
    if run.best is None or "best" not in summary:
        return None
    meta = {"dataset": cfg.data.dataset, "kind": "on-path", "t": summary["best"]["t"],
            "metrics": {"val": summary["best"]["val"], "test": summary["best"]["test"],
                        "eval_attack": cfg.path.attack, "eps": cfg.attack.eps},
            "endpoints": {"a": pair.a.path, "b": pair.b.path}, "config": to_dict(cfg)}
    return checkpoint_from_model(run.best, pair.a.arch, pair.a.arch_kwargs, meta)


def write_best(run: PathRun, pair: Pair, summary: dict, cfg: ConnectRunConfig,
               out: Path) -> Path | None:
    ckpt = best_checkpoint(run, pair, summary, cfg)
    return save_checkpoint(ckpt, out / "best.pt") if ckpt is not None else None



def is_curve_record(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CURVE_FORMAT


def read_curve_record(path: Path) -> dict:
    """curve.pt, read weights-only and checked to be one."""
    if not path.is_file():
        raise UserError(f"{path} not found; give a run directory holding curve.pt, or curve.pt")
    record = read_torch_file(path)
    if not is_curve_record(record):
        raise UserError(f"{path} is not a robust-mc curve (expected format {CURVE_FORMAT})")
    return record


def load_curve_run(path: Path, options: LoadOptions | None = None
                   ) -> tuple[dict, Curve, Pair]:
    """Read curve.pt and rebuild the curve and the endpoint pair it joins (b as aligned)."""
    record = read_curve_record(path)
    return (record, *curve_run_from_record(record, path, options))


def curve_run_from_record(record: dict, source: Path, options: LoadOptions | None = None
                          ) -> tuple[Curve, Pair]:
    """The curve and the endpoint pair (b as aligned) of a curve.pt already read, every field
    checked and its architecture allowed only as ``options`` (the user's) allow."""
    options = options or LoadOptions()
    arch, arch_kwargs, normalization = recorded_architecture(record, source, options)
    states = record.get("endpoint_states")
    if not isinstance(states, dict):
        raise malformed(source, "'endpoint_states' must hold the states of a and b")
    metas = record.get("endpoint_meta") or {}
    paths = record.get("endpoints") or {}
    if not isinstance(metas, dict) or not isinstance(paths, dict):
        raise malformed(source, "'endpoint_meta' and 'endpoints' must be mappings")
    if not isinstance(record.get("config"), dict):
        raise malformed(source, "'config' must be the run's configuration (a mapping)")
    permutation = record.get("permutation")
    if permutation is not None and not (isinstance(permutation, dict) and all(
            isinstance(v, list) and all(isinstance(i, int) for i in v)
            for v in permutation.values())):
        raise malformed(source, "'permutation' must map spaces to lists of unit indices")
    checkpoints = [Checkpoint(arch, dict(arch_kwargs),
                              checked_state_dict(states.get(name), source,
                                                 f"endpoint_states.{name}"),
                              normalization, plain(metas.get(name) or {}),
                              paths.get(name) if isinstance(paths.get(name), str) else None,
                              trust=options.code)
                   for name in ("a", "b")]
    state = record.get("curve")
    try:
        curve = Curve.from_state(state)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError):
        raise malformed(source, "'curve' does not describe a curve") from None
    return curve, Pair(*checkpoints)


def config_from_record(record: dict, overrides: dict) -> ConnectRunConfig:
    """The saved run's configuration with the user's overrides on top, validated."""
    saved = flatten(record.get("config") or {})
    cfg = build_config(ConnectRunConfig, None, {**saved, **overrides})
    preflight(cfg)
    return cfg


def endpoints_from_record(record: dict, pair: Pair, runtime: Runtime,
                          example: torch.Tensor) -> Endpoints:
    """The endpoints a saved curve joins, with b as given recovered from the permutation."""
    model_a, model_b = (runtime.prepare(m) for m in pair.models())
    b_original = undo_alignment(model_a, model_b, example, record.get("permutation"))
    return Endpoints(model_a, model_b, b_original, record.get("alignment"),
                     record.get("permutation"), record.get("pam"))


def completed_run(out: Path, cfg: ConnectRunConfig, digests: dict[str, str]) -> dict | None:
    """The summary of a finished run in ``out`` with these settings and endpoints, if any."""
    summary_file = out / "summary.json"
    if not summary_file.is_file():
        return None
    summary = read_json(summary_file)
    if (not isinstance(summary, dict) or summary.get("endpoint_digests") != digests
            or config_differences(summary.get("config") or {}, to_dict(cfg))
            or not all((out / name).is_file() for name in summary.get("files", ()))):
        return None
    return summary


def saved_curve(out: Path, cfg: ConnectRunConfig, pair: Pair, digests: dict[str, str],
                resume: str, reporter: Reporter) -> dict | None:
    """curve.pt of an interrupted run in ``out`` to continue (checked against the settings and
    endpoints), or None to start afresh. A run that cannot continue is refused, except with
    ``resume="replace"``, which starts over instead."""
    path = out / "curve.pt"
    if resume == "fresh" or not path.exists():
        return None
    record = read_curve_record(path)
    same_endpoints = (record.get("endpoint_digests") == digests
                      and record.get("arch") == pair.a.arch
                      and record.get("arch_kwargs") == pair.a.arch_kwargs)
    if not isinstance(record.get("config"), dict):
        raise malformed(path, "'config' must be the run's configuration (a mapping)")
    if resume == "replace" and (not same_endpoints or record.get("position") is None
                                or config_differences(record["config"], to_dict(cfg))):
        reporter.print(f"  {out}: the settings or endpoints changed; starting over")
        return None
    if not same_endpoints:
        raise UserError(f"{out} holds a run between other endpoints; pass --fresh (or another "
                        "--out) to start over")
    if record.get("position") is None:
        raise UserError(f"{path} was written by an older robust-mc and cannot be resumed; pass "
                        "--fresh (or another --out) to start over")
    check_same_config(record["config"], to_dict(cfg), out)
    return record


def clear_run(out: Path) -> None:
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


def run_connect(pair: Pair, cfg: ConnectRunConfig, out: Path, runtime: Runtime,
                reporter: Reporter, argv: list[str] | None = None, resume: str = "auto",
                stop: StopSignals | None = None) -> dict:
    """The whole of `robust-mc connect`: align, train, evaluate, write every output file.

    A run in ``out`` with the same settings and endpoints is continued where it stopped (or,
    finished, returned as it is); one with others is refused (``resume="auto"``) or replaced
    (``"replace"``); ``"fresh"`` always starts over."""
    from robust_mc.data import load_data
    from robust_mc.report.path import plot_paths, write_path_files
    from robust_mc.run.files import ensure_out_dir
    from robust_mc.run.provenance import run_record

    if resume == "resume" and not (out / "curve.pt").is_file():
        raise UserError(f"--resume: {out} holds no run to continue; drop --resume to start one")
    data = load_data(cfg.data)
    pair.check_data(data)
    out = ensure_out_dir(out)  # only once the inputs are known to be good
    remove_stale_temps(out)
    digests = endpoint_digests(pair)
    if resume == "fresh":
        clear_run(out)
    elif (finished := completed_run(out, cfg, digests)) is not None:
        reporter.print(f"{out} already holds this run, complete; --fresh recomputes it")
        return finished
    saved = saved_curve(out, cfg, pair, digests, resume, reporter)
    record = run_record(argv)
    seed_everything(cfg.optim.seed)
    reporter.print(f"[bold]connect[/] {pair.a.path} -> {pair.b.path} on {data.info.name}, "
                   f"eps {cfg.attack.eps * 255:.3g}/255, output {out}")
    start = time.perf_counter()
    if saved is None:
        endpoints = prepare_endpoints(pair, cfg, data, runtime, reporter)
        curve = make_curve(cfg.curve.kind, endpoints, cfg.curve.bends, runtime)
    else:
        # the same architecture as the pair's (checked above), which the user allowed
        curve, saved_pair = curve_run_from_record(saved, out / "curve.pt",
                                                  LoadOptions(named=(pair.a.arch,)))
        endpoints = endpoints_from_record(saved, saved_pair, runtime,
                                          data.train.images[:2].float())
        curve = curve.to(runtime.device)
    on_device = data.to(runtime.device)
    history = train(curve, pair, endpoints, cfg, on_device, runtime, reporter, out, digests,
                    saved, stop)
    train_s = time.perf_counter() - start
    progress = PathProgress(out / PROGRESS_FILE, cfg, stop)
    result = evaluate_run(curve, endpoints, cfg, on_device, runtime, reporter, progress)
    result.seconds["align_and_train"] = train_s
    summary = summarize(result, cfg)
    if endpoints.pam is not None:
        summary["pam"] = endpoints.pam
    summary.update({"alignment": endpoints.alignment, "training": history, "record": record,
                    "runtime": runtime.describe(), "endpoint_digests": digests})
    paths = {result.label: result.points, **result.lines}
    files = ["curve.pt", "path.json", "path.csv", "summary.json"]
    if write_best(result, pair, summary, cfg, out) is not None:
        files.append("best.pt")
    if plot_paths(out, paths, f"{Path(pair.a.path or 'a').name} -> "
                              f"{Path(pair.b.path or 'b').name}") is not None:
        files.append("path.png")
    summary["files"] = files
    write_path_files(out, paths, summary)  # summary.json last: it marks the run complete
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    return summary
