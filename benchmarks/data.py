"""Benchmark inputs: the CIFAR-10 JPEG tree when given (``--data imagefolder:PATH``), else random
CIFAR-shaped tensors of the same size."""

from __future__ import annotations

import torch

from robust_mc.config import DataConfig
from robust_mc.data import Data, DatasetInfo, Split, load_data


def benchmark_data(name: str | None, train: int, test: int) -> Data:
    if name:
        return load_data(DataConfig(dataset=name, train_limit=train + 1000, test_limit=test,
                                    val_size=1000))
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8),
                     torch.randint(0, 10, (n,), generator=gen))

    info = DatasetInfo("random", 10, 3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), 4, True)
    return Data(info, split(train), split(1000), split(test))
