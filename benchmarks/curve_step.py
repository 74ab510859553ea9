"""A robust curve-training step against a PGD training step of the base network, side by side.

    python -m benchmarks.curve_step --archs tinyten resnet20 --steps 5 --batch 128

Same batch, same attack steps; the ratio is curve / base (goal <= 1.05).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import print_table, time_it
from robust_mc.config import AttackConfig, CurveConfig, OptimConfig
from robust_mc.core.curves import Curve
from robust_mc.models import create_model
from robust_mc.run.runtime import start_runtime
from robust_mc.train.loop import Trainer, TrainingContext, make_optimizer
from robust_mc.train.tasks import CurveTask, EndpointTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archs", nargs="+", default=["tinyten", "resnet20"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    runtime = start_runtime(args.device)
    attack = AttackConfig(eps=8 / 255, steps=args.steps)
    rows = []
    for arch in args.archs:
        models = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            models.append(runtime.prepare(create_model(arch, num_classes=10, in_channels=3,
                                                       mean=(0.5,) * 3, std=(0.25,) * 3)))
        x = runtime.images(torch.rand(args.batch, 3, 32, 32, device=device))
        y = torch.randint(0, 10, (args.batch,), device=device)
        context = TrainingContext(runtime)
        base = Trainer(EndpointTask(models[0], models[0], attack, runtime),
                       make_optimizer(models[0].parameters(), OptimConfig()), OptimConfig(),
                       context)
        curve = Curve.between("bezier", models[0], models[0].state_dict(),
                              models[1].state_dict(), 1).to(device)
        along = Trainer(CurveTask(models[1], curve, attack, CurveConfig(), runtime,
                                  torch.Generator().manual_seed(0)),
                        make_optimizer([curve.bends], OptimConfig()), OptimConfig(), context)

        def step(trainer: Trainer, x=x, y=y):
            def run() -> None:
                trainer.train_step(x, y)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            return run

        timings = {}
        for _ in range(2):  # interleave the two, so drift hits both alike
            timings["base"] = min(timings.get("base", 1e9),
                                  time_it(step(base), args.repeats)[0])
            timings["curve"] = min(timings.get("curve", 1e9),
                                   time_it(step(along), args.repeats)[0])
        ratio = timings["curve"] / timings["base"]
        rows.append([arch, f"{timings['base']:.3f}", f"{timings['curve']:.3f}", f"{ratio:.3f}"])
        print(f"  {arch}: base {timings['base']:.3f} s, curve {timings['curve']:.3f} s", flush=True)
    print_table(f"PGD-{args.steps} step at batch {args.batch} on {device}",
                ["arch", "base step s", "curve step s", "curve / base"], rows)


if __name__ == "__main__":
    main()
