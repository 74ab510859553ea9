"""Speed-up of N torchrun processes over one: robust curve training steps and path evaluation.

    python -m benchmarks.distributed [--data imagefolder:/path/to/cifar10] [--procs 1,2]
    python -m benchmarks.distributed --device cuda --procs 1,2,4      # one GPU per process

Each N runs under ``torch.distributed.run`` on this machine (Gloo on CPUs, each process with
cores/N threads, so that every N uses the same cores; NCCL on GPUs), side by side in one
invocation. Measured: seconds per curve training step (global batch ``--batch``, PGD-5, a t per
step) and seconds per evaluated t (BN statistics from ``--bn-images`` clean training images,
``--test-images`` test images under PGD-5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import print_table

ROOT = Path(__file__).resolve().parent.parent


def worker(args: argparse.Namespace) -> None:
    """One process of N: time the steps and the path, rank 0 prints a JSON line."""
    from benchmarks.data import benchmark_data
    from robust_mc.attacks.pgd import ShardDraws
    from robust_mc.config import AttackConfig, CurveConfig, OptimConfig, PathConfig
    from robust_mc.core.curves import Curve
    from robust_mc.evaluation.path import evaluate_path
    from robust_mc.models import create_model
    from robust_mc.run import distributed
    from robust_mc.run.progress import Reporter
    from robust_mc.run.runtime import start_runtime
    from robust_mc.train.loop import Trainer, TrainingContext, make_optimizer
    from robust_mc.train.tasks import CurveTask

    runtime = start_runtime(args.device)
    group = distributed.group()
    data = benchmark_data(args.data, max(args.bn_images, args.batch * (args.steps + 2)),
                          args.test_images).to(runtime.device)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(runtime.prepare(create_model(args.arch, num_classes=10, in_channels=3,
                                                   mean=data.info.mean, std=data.info.std)))
    curve = Curve.between("bezier", models[0], models[0].state_dict(), models[1].state_dict(),
                          bends=1).to(runtime.device)
    attack = AttackConfig(eps=8 / 255, steps=5)
    optim = OptimConfig(batch_size=args.batch)
    generator = torch.Generator().manual_seed(0)
    draws = torch.Generator(runtime.device).manual_seed(0)
    task = CurveTask(models[0], curve, attack, CurveConfig(), runtime, generator,
                     ShardDraws(draws, group.rank, group.world) if group.active else draws)
    trainer = Trainer(task, make_optimizer([curve.bends], optim), optim,
                      TrainingContext(runtime, train=data.train, info=data.info))
    images, labels = data.train.images.float() / 255, data.train.labels
    seconds = []
    for step in range(args.steps + 2):  # two warm-up steps
        rows = slice(step * args.batch, (step + 1) * args.batch)
        group.barrier()
        start = time.perf_counter()
        trainer.train_step(images[rows], labels[rows])
        group.barrier()
        seconds.append(time.perf_counter() - start)
    step_s = sorted(seconds[2:])[len(seconds[2:]) // 2]
    path = PathConfig(points=args.points, bn_images=args.bn_images, attack="pgd:steps=5",
                      val_limit=1, test_limit=args.test_images)
    group.barrier()
    start = time.perf_counter()
    evaluate_path(curve, models[0], data, path, attack, runtime, Reporter(quiet=True), "bench",
                  keep_best=False)
    per_t = (time.perf_counter() - start) / args.points
    if group.main:
        print(json.dumps({"procs": group.world, "threads": torch.get_num_threads(),
                          "step_s": step_s, "per_t_s": per_t}), flush=True)
    distributed.stop()


def launch(procs: int, args: argparse.Namespace, argv: list[str]) -> dict:
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // procs) if args.device == "cpu" else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(procs), "-m", "benchmarks.distributed", "--worker", *argv]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{procs} processes failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="imagefolder:PATH (default: random "
                                                     "CIFAR-shaped tensors)")
    parser.add_argument("--arch", default="tinyten")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--batch", type=int, default=128, help="global batch of a step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--bn-images", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.worker:
        worker(args)
        return
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
            if key not in ("procs", "worker") and value is not None]
    results = [launch(int(n), args, argv) for n in args.procs.split(",")]
    base = results[0]
    rows = [[str(r["procs"]), str(r["threads"]), f"{r['step_s']:.3f}",
             f"{base['step_s'] / r['step_s']:.2f}x", f"{r['per_t_s']:.2f}",
             f"{base['per_t_s'] / r['per_t_s']:.2f}x"] for r in results]
    cpu = (open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")
           if Path("/proc/cpuinfo").exists() else "?")
    device = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"{cpu}, {len(os.sched_getaffinity(0))} cores"
    print_table(f"{args.arch}, curve step (global batch {args.batch}, PGD-5) and path "
                f"evaluation per t ({args.bn_images} BN images, {args.test_images} test images, "
                f"PGD-5) on {device}",
                ["processes", "threads each", "step s", "speed-up", "per t s", "speed-up"], rows)


if __name__ == "__main__":
    main()
