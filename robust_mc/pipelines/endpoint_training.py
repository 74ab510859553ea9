"""`robust-mc train`: PGD adversarial training of one endpoint, evaluated and recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from robust_mc.attacks import build_attack, parse_attack_spec
from robust_mc.attacks.pgd import ShardDraws
from robust_mc.config import OptimConfig, TrainRunConfig, to_dict
from robust_mc.data import Data, DatasetInfo, as_float, load_data
from robust_mc.errors import UserError
from robust_mc.evaluation.path import recompute_batchnorm
from robust_mc.evaluation.robustness import Metrics, evaluate_model, evaluate_seeded
from robust_mc.models import Classifier, create_model, smallest_image_size
from robust_mc.models.huggingface import expand
from robust_mc.run import distributed
from robust_mc.run.files import as_written, remove
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import Runtime, seeded
from robust_mc.store.checkpoint import (
    Checkpoint,
    LoadOptions,
    checkpoint_from_model,
    save_checkpoint,
)
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.meta import (
    CheckpointMeta,
    EpochRecord,
    ObjectiveRecord,
    RecipeRecord,
    RecordedMetrics,
    Timings,
)
from robust_mc.store.resume import (
    RESTORE_FIX,
    Resume,
    ResumePolicy,
    attack_generator,
    decide_resume,
    load_optimizer_state,
    require_saved,
    restore_rng,
    rng_state,
)
from robust_mc.store.train_state import TrainState, read_train_state
from robust_mc.train.awp import WeightPerturbation
from robust_mc.train.ema import WeightAverage
from robust_mc.train.loop import EpochResult, Position, Trainer, TrainingContext, make_optimizer
from robust_mc.train.tasks import EndpointTask

MONITOR_IMAGES = 1000  # validation images attacked after each epoch
PRECISE_BN_IMAGES = 2000  # as many as connect's path evaluation uses by default


def arch_kwargs_for(data: Data, width: float) -> dict:
    """robust-mc's standard arguments of a network for ``data`` (the architecture's own are
    ``model.kwargs``, recorded apart)."""
    info = data.info
    return {"num_classes": info.num_classes, "in_channels": info.in_channels, "width": width,
            "image_size": info.image_size}


def endpoint_arch(cfg: TrainRunConfig, info: DatasetInfo) -> str:
    """The architecture ``cfg`` names; ``auto`` follows the data: TinyTen, built for 32x32
    images, needs at least 9x9 (two stride-2 convolutions, then an unpadded 3x3), so smaller
    images (the 8x8 digits) get the small ``cnn``."""
    if cfg.model.arch != "auto":
        return cfg.model.arch
    return "tinyten" if info.image_size >= smallest_image_size("tinyten") else "cnn"


def endpoint_model(cfg: TrainRunConfig, info: DatasetInfo) -> tuple[str, dict]:
    """The architecture and its own arguments as the endpoint's file records them (a Hugging
    Face model directory, ``hf:DIR``, becomes its class and config)."""
    return expand(endpoint_arch(cfg, info), dict(cfg.model.kwargs))


def build_endpoint_model(cfg: TrainRunConfig, data: Data) -> Classifier:
    """The network ``cfg`` trains on ``data``, checked on one image of it: an architecture that
    cannot take the data's images is refused in one line."""
    info, arch = data.info, endpoint_arch(cfg, data.info)
    recorded, kwargs = endpoint_model(cfg, info)
    model = create_model(recorded, num_classes=info.num_classes,
                         in_channels=info.in_channels, mean=info.mean, std=info.std,
                         width=cfg.model.width, image_size=info.image_size,
                         kwargs=kwargs, source=f"--arch {arch}")
    probe = as_float(data.train.images[:1])
    try:
        with torch.no_grad(), seeded(0):
            model.eval()(probe)
    except (RuntimeError, ValueError) as exc:  # ValueError: transformers' shape checks
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"--arch {arch} cannot take {data.info.name}'s "
                        f"{info.in_channels}x{info.image_size}x{info.image_size} images "
                        f"({first}); choose an architecture for this image size (e.g. --arch "
                        "auto)") from exc
    return model.train()




def state_path_for(out: str | Path) -> Path:
    """Where ``train --out a.pt`` keeps its resumable state: ``a.state.pt``, removed at the end."""
    out = Path(out)
    return out.with_name(f"{out.stem}.state.pt")


def train_endpoint(cfg: TrainRunConfig, runtime: Runtime, reporter: Reporter,
                   argv: list[str] | None = None, data: Data | None = None,
                   state_path: Path | None = None, policy: ResumePolicy = ResumePolicy.AUTO,
                   stop: StopSignals | None = None,
                   snapshot: Callable[[int, TrainState], None] | None = None,
                   start: Classifier | None = None) -> Checkpoint:
    """Train, evaluate on the test split, and return the checkpoint with everything in ``meta``.

    ``start``: a network to train further, in place (a merge's fine-tune), instead of a new one
    built from ``cfg.model``.

    With ``state_path`` the run saves a resumable state there (see ``Trainer.fit``) and
    continues or replaces the one it finds, as ``policy`` decides. Weight initialisation (and
    anything else drawing from torch's global streams) is seeded with ``optim.seed`` for the
    run's duration; the caller's streams are restored afterwards. ``snapshot(epochs_done,
    state)`` sees the resumable state before the first epoch of a fresh run and at every
    save (forks of the run start from it: ``spawn``)."""
    parse_attack_spec(cfg.eval.attack)  # a typo fails now, not after hours of training
    if cfg.objective.awp is not None and distributed.group().active:
        raise UserError("--awp runs in one process for now (its weight perturbation is not "
                        "shared across processes); launch without torchrun")
    if cfg.objective.awp is not None and cfg.objective.name in ("trades", "clean"):
        raise UserError(f"--awp perturbs the weights against labelled adversarial examples; "
                        f"use it with --objective adversarial, madry or mart, not "
                        f"{cfg.objective.name}")
    with seeded(cfg.optim.seed):
        return _train(cfg, runtime, reporter, run_record(argv), data, state_path, policy,
                      stop or StopSignals(), snapshot, start)


def _train(cfg: TrainRunConfig, runtime: Runtime, reporter: Reporter, record: dict,
           data: Data | None, state_path: Path | None, policy: ResumePolicy,
           stop: StopSignals, snapshot: Callable[[int, TrainState], None] | None,
           start: Classifier | None) -> Checkpoint:
    saved = load_train_state(state_path, cfg, policy)
    run = EndpointRun(cfg, runtime, reporter, record, data or load_data(cfg.data), start)
    if saved is not None:
        run.restore(saved, state_path)
    run.announce(state_path if saved is not None else None)
    if saved is None and snapshot is not None:
        snapshot(0, run.state())
    run.fit(stop, state_path, snapshot)
    return run.finish()


class EndpointRun:
    """One endpoint's training as it goes: the network and its optimizer, the random streams
    (batches, attack starts), the objective's task with AWP and EMA where asked, the position
    in the schedule and the epochs' history; saved and restored as a :class:`TrainState`."""

    def __init__(self, cfg: TrainRunConfig, runtime: Runtime, reporter: Reporter, record: dict,
                 data: Data, start: Classifier | None) -> None:
        self.cfg, self.runtime, self.reporter, self.record = cfg, runtime, reporter, record
        self.data = data
        self.model = build_endpoint_model(cfg, data) if start is None else start.train()
        runtime.settle(self.model, as_float(data.train.images[:1]))
        forward = torch.compile(self.model) if cfg.speed.compile else self.model
        self.on_device = data.to(runtime.device)
        self.optimizer = make_optimizer(self.model.parameters(), cfg.optim)
        self.generator = torch.Generator().manual_seed(cfg.optim.seed)
        self.attack_stream = attack_generator(cfg.optim.seed, runtime.device)
        obj = cfg.objective
        self.perturbation = (WeightPerturbation(self.model, obj.awp) if obj.awp is not None
                             else None)
        group = distributed.group()
        # several processes: each trains on its rows of every global batch, through a DDP
        # wrapper (the attack runs on the network itself), with the random starts the whole
        # batch draws
        draws = (ShardDraws(self.attack_stream, group.rank, group.world) if group.active
                 else self.attack_stream)
        self.wrapper = DistributedDataParallel(self.model) if group.active else None
        self.task = EndpointTask(self.model, forward, cfg.attack, runtime, draws, obj.name,
                                 self.perturbation, train_forward=self.wrapper, beta=obj.beta)
        self.average = WeightAverage(self.model, obj.ema) if obj.ema is not None else None
        self.monitor = build_attack(cfg.attack)
        self.position = Position()
        self.history: list[EpochRecord] = []

    def restore(self, saved: TrainState, source: Path | None) -> None:
        """Continue from ``saved``; one line naming ``source`` where it does not fit."""
        where = source or "the saved training state"
        with as_written(where, RESTORE_FIX):
            self.model.load_state_dict(saved.model)
            load_optimizer_state(self.optimizer, saved.optimizer)
            self.position = Position.from_state(saved.position)
            self.position.check_within(self.cfg.optim.epochs, where)
            self.history = list(saved.history)
            self.record = saved.record
            restore_rng(saved.rng, self.generator, self.attack_stream)
            if self.average is not None and saved.ema is not None:
                self.average.load(saved.ema)

    def announce(self, resumed_from: Path | None) -> None:
        a, info = self.cfg.attack, self.data.info
        self.reporter.print(
            f"[bold]train[/] {endpoint_arch(self.cfg, info)} on {info.name}: "
            f"{len(self.data.train)} train / {len(self.data.val)} val / {len(self.data.test)} "
            f"test images, PGD-{a.steps} eps {a.eps * 255:.3g}/255; {self.runtime.summary()}")
        if resumed_from is not None:
            self.reporter.print(f"resuming {resumed_from} at epoch {self.position.epoch + 1}, "
                                f"step {self.position.step}")

    def state(self) -> TrainState:
        return TrainState(to_dict(self.cfg), self.model.state_dict(),
                          self.optimizer.state_dict(), self.position.state(),
                          rng_state(self.generator, self.attack_stream), list(self.history),
                          self.record, self.average.state() if self.average is not None else None)

    def fit(self, stop: StopSignals, state_path: Path | None,
            snapshot: Callable[[int, TrainState], None] | None) -> None:
        """Train the remaining steps, saving to ``state_path`` and showing ``snapshot`` the
        state at every save."""

        def save() -> None:
            if state_path is not None or snapshot is not None:
                current = self.state()
                if state_path is not None:
                    current.write(state_path)
                if snapshot is not None:
                    snapshot(self.position.epoch, current)

        cfg = self.cfg
        context = TrainingContext(self.runtime, self.reporter, stop, self.generator,
                                  self.attack_stream, self.on_device.train, self.data.info,
                                  cfg.data.augment)
        self._start_perturbing(self.position.epoch)
        Trainer(self.task, self.optimizer, cfg.optim, context, self.position,
                after_step=self._after_step, reduced_by_wrapper=self.wrapper is not None).fit(
            "epoch", self._after_epoch, save,
            resume_hint=f"state saved in {state_path}; rerun the same command to continue")

    def _start_perturbing(self, epochs_done: int) -> None:
        self.task.perturbing = (self.perturbation is not None
                                and epochs_done >= self.cfg.objective.awp_warmup)

    def _after_step(self) -> None:  # the update lands on the unperturbed weights, then averaged
        if self.perturbation is not None:
            self.perturbation.restore()
        if self.average is not None:
            self.average.update()

    def _after_epoch(self, epoch: int, result: EpochResult) -> None:
        self._start_perturbing(epoch + 1)
        val = evaluate_model(self.model, self.on_device.val.take(MONITOR_IMAGES), self.monitor,
                             self.runtime, self.cfg.eval.batch_size)
        self.history.append(EpochRecord(epoch + 1, result.loss, result.train_acc,
                                        result.images_per_s, result.seconds, val.clean_acc,
                                        val.robust_acc))
        self.reporter.print(f"  epoch {epoch + 1}: loss {result.loss:.3f}, "
                            f"{result.images_per_s:.0f} img/s, val clean {val.clean_acc:.1f}% "
                            f"robust {val.robust_acc:.1f}%")

    def finish(self) -> Checkpoint:
        """The trained endpoint: the average where EMA ran, batch norm re-estimated as asked,
        evaluated on the test split, with everything recorded in its meta."""
        cfg, model, obj = self.cfg, self.model, self.cfg.objective
        if self.average is not None:  # the endpoint is the average (BN recomputed below)
            self.average.copy_to(model)
        if cfg.optim.precise_bn != "off":
            recompute_batchnorm(model, self.on_device.train, images=PRECISE_BN_IMAGES,
                                data=cfg.optim.precise_bn, attack=cfg.attack,
                                runtime=self.runtime)
        test = evaluate_test(model, self.on_device, cfg, self.runtime)
        eps = cfg.attack.eps
        self.reporter.print(f"[bold]test[/] clean {test.clean_acc:.2f}%  robust "
                            f"{test.robust_acc:.2f}% ({cfg.eval.attack}, eps {eps * 255:.3g}/255)")
        history = self.history
        meta = CheckpointMeta(
            kind="endpoint", dataset=cfg.data.dataset, config=to_dict(cfg),
            metrics=RecordedMetrics(test=test, eval_attack=cfg.eval.attack, eps=eps),
            objective=ObjectiveRecord(obj.name, obj.beta, obj.ema, obj.awp, obj.awp_warmup),
            recipe=recipe_of(cfg.optim), history=history, runtime=self.runtime.describe(),
            timings=Timings(sum(h.seconds for h in history),
                            sum(h.images_per_s for h in history) / max(len(history), 1)),
            record=self.record)
        arch, model_kwargs = endpoint_model(cfg, self.data.info)
        return checkpoint_from_model(model, arch, arch_kwargs_for(self.data, cfg.model.width),
                                     meta, model_kwargs=model_kwargs)


def recipe_of(optim: OptimConfig) -> RecipeRecord:
    """What an endpoint's checkpoint records of how it was optimised."""
    return RecipeRecord(optim.optimizer, optim.lr, optim.weight_decay, optim.warmup_epochs,
                        optim.schedule, optim.epochs, optim.batch_size, optim.momentum)


def trained_endpoint(cfg: TrainRunConfig, path: Path, runtime: Runtime, reporter: Reporter, *,
                     data: Data | None = None, argv: list[str] | None = None,
                     policy: ResumePolicy = ResumePolicy.AUTO,
                     stop: StopSignals | None = None) -> Checkpoint:
    """The endpoint ``cfg`` trains, kept at ``path``: read back when the file there was trained
    with these settings, else trained (resumably, next to ``path``) and written."""
    if path.is_file() and policy is not ResumePolicy.FRESH:
        ckpt = load_checkpoint(path, LoadOptions(named=(cfg.model.arch,)))
        if decide_resume(ResumePolicy.REPLACE, path, ckpt.meta.config,
                         to_dict(cfg)) is Resume.CONTINUE:
            reporter.print(f"reusing {path} (trained with these settings)")
            return ckpt
    state = state_path_for(path)
    ckpt = train_endpoint(cfg, runtime, reporter, argv=argv, data=data, state_path=state,
                          policy=policy, stop=stop)
    ckpt.path = str(save_checkpoint(ckpt, path))
    remove(state)
    return ckpt


def load_train_state(path: Path | None, cfg: TrainRunConfig, policy: ResumePolicy
                     ) -> TrainState | None:
    """The saved state to continue, or None to start afresh, as ``policy`` decides."""
    if policy is ResumePolicy.FRESH:
        return None
    if path is None or not path.exists():
        require_saved(policy, path or Path("the output"), what="training state")
        return None
    state = read_train_state(path, "delete it or pass --fresh")
    decision = decide_resume(policy, path, state.config, to_dict(cfg), what="training state")
    return state if decision is Resume.CONTINUE else None


def evaluate_test(model: Classifier, data: Data, cfg: TrainRunConfig, runtime: Runtime) -> Metrics:
    attack = build_attack(cfg.eval.attack, eps=cfg.attack.eps, norm=cfg.attack.norm,
                          num_classes=data.info.num_classes)
    return evaluate_seeded(model, data.test, attack, runtime, cfg.eval.batch_size,
                           cfg.eval.seed)
