"""Run by torchrun in tests/test_distributed.py: trains one endpoint on every rank through the
library and saves each rank's weights (``OUT/rank<r>.pt``), so the test can compare ranks."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from robust_mc.config import TrainRunConfig, build_config
from robust_mc.pipelines.endpoint_training import train_endpoint
from robust_mc.run import distributed
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import start_runtime

SETTINGS = {"data.dataset": "digits", "data.train_limit": 512, "model.arch": "mlp",
            "attack.eps": 0.1, "attack.steps": 3, "optim.epochs": 1, "optim.batch_size": 64,
            "optim.lr": 0.05, "eval.attack": "none", "device": "cpu"}


def main(out: Path) -> None:
    cfg = build_config(TrainRunConfig, None, SETTINGS)
    runtime = start_runtime(cfg.device, cfg.speed)
    ckpt = train_endpoint(cfg, runtime, Reporter(quiet=True))
    torch.save(ckpt.state_dict, out / f"rank{distributed.group().rank}.pt")
    distributed.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
