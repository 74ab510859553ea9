"""Datasets by name: the registry ``--dataset`` offers, the data settings, and
:func:`load_data`, which carves the validation split from the training set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from robust_mc.data.splits import Data, DatasetInfo, Split
from robust_mc.errors import UserError
from robust_mc.registry import Registry
from robust_mc.settings import setting


@dataclass(frozen=True)
class DatasetRequest:
    """What a dataset loader is asked for: the argument after ``name:`` (``imagefolder:PATH``)
    and where torchvision-format data lives."""

    argument: str | None = None
    data_dir: str | None = None
    download: bool = False


@dataclass(frozen=True)
class Loaded:
    """A dataset as its loader returns it: the validation split is carved later."""

    info: DatasetInfo
    train: Split
    test: Split


DatasetLoader = Callable[[DatasetRequest], Loaded]
DATASETS = Registry[DatasetLoader]("dataset")


def register_dataset(name: str, *, argument: str | None = None, argument_required: bool = False
                     ) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register ``loader(request) -> Loaded`` as ``--dataset name`` (``name:ARGUMENT`` when it
    takes an ``argument``, e.g. ``PATH``; ``argument_required``: the bare name is not enough).

    Example::

        @register_dataset("stripes")
        def _stripes(request: DatasetRequest) -> Loaded:
            ...
    """
    return DATASETS.register(name, argument=argument, argument_required=argument_required)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = setting("digits", choices=DATASETS,
                           help="a registered dataset; imagefolder:PATH reads PATH/train/<class>/* "
                                "and PATH/test/<class>/*")
    data_dir: str | None = setting(None, help="root directory of cifar10/cifar100 data")
    download: bool = setting(False, help="allow torchvision to download cifar10/cifar100")
    val_size: int | None = setting(None, lo=0, help="validation images carved from train "
                                                    "(default 10%, at most 5000)")
    val_seed: int = setting(0, help="seed of the train/validation split")
    train_limit: int | None = setting(None, lo=1, help="use only the first N training images")
    test_limit: int | None = setting(None, lo=1, help="use only the first N test images")
    augment: bool = setting(True, help="random crop with padding and horizontal flip in training")


def load_data(config: DataConfig) -> Data:
    """Load a dataset by name and carve the validation split from its training set."""
    entry, argument = DATASETS.split(config.dataset)
    loaded = entry.item(DatasetRequest(argument, config.data_dir, config.download))
    info, train, test = loaded.info, loaded.train, loaded.test
    train = train.take(config.train_limit)
    test = test.take(config.test_limit)
    val_size = config.val_size
    if val_size is None:
        val_size = min(5000, len(train) // 10)
    if val_size >= len(train):
        raise UserError(f"data.val_size {val_size} leaves no training images "
                        f"(the training set has {len(train)}); choose a smaller --val-size")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.val_seed))
    val = train.subset(order[:val_size])
    train = train.subset(order[val_size:].sort().values)
    return Data(info=info, train=train, val=val, test=test)
