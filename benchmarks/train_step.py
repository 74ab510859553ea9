"""Seconds per PGD adversarial training step, per speed option, side by side in one run.

    python benchmarks/train_step.py --archs tinyten resnet32 --steps 5 --batch 128

Prints images/s and the speedup of each option over plain eager float32 (NCHW). Reference points
on 2-core CPUs for a PGD-5 (8/255, 2/255) step at batch 128, channels-last: tinyten 0.33-0.6 s,
resnet32 1.7-2.7 s.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import print_table, time_it
from robust_mc.config import AttackConfig, OptimConfig, SpeedConfig
from robust_mc.models import create_model
from robust_mc.run.runtime import start_runtime
from robust_mc.train.loop import Trainer, TrainingContext, make_optimizer
from robust_mc.train.tasks import EndpointTask

OPTIONS = {
    "eager fp32": SpeedConfig(channels_last=False, precision="float32"),
    "channels_last": SpeedConfig(channels_last=True, precision="float32"),
    "bf16": SpeedConfig(channels_last=False, precision="bfloat16"),
    "channels_last+bf16": SpeedConfig(channels_last=True, precision="bfloat16"),
    "compile": SpeedConfig(channels_last=False, precision="float32", compile=True),
    "channels_last+compile": SpeedConfig(channels_last=True, precision="float32", compile=True),
}


def step_time(arch: str, speed: SpeedConfig, steps: int, batch: int, repeats: int,
              device: str) -> float:
    torch.manual_seed(0)
    runtime = start_runtime(device, speed, compiles=True)
    model = runtime.prepare(create_model(arch, num_classes=10, in_channels=3,
                                         mean=(0.5,) * 3, std=(0.25,) * 3))
    forward = torch.compile(model) if speed.compile else model
    attack = AttackConfig(eps=8 / 255, step_size=2 / 255, steps=steps)
    task = EndpointTask(model, forward, attack, runtime)
    trainer = Trainer(task, make_optimizer(model.parameters(), OptimConfig()), OptimConfig(),
                      TrainingContext(runtime))
    x = runtime.images(torch.rand(batch, 3, 32, 32, device=device))
    y = torch.randint(0, 10, (batch,), device=device)

    def one_step() -> None:
        trainer.train_step(x, y)
        if device == "cuda":
            torch.cuda.synchronize()

    median, _ = time_it(one_step, repeats, warmup=3 if speed.compile else 1)
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archs", nargs="+", default=["tinyten", "resnet32"])
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--steps", type=int, default=5, help="PGD steps")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    for arch in args.archs:
        base = None
        for name in args.options:
            seconds = step_time(arch, OPTIONS[name], args.steps, args.batch, args.repeats,
                                args.device)
            base = base or seconds
            rows.append([arch, name, f"{seconds:.3f}", f"{args.batch / seconds:.0f}",
                         f"{base / seconds:.2f}x"])
            print(f"  {arch} {name}: {seconds:.3f} s/step", flush=True)
    print_table(f"PGD-{args.steps} training step, batch {args.batch}, {args.device}, "
                f"{torch.get_num_threads()} threads",
                ["arch", "option", "s/step", "img/s", "speedup vs eager fp32"], rows)


if __name__ == "__main__":
    main()
