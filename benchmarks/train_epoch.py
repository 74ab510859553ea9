"""Images/s of a PGD-7 (8/255, 2/255) adversarial training epoch with robust-mc's defaults.

    python -m benchmarks.train_epoch --data imagefolder:/path/to/cifar10 --images 5120

Runs the real training loop (`train_one_epoch`, batched augmentation, SGD) over the first
``--images`` training images of each architecture; a full CIFAR-10 epoch is 45,000 images.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import print_table
from benchmarks.data import benchmark_data
from robust_mc.config import AttackConfig, OptimConfig
from robust_mc.models import create_model
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime
from robust_mc.train.loop import Trainer, TrainingContext, make_optimizer
from robust_mc.train.tasks import EndpointTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None)
    parser.add_argument("--archs", nargs="+", default=["tinyten", "resnet20"])
    parser.add_argument("--images", type=int, default=5120)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    runtime = start_runtime(args.device)
    data = benchmark_data(args.data, args.images, 100).to(runtime.device)
    attack = AttackConfig(eps=8 / 255, step_size=2 / 255, steps=7)
    optim = OptimConfig(epochs=1, batch_size=128)
    rows = []
    for arch in args.archs:
        torch.manual_seed(0)
        model = runtime.prepare(create_model(arch, num_classes=10, in_channels=3,
                                             mean=data.info.mean, std=data.info.std))
        task = EndpointTask(model, model, attack, runtime)
        context = TrainingContext(runtime, generator=torch.Generator().manual_seed(0),
                                  train=data.train, info=data.info, augment=True)
        trainer = Trainer(task, make_optimizer(model.parameters(), optim), optim, context)
        with Reporter(quiet=True).task("", 0) as step:
            result = trainer.train_one_epoch(step)
        assert result is not None
        rows.append([arch, str(result.images), f"{result.seconds:.1f}",
                     f"{result.images_per_s:.1f}", f"{45000 / result.images_per_s / 60:.1f}"])
    print_table(f"PGD-7 training epoch on {data.info.name} ({args.device}, "
                f"{torch.get_num_threads()} threads)",
                ["arch", "images", "seconds", "images/s", "min per 45k-image epoch"], rows)


if __name__ == "__main__":
    main()
