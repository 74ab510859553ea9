"""Seconds per evaluated t of a path, split into BN recomputation, clean pass and attack.

    python -m benchmarks.path_eval --data imagefolder:/path/to/cifar10 --arch tinyten

Reference point: about 11.3 s per t for tinyten with 2,000 training images (BN statistics from
PGD examples) and 1,000 test images under PGD-5 on a 2-core CPU, 7.7 s of it for the BN statistics.
``--bn-data adversarial`` measures robust-mc with the reference's BN procedure.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import print_table
from benchmarks.data import benchmark_data
from robust_mc.config import AttackConfig, PathConfig
from robust_mc.core.curves import Curve
from robust_mc.evaluation.path import evaluate_path
from robust_mc.models import create_model
from robust_mc.report.progress import Reporter
from robust_mc.run.runtime import start_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None)
    parser.add_argument("--arch", default="tinyten")
    parser.add_argument("--points", type=int, default=3)
    parser.add_argument("--bn-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--attack", default="pgd:steps=5")
    parser.add_argument("--bn-data", default="clean", choices=["clean", "adversarial"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    runtime = start_runtime(args.device)
    data = benchmark_data(args.data, args.bn_images, args.test_images).to(runtime.device)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(runtime.prepare(create_model(args.arch, num_classes=10, in_channels=3,
                                                   mean=data.info.mean, std=data.info.std)))
    curve = Curve.between("line", models[0], models[0].state_dict(), models[1].state_dict()
                          ).to(runtime.device)
    path = PathConfig(points=args.points, bn_images=args.bn_images, attack=args.attack,
                      val_limit=1, test_limit=args.test_images, bn_data=args.bn_data)
    attack = AttackConfig(eps=8 / 255, steps=5)
    start = time.perf_counter()
    points, _ = evaluate_path(curve, models[0], data, path, attack, runtime, Reporter(quiet=True),
                              "bench", keep_best=False)
    wall = (time.perf_counter() - start) / len(points)
    rows = [[f"{p.t:.2f}", f"{p.seconds['total']:.2f}", f"{p.seconds['bn']:.2f}",
             f"{p.seconds['clean']:.2f}", f"{p.seconds['attack']:.2f}"] for p in points]
    print_table(f"{args.arch}: seconds per t ({args.bn_images} {args.bn_data} BN images, "
                f"{args.test_images} test images under {args.attack}; mean {wall:.2f} s)",
                ["t", "total", "BN", "clean", "attack"], rows)


if __name__ == "__main__":
    main()
