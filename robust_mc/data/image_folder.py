"""``imagefolder:PATH``: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` decoded once into
uint8 tensors, cached on disk by the files' names and times."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from robust_mc.data.registry import Loaded
from robust_mc.data.splits import DatasetInfo, Split, as_float
from robust_mc.errors import UserError
from robust_mc.limits import checked_stat
from robust_mc.run.files import cache_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_folder(root: Path) -> Loaded:
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
    cache = cache_dir() / f"imagefolder-{key.hexdigest()[:20]}.pt"
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
        except Image.DecompressionBombError:
            raise UserError(f"image {path} claims more pixels than Pillow decodes safely (a "
                            "decompression bomb, or no dataset's image); remove it") from None

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
