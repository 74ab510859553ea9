"""Datasets by name, held as tensors in memory, with augmentation done on whole batches.

Images are always in [0, 1]; normalization belongs to the model (see ``models.Normalize``).
Every dataset has three splits: ``train``, ``val`` (carved from the training set, so that choices
along a path are never made on the test set) and ``test``.

Names: ``cifar10``, ``cifar100`` (torchvision format under ``data_dir``), ``imagefolder:PATH``
(``PATH/train/<class>/*`` and ``PATH/test/<class>/*``), ``digits`` (scikit-learn's bundled 8x8
digits, the embedded default) and ``synthetic`` (tiny generated data for tests). A new dataset is
one function registered with :func:`register_dataset`; ``--dataset`` offers it.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from robust_mc.errors import UserError
from robust_mc.limits import checked_stat
from robust_mc.registry import Registry
from robust_mc.settings import setting

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# per-channel (mean, std) a foreign model may expect of its [0, 1] inputs, by name
NORMALIZATIONS = {"none": ((0.0,), (1.0,)), "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
                  "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
                  "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}


@dataclass(frozen=True)
class Normalization:
    """What a network expects of its [0, 1] inputs: ``(x - mean) / std`` per channel (one
    value each for all channels, or one per channel). A model's own; never interpolated."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, mean: Sequence[float], std: Sequence[float]) -> Normalization:
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std))


NO_NORMALIZATION = Normalization((0.0,), (1.0,))


def parse_normalization(text: str) -> Normalization:
    """``none``, ``cifar10``, ``cifar100``, ``imagenet``, or ``MEAN,MEAN,...:STD,STD,...``
    (one value per channel, or one for all)."""
    if text in NORMALIZATIONS:
        return Normalization.of(*NORMALIZATIONS[text])
    means, sep, stds = text.partition(":")
    try:
        values = [[float(v) for v in part.split(",")] for part in (means, stds)]
    except ValueError:
        values = []
    if not sep or len(values) != 2 or len(values[0]) != len(values[1]) or not all(
            math.isfinite(v) for v in values[0] + values[1]) or any(s <= 0 for s in values[1]):
        raise UserError(f"--normalization {text!r}: give {', '.join(NORMALIZATIONS)} or "
                        "MEAN,...:STD,... (finite numbers, positive stds, one per channel)")
    return Normalization.of(values[0], values[1])


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # pixels of zero padding for random crops; 0 disables cropping
    flip: bool  # horizontal flips are label-preserving


@dataclass(frozen=True)
class Split:
    """Images (N, C, H, W) as uint8 in [0, 255] or float in [0, 1], labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def take(self, count: int | None) -> Split:
        if count is None or count >= len(self):
            return self
        return Split(self.images[:count], self.labels[:count])

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


@dataclass(frozen=True)
class Data:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split

    def to(self, device: torch.device | str) -> Data:
        return replace(self, train=self.train.to(device), val=self.val.to(device),
                       test=self.test.to(device))


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float32 in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


# --- the datasets ------------------------------------------------------------------------------

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
    return _image_folder(Path(request.argument or "").expanduser())


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


def _image_folder(root: Path) -> Loaded:
    for sub in ("train", "test"):
        if not (root / sub).is_dir():
            raise UserError(f"imagefolder:{root} has no {sub}/ sub-folder; expected "
                            f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"imagefolder:{root}/train has no class sub-folders")
    # files come grouped by class: a fixed shuffle makes every prefix (--train-limit, the BN and
    # alignment images, --eval-test-limit) a sample of all classes
    train = _shuffled(_decode_folder(root / "train", classes))
    test = _shuffled(_decode_folder(root / "test", classes))
    images = train.images
    channels, size = int(images.shape[1]), int(images.shape[2])
    sample = images[:: max(1, len(images) // 10000)]  # spread over classes, which come in order
    flat = as_float(sample).transpose(0, 1).reshape(channels, -1)
    mean = tuple(round(v, 4) for v in flat.mean(1).tolist())
    # a channel that never varies (a constant colour) has nothing to scale: dividing by its
    # zero std would make every input infinite, so it is only centred
    std = tuple(round(v, 4) if v >= 1 / 255 else 1.0 for v in flat.std(1).tolist())
    info = DatasetInfo(f"imagefolder:{root}", len(classes), channels, size, mean, std,
                       max(size // 8, 1), True)
    return Loaded(info, train, test)


def _shuffled(split: Split) -> Split:
    return split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(0)))


def _decode_folder(folder: Path, classes: list[str]) -> Split:
    """Decode every image of ``folder/<class>/`` into one uint8 tensor, cached on disk."""
    import numpy as np
    from PIL import Image

    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise UserError(f"{folder} lacks the class folder {name!r} that train/ has")
        found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [index] * len(found)
    if not files:
        raise UserError(f"{folder} holds no .jpg/.jpeg/.png images")
    # one stat per image: its time for the cache key, its kind refused if not a file (a FIFO
    # under an image's name would block the decoder)
    key = hashlib.sha256("\n".join(f"{p}:{checked_stat(p, f'image {p}').st_mtime_ns}"
                                   for p in files).encode())
    cache = _cache_dir() / f"imagefolder-{key.hexdigest()[:20]}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            cached = Split(saved["images"], saved["labels"])
            if (cached.images.dtype == torch.uint8 and cached.images.dim() == 4
                    and cached.images.shape[0] == len(files)
                    and torch.equal(cached.labels, torch.tensor(labels, dtype=torch.int64))):
                return cached
        except Exception:  # a stale, torn or foreign cache is rebuilt, never trusted
            pass

    def decode(path: Path) -> torch.Tensor:  # (C, H, W) uint8
        try:
            with Image.open(path) as image:
                return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        except OSError as exc:
            raise UserError(f"cannot decode image {path}: {exc}") from None

    decoded = [decode(path) for path in files]  # serial PIL beats threads here (the GIL)
    shapes = {tuple(t.shape) for t in decoded}
    if len(shapes) != 1:
        raise UserError(f"{folder}: images have different sizes {sorted(shapes)[:3]}; "
                        "resize them to one size first")
    split = Split(torch.stack(decoded), torch.tensor(labels, dtype=torch.int64))
    try:
        from robust_mc.run.files import atomic_torch_save

        atomic_torch_save({"images": split.images, "labels": split.labels}, cache)
    except OSError:
        pass  # caching is an optimisation; a read-only cache directory is fine
    return split


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "robust-mc"


# --- batches ------------------------------------------------------------------------------------

def random_crop_flip(images: torch.Tensor, padding: int, flip: bool,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Batched augmentation: a random crop from a zero-padded image, then a random flip.

    ``images`` (B, C, H, W) float; returns a new tensor of the same shape.
    """
    batch, _, height, width = images.shape
    device = images.device
    out = images
    if padding > 0:
        padded = F.pad(images, (padding,) * 4)  # (B, C, H+2p, W+2p)
        dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(device)
        dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(device)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]
        out = padded[torch.arange(batch, device=device)[:, None, None, None],
                     torch.arange(images.shape[1], device=device)[None, :, None, None],
                     rows, cols]
    if flip:
        mask = (torch.rand(batch, generator=generator) < 0.5).to(device)
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out


def batches(split: Split, batch_size: int, *, shuffle: bool = False,
            generator: torch.Generator | None = None, info: DatasetInfo | None = None,
            augment: bool = False, drop_last: bool = False, order: torch.Tensor | None = None,
            start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images float (B, C, H, W) in [0, 1], labels (B,)) on the split's device.

    ``order`` (a permutation of the split) fixes the shuffle; ``start`` skips that many batches,
    which is how an interrupted epoch continues where it stopped."""
    count = len(split)
    if order is None and shuffle:
        order = torch.randperm(count, generator=generator)
    stop = count - count % batch_size if drop_last and count >= batch_size else count
    for first in range(start * batch_size, stop, batch_size):
        if order is not None:
            index = order[first:first + batch_size].to(split.images.device)
            images, labels = split.images[index], split.labels[index]
        else:
            images = split.images[first:first + batch_size]
            labels = split.labels[first:first + batch_size]
        images = as_float(images)
        if augment and info is not None:
            images = random_crop_flip(images, info.crop_padding, info.flip, generator)
        yield images, labels


def num_batches(split: Split, batch_size: int, drop_last: bool = False) -> int:
    if drop_last and len(split) >= batch_size:
        return len(split) // batch_size
    return -(-len(split) // batch_size)
