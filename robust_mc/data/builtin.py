"""The datasets robust-mc knows: ``synthetic`` (tiny generated data for tests), ``digits``
(scikit-learn's bundled 8x8 digits, the embedded default), ``cifar10`` and ``cifar100``
(torchvision format under ``data_dir``) and ``imagefolder:PATH``."""

from __future__ import annotations

from pathlib import Path

import torch

from robust_mc.data.image_folder import image_folder
from robust_mc.data.normalization import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from robust_mc.data.registry import DatasetRequest, Loaded, register_dataset
from robust_mc.data.splits import DatasetInfo, Split
from robust_mc.errors import UserError, home_of


@register_dataset("synthetic", argument="SIZE")
def _synthetic_dataset(request: DatasetRequest) -> Loaded:
    """Four classes of noisy prototype images, SIZE pixels a side (12 by default)."""
    return _synthetic(_synthetic_size(request.argument))


@register_dataset("digits")
def _digits_dataset(request: DatasetRequest) -> Loaded:
    """scikit-learn's bundled 8x8 digits: the embedded default."""
    return _digits()


@register_dataset("cifar10")
def _cifar10(request: DatasetRequest) -> Loaded:
    return _torchvision_cifar("cifar10", request.data_dir, request.download)


@register_dataset("cifar100")
def _cifar100(request: DatasetRequest) -> Loaded:
    return _torchvision_cifar("cifar100", request.data_dir, request.download)


@register_dataset("imagefolder", argument="PATH", argument_required=True)
def _imagefolder(request: DatasetRequest) -> Loaded:
    return image_folder(Path(home_of(request.argument or "")))


def _synthetic_size(argument: str | None) -> int:
    size = argument or "12"
    if not size.isdigit() or not 4 <= int(size) <= 64:
        raise UserError(f"dataset synthetic:{size}: write synthetic or synthetic:SIZE with a "
                        "size from 4 to 64 pixels")
    return int(size)


def _synthetic(size: int = 12) -> Loaded:
    """Four classes of noisy 3 x size x size prototype images (12 by default, 32 for networks
    built for CIFAR-sized inputs); learnable in a few epochs."""
    gen = torch.Generator().manual_seed(1234)
    classes, shape = 4, (3, size, size)
    prototypes = torch.rand((classes, *shape), generator=gen) * 0.6 + 0.2

    def draw(count: int) -> Split:
        labels = torch.arange(count) % classes
        noise = torch.randn((count, *shape), generator=gen) * 0.25
        return Split((prototypes[labels] + noise).clamp_(0, 1), labels)

    info = DatasetInfo("synthetic", classes, 3, size, (0.5,) * 3, (0.25,) * 3, 2, True)
    return Loaded(info, draw(800), draw(200))


def _digits() -> Loaded:
    """scikit-learn's 1,797 8x8 digits (values 0..16), a fixed 20% test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).div_(16).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = len(labels) // 5
    test = Split(images[order[:n_test]], labels[order[:n_test]])
    train = Split(images[order[n_test:]], labels[order[n_test:]])
    info = DatasetInfo("digits", 10, 1, 8, (0.305,), (0.377,), 1, False)
    return Loaded(info, train, test)


def _torchvision_cifar(name: str, data_dir: str | None, download: bool) -> Loaded:
    from torchvision import datasets

    if data_dir is None:
        raise UserError(f"{name} needs --data-dir DIR (add --download to fetch it there)")
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=data_dir, train=train, download=download)
        except RuntimeError as exc:
            raise UserError(f"{name} not found under {data_dir} ({str(exc).splitlines()[0]}); "
                            "add --download or point --data-dir at it") from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits.append(Split(images, torch.tensor(ds.targets, dtype=torch.int64)))
    ten = name == "cifar10"
    info = DatasetInfo(name, 10 if ten else 100, 3, 32,
                       CIFAR10_MEAN if ten else CIFAR100_MEAN,
                       CIFAR10_STD if ten else CIFAR100_STD, 4, True)
    return Loaded(info, splits[0], splits[1])
