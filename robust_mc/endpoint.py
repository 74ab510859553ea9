"""`robust-mc train`: PGD adversarial training of one endpoint, evaluated and recorded."""

from __future__ import annotations

import torch

from attacks import PGD, build_attack, parse_attack_spec
from robust_mc.checkpoint import Checkpoint, checkpoint_from_model
from robust_mc.config import TrainRunConfig, to_dict
from robust_mc.data import Data, load_data
from robust_mc.evaluate import recompute_batchnorm
from robust_mc.models import Classifier, create_model
from robust_mc.progress import Reporter
from robust_mc.record import run_record
from robust_mc.robust_eval import Metrics, evaluate_model
from robust_mc.runtime import Runtime
from robust_mc.training import AdversarialTask, make_sgd, train_one_epoch

MONITOR_IMAGES = 1000  # validation images attacked after each epoch
PRECISE_BN_IMAGES = 2000  # as many as connect's path evaluation uses by default


def arch_kwargs_for(cfg: TrainRunConfig, data: Data) -> dict:
    info = data.info
    return {"num_classes": info.num_classes, "in_channels": info.in_channels,
            "width": cfg.model.width, "image_size": info.image_size, **cfg.model.kwargs}


def build_endpoint_model(cfg: TrainRunConfig, data: Data) -> Classifier:
    info = data.info
    return create_model(cfg.model.arch, num_classes=info.num_classes,
                        in_channels=info.in_channels, mean=info.mean, std=info.std,
                        width=cfg.model.width, image_size=info.image_size,
                        kwargs=cfg.model.kwargs)


def train_endpoint(cfg: TrainRunConfig, runtime: Runtime, reporter: Reporter,
                   argv: list[str] | None = None, data: Data | None = None) -> Checkpoint:
    """Train, evaluate on the test split, and return the checkpoint with everything in ``meta``."""
    record = run_record(argv)
    parse_attack_spec(cfg.eval.attack)  # a typo fails now, not after hours of training
    torch.manual_seed(cfg.optim.seed)
    data = data or load_data(cfg.data)
    model = build_endpoint_model(cfg, data)
    runtime.prepare(model)
    forward = torch.compile(model) if cfg.speed.compile else model
    on_device = data.to(runtime.device)
    optimizer = make_sgd(model.parameters(), cfg.optim)
    task = AdversarialTask(model, forward, cfg.attack, runtime)
    generator = torch.Generator().manual_seed(cfg.optim.seed)
    a = cfg.attack
    monitor = PGD(eps=a.eps, step_size=a.resolved_step_size, steps=a.steps, norm=a.norm)
    reporter.print(f"[bold]train[/] {cfg.model.arch} on {data.info.name}: {len(data.train)} train "
                   f"/ {len(data.val)} val / {len(data.test)} test images, PGD-{a.steps} "
                   f"eps {a.eps * 255:.3g}/255, {runtime.describe()}")
    history = []
    train_seconds = 0.0
    for epoch in range(cfg.optim.epochs):
        steps = len(data.train) // cfg.optim.batch_size
        with reporter.task(f"epoch {epoch + 1}/{cfg.optim.epochs}", steps) as step:
            result = train_one_epoch(task, optimizer, on_device.train, optim=cfg.optim,
                                     epoch=epoch, info=data.info, augment=cfg.data.augment,
                                     generator=generator, runtime=runtime, step=step)
        train_seconds += result.seconds
        val = evaluate_model(model, on_device.val.take(MONITOR_IMAGES), monitor, runtime,
                             cfg.eval.batch_size)
        history.append({"epoch": epoch + 1, "loss": result.loss, "train_acc": result.train_acc,
                        "images_per_s": result.images_per_s, "val_clean_acc": val.clean_acc,
                        "val_robust_acc": val.robust_acc})
        reporter.print(f"  epoch {epoch + 1}: loss {result.loss:.3f}, {result.images_per_s:.0f} "
                       f"img/s, val clean {val.clean_acc:.1f}% robust {val.robust_acc:.1f}%")
    if cfg.optim.precise_bn != "off":
        recompute_batchnorm(model, on_device.train, images=PRECISE_BN_IMAGES,
                            data=cfg.optim.precise_bn,
                            attack=cfg.attack, runtime=runtime)
    test = evaluate_test(model, on_device, cfg, runtime)
    reporter.print(f"[bold]test[/] clean {test.clean_acc:.2f}%  robust {test.robust_acc:.2f}% "
                   f"({cfg.eval.attack}, eps {a.eps * 255:.3g}/255)")
    meta = {
        "dataset": cfg.data.dataset,
        "config": to_dict(cfg),
        "metrics": {"test": test.as_dict(), "eval_attack": cfg.eval.attack, "eps": a.eps},
        "history": history,
        "timings": {"train_s": train_seconds,
                    "images_per_s": sum(h["images_per_s"] for h in history) / len(history)},
        "record": record,
    }
    return checkpoint_from_model(model, cfg.model.arch, arch_kwargs_for(cfg, data), meta)


def evaluate_test(model: Classifier, data: Data, cfg: TrainRunConfig, runtime: Runtime) -> Metrics:
    torch.manual_seed(cfg.eval.seed)
    attack = build_attack(cfg.eval.attack, eps=cfg.attack.eps, norm=cfg.attack.norm,
                          num_classes=data.info.num_classes)
    return evaluate_model(model, data.test, attack, runtime, cfg.eval.batch_size)
