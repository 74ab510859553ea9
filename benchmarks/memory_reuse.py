"""What keeping freed CPU memory for reuse (``speed.reuse_memory``, the default) buys, side by side.

    python -m benchmarks.memory_reuse --archs tinyten resnet20

Each measurement runs in a fresh process, with and without the setting, alternating: an eval-mode
forward pass over 5,000 CIFAR-shaped images in batches of 250 (as alignment and evaluation run)
and a PGD-5 training step at batch 128 (``benchmarks.train_step``). Prints the medians, the system
(kernel) CPU seconds that the page faults cost in each workload, and the speedup.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.common import print_table, time_it
from benchmarks.train_step import step_time
from robust_mc.config import SpeedConfig
from robust_mc.models import create_model
from robust_mc.run.runtime import start_runtime


def measure(arch: str, reuse: bool) -> dict[str, float]:
    """One process's figures: seconds per forward pass and per training step, and the kernel
    seconds of each workload in all (warm-up included)."""
    speed = SpeedConfig(reuse_memory=reuse)
    runtime = start_runtime("cpu", speed)
    torch.manual_seed(0)
    model = runtime.prepare(create_model(arch, num_classes=10, in_channels=3,
                                         mean=(0.5,) * 3, std=(0.25,) * 3)).eval()
    images = runtime.images(torch.rand(5000, 3, 32, 32))

    def forward() -> float:
        def one_pass() -> None:
            with torch.no_grad():
                for start in range(0, len(images), 250):
                    model(images[start:start + 250])
        return time_it(one_pass, repeats=3, warmup=1)[0]

    workloads = {"forward": forward,
                 "train_step": lambda: step_time(arch, speed, steps=5, batch=128, repeats=3,
                                                 device="cpu")}
    figures = {}
    for name, run in workloads.items():
        system = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        figures[name] = run()
        figures[f"{name}_sys"] = resource.getrusage(resource.RUSAGE_SELF).ru_stime - system
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archs", nargs="+", default=["tinyten", "resnet20"])
    parser.add_argument("--rounds", type=int, default=2, help="process pairs per architecture")
    parser.add_argument("--child", nargs=2, metavar=("ARCH", "REUSE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1] == "on")))
        return
    rows = []
    for arch in args.archs:
        runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for reuse in ("off", "on"):
                out = subprocess.run([sys.executable, "-m", "benchmarks.memory_reuse",
                                      "--child", arch, reuse],
                                     capture_output=True, text=True, check=True).stdout
                runs[reuse].append(json.loads(out.strip().splitlines()[-1]))
        for what in ("forward", "train_step"):
            off, on = (statistics.median(r[what] for r in runs[k]) for k in ("off", "on"))
            sys_off, sys_on = (statistics.median(r[f"{what}_sys"] for r in runs[k])
                               for k in ("off", "on"))
            rows.append([arch, what, f"{off:.3f} ({sys_off:.2f})", f"{on:.3f} ({sys_on:.2f})",
                         f"{off / on:.2f}x"])
        print(f"  {arch} done", flush=True)
    print_table(f"memory reuse on cpu, {time.strftime('%Y-%m-%d')}; "
                "seconds (kernel seconds in all)",
                ["arch", "workload", "reuse off", "reuse on", "speedup"], rows)


if __name__ == "__main__":
    main()
