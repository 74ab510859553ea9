"""Training a connect run's curve, resumably: the bends (and, with PAM, b's permutation) trained
from where a saved ``curve.pt`` stopped, that file rewritten every ``save_every`` epochs."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from robust_mc.attacks.pgd import ShardDraws
from robust_mc.config import to_dict
from robust_mc.core.curves import Curve, flatten_params, has_bends
from robust_mc.core.permutation import permute_model, trace_permutation_spec
from robust_mc.models import Classifier
from robust_mc.pipelines.pair import Endpoints
from robust_mc.pipelines.session import ConnectSession
from robust_mc.run import distributed
from robust_mc.run.files import as_written
from robust_mc.store.checkpoint import weights_of
from robust_mc.store.records import CurveRun, PamHistory
from robust_mc.store.resume import (
    RESTORE_FIX,
    attack_generator,
    load_optimizer_state,
    restore_rng,
    rng_state,
)
from robust_mc.train.loop import EpochResult, Position, Trainer, TrainingContext, make_optimizer
from robust_mc.train.tasks import CurveTask


def curve_run(session: ConnectSession, curve: Curve, endpoints: Endpoints,
              history: list[dict], optimizer: torch.optim.Optimizer | None = None,
              position: Position | None = None, rng: dict | None = None) -> CurveRun:
    """The run's state as ``curve.pt`` holds it. A line has nothing to train: it is saved as
    trained to the end."""
    pair, cfg = session.pair, session.cfg
    states = {"a": weights_of(endpoints.a), "b": weights_of(endpoints.b)}
    position = position or Position(epoch=0 if has_bends(cfg.curve.kind) else cfg.optim.epochs)
    return CurveRun(curve, pair.a.arch, pair.a.arch_kwargs, pair.a.model_kwargs,
                    pair.a.normalization, states,
                    to_dict(cfg), {"a": pair.a.meta, "b": pair.b.meta},
                    {"a": pair.a.path, "b": pair.b.path}, session.digests,
                    endpoints.permutation, endpoints.alignment, endpoints.pam, position,
                    optimizer.state_dict() if optimizer is not None else None, rng, history,
                    maps=endpoints.maps)


def train_curve_run(session: ConnectSession, curve: Curve, endpoints: Endpoints,
                    saved: CurveRun | None = None) -> list[dict]:
    """Train the bends, writing curve.pt every ``save_every`` epochs; ``saved`` is the state of
    an interrupted run to continue. Returns the epoch history."""
    cfg, out, reporter = session.cfg, session.out / "curve.pt", session.reporter
    history: list[dict] = list(saved.history) if saved else []
    if not has_bends(cfg.curve.kind):
        if saved is None:
            curve_run(session, curve, endpoints, history).write(out)
        return history
    optimizer = make_optimizer([curve.bends], cfg.optim)
    generator = torch.Generator().manual_seed(cfg.optim.seed)
    attacks = attack_generator(cfg.optim.seed, session.runtime.device)
    context = TrainingContext(session.runtime, reporter, session.stop, generator, attacks,
                              session.data.train, session.data.info, cfg.data.augment)
    position = Position()
    if saved is not None:
        position = saved.position or position
        with as_written(out, RESTORE_FIX):
            position.check_within(cfg.optim.epochs, out)
            if saved.optimizer is not None:
                load_optimizer_state(optimizer, saved.optimizer)
            if saved.rng is not None:
                restore_rng(saved.rng, generator, attacks)
    a = cfg.attack
    reporter.print(f"[bold]train[/] {cfg.curve.kind} curve ({curve.num_bends} bend(s)), "
                   f"{cfg.curve.objective} objective, PGD-{a.steps} eps {a.eps * 255:.3g}/255 "
                   f"step {a.resolved_step_size * 255:.3g}/255, attack in {a.mode} mode")
    if saved is not None and position.epoch < cfg.optim.epochs:
        reporter.print(f"resuming {out} at epoch {position.epoch + 1}, step {position.step}")
    template = copy.deepcopy(endpoints.a)
    pam_update = pam_updater(session, curve, template, endpoints, context)

    def on_epoch(epoch: int, result: EpochResult) -> None:
        history.append({"epoch": epoch + 1, "loss": result.loss, "train_acc": result.train_acc,
                        "images_per_s": result.images_per_s, "seconds": result.seconds})
        reporter.print(f"  curve epoch {epoch + 1}: loss {result.loss:.3f}, adversarial acc "
                       f"{result.train_acc:.1f}%, {result.images_per_s:.0f} img/s")
        if pam_update is not None:
            pam_update(epoch + 1)

    def save() -> None:
        curve_run(session, curve, endpoints, history, optimizer, position,
                  rng_state(generator, attacks)).write(out)

    group = distributed.group()  # several processes: each trains its rows of every batch
    draws = ShardDraws(attacks, group.rank, group.world) if group.active else attacks
    t_rank = (group.rank, group.world) if group.active and cfg.curve.t_per_rank else None
    task = CurveTask(template, curve, cfg.attack, cfg.curve, session.runtime, generator, draws,
                     t_rank)
    Trainer(task, optimizer, cfg.optim, context, position).fit("curve epoch", on_epoch, save,
                                                               session.resume_hint())
    return history


def pam_updater(session: ConnectSession, curve: Curve, template: Classifier,
                endpoints: Endpoints, context: TrainingContext
                ) -> Callable[[int], None] | None:
    """With PAM on, what runs after each curve epoch: at ``pam.outer`` evenly spaced epochs, a
    permutation update of b (recorded in ``endpoints``), the curve's end moved with it."""
    cfg = session.cfg
    if not cfg.pam.enabled:
        return None
    from robust_mc.train.pam import compose, moved_fraction, permutation_phase

    epochs, outer = cfg.optim.epochs, cfg.pam.outer
    after = [round(k * epochs / (outer + 1)) for k in range(1, outer + 1)]
    example = session.runtime.images(session.data.train.images[:2].float())
    spec = trace_permutation_spec(endpoints.a, example, partial=cfg.align.partial)
    if endpoints.pam is None:
        endpoints.pam = PamHistory(endpoints.permutation)
    history = endpoints.pam

    def update(epochs_done: int) -> None:
        if epochs_done not in after or len(history.updates) > after.index(epochs_done):
            return
        number = after.index(epochs_done) + 1
        perm = permutation_phase(curve, template, spec, context, attack=cfg.attack,
                                 curve_cfg=cfg.curve, optim_settings=cfg.optim, pam=cfg.pam,
                                 label=f"permutation update {number}/{outer}, epoch")
        permute_model(endpoints.b, spec, perm)
        with torch.no_grad():
            curve.end.copy_(flatten_params(dict(endpoints.b.named_parameters()), curve.names))
        endpoints.permutation = compose(endpoints.permutation, perm)
        moved = moved_fraction(perm, None)
        history.updates.append({"after_epoch": epochs_done, "moved": moved})
        history.moved_from_start = moved_fraction(endpoints.permutation, history.start)
        share = sum(moved.values()) / max(len(moved), 1)
        context.reporter.print(f"  PAM update {number}/{outer} after epoch {epochs_done}: "
                               f"{100 * share:.1f}% of units re-matched (mean over spaces)")

    return update
