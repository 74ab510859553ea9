"""Datasets by name, held as tensors in memory, with augmentation done on whole batches.

Images are always in [0, 1]; normalization belongs to the model (see ``models.Normalize``).
Every dataset has three splits: ``train``, ``val`` (carved from the training set, so that choices
along a path are never made on the test set) and ``test``.

Names: ``cifar10``, ``cifar100`` (torchvision format under ``data_dir``), ``imagefolder:PATH``
(``PATH/train/<class>/*`` and ``PATH/test/<class>/*``), ``digits`` (scikit-learn's bundled 8x8
digits, the embedded default) and ``synthetic`` (tiny generated data for tests). A new dataset is
one function registered with :func:`register_dataset`; ``--dataset`` offers it.

The package: ``splits`` (the tensors), ``batches``, ``normalization``, ``registry`` (names, the
data settings, :func:`load_data`), ``builtin`` and ``image_folder`` (the datasets).
"""


from robust_mc.data import builtin  # noqa: F401  (registers the datasets)
from robust_mc.data.batches import batches, num_batches, random_crop_flip
from robust_mc.data.normalization import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NO_NORMALIZATION,
    NORMALIZATIONS,
    Normalization,
    parse_normalization,
)
from robust_mc.data.registry import (
    DATASETS,
    DataConfig,
    DatasetRequest,
    Loaded,
    load_data,
    register_dataset,
)
from robust_mc.data.splits import Data, DatasetInfo, Split, as_float

__all__ = ["CIFAR100_MEAN", "CIFAR100_STD", "CIFAR10_MEAN", "CIFAR10_STD", "DATASETS",
           "IMAGENET_MEAN", "IMAGENET_STD", "NORMALIZATIONS", "NO_NORMALIZATION", "Data",
           "DataConfig", "DatasetInfo", "DatasetRequest", "Loaded", "Normalization", "Split",
           "as_float", "batches", "load_data", "num_batches", "parse_normalization",
           "random_crop_flip", "register_dataset"]
