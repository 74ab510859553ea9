"""bfloat16 against float32: do short robust trainings reach the same accuracy, are attacks
computed in bfloat16 as strong, and how fast is each on this machine?

    python -m benchmarks.precision                                  # digits, seeds 0-2
    python -m benchmarks.precision --preset cifar10-tinyten --data imagefolder:CIFAR --epochs 3

Trainings: the preset (``digits-demo`` by default) in each precision for each seed, every model
scored in float32 (clean and PGD-20 test accuracy), mean ± std, and the seconds per endpoint.
Attack strength: the float32 model of the first seed under PGD-20 whose gradient passes run in
bfloat16 (autocast) against the same attack in float32, both scored in float32. Prints the
CPU's features (AMX tiles decide ``--precision auto``) beside the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
from torch import nn

from benchmarks.common import print_table
from robust_mc.attacks import build_attack
from robust_mc.config import TrainRunConfig, build_config, find_preset
from robust_mc.data import load_data
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.pipelines.endpoint_training import train_endpoint
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime, cpu_features, start_runtime
from robust_mc.store.model_building import build_network

PRECISIONS = ("float32", "bfloat16")


class AttackIn:
    """An evaluation attack whose passes run under autocast to ``dtype`` (None: float32)."""

    def __init__(self, attack, device: torch.device, dtype: torch.dtype | None) -> None:
        self.attack, self.device, self.dtype = attack, device, dtype

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        context = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype \
            else nullcontext()
        with context:
            return self.attack(model, x, y)


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {std:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits-demo")
    parser.add_argument("--data", default=None, help="dataset (default: the preset's)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--test-images", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    start_runtime(args.device)
    overrides: dict = {"device": args.device, "eval.attack": "none"}
    if args.data:
        overrides["data.dataset"] = args.data
    if args.epochs:
        overrides["optim.epochs"] = args.epochs
    base = build_config(TrainRunConfig, find_preset(args.preset), overrides)
    data = load_data(base.data)
    test = data.test.take(args.test_images)
    exact = Runtime.for_device(args.device)  # float32 scoring
    pgd = build_attack("pgd:steps=20", eps=base.attack.eps, norm=base.attack.norm,
                       num_classes=data.info.num_classes)
    figures: dict[str, dict[str, list[float]]] = {}
    models: dict[str, nn.Module] = {}
    for precision in PRECISIONS:
        speed = {"speed.precision": precision}
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg = build_config(TrainRunConfig, find_preset(args.preset),
                               {**overrides, **speed, "optim.seed": seed})
            start = time.perf_counter()
            ckpt = train_endpoint(cfg, Runtime.for_device(args.device, cfg.speed),
                                  Reporter(quiet=True), data=data)
            seconds = time.perf_counter() - start
            model = build_network(ckpt).to(exact.device)
            metrics = evaluate_seeded(model, test.to(exact.device), pgd, exact, 250, 0)
            row = figures.setdefault(precision, {"clean": [], "robust": [], "seconds": []})
            row["clean"].append(metrics.clean_acc)
            row["robust"].append(metrics.robust_acc)
            row["seconds"].append(seconds)
            models.setdefault(precision, model)
    speed32 = statistics.fmean(figures["float32"]["seconds"])
    rows = [[p, mean_std(f["clean"]), mean_std(f["robust"]),
             f"{statistics.fmean(f['seconds']):.1f}",
             f"{speed32 / statistics.fmean(f['seconds']):.2f}x"] for p, f in figures.items()]
    features = cpu_features() if args.device == "cpu" else torch.cuda.get_device_name()
    print_table(f"{args.preset} on {data.info.name}, seeds {args.seeds}, test under PGD-20 "
                f"scored in float32; {features}",
                ["training precision", "clean acc %", "robust acc %", "s per endpoint",
                 "speed vs float32"], rows)
    model = models["float32"]
    rows = []
    for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        attack = AttackIn(pgd, exact.device, dtype)
        start = time.perf_counter()
        metrics = evaluate_seeded(model, test.to(exact.device), attack, exact, 250, 0)
        rows.append([name, f"{metrics.robust_acc:.2f}", f"{time.perf_counter() - start:.2f}"])
    print_table("one float32 model under PGD-20 computed in each precision, scored in float32",
                ["attack precision", "robust acc %", "seconds"], rows)


if __name__ == "__main__":
    main()
