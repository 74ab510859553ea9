"""Two endpoints to be aligned or connected: loaded, checked against each other and the data."""

from __future__ import annotations

from dataclasses import dataclass

from robust_mc.data import Data
from robust_mc.errors import UserError
from robust_mc.models import Classifier
from robust_mc.run.checkpoint import Checkpoint, LoadOptions, build_model, load_checkpoint


@dataclass
class Pair:
    a: Checkpoint
    b: Checkpoint

    def models(self) -> tuple[Classifier, Classifier]:
        return build_model(self.a), build_model(self.b)

    def config_base(self, keep_attack: tuple[str, ...] | None = None) -> dict:
        """Defaults taken from endpoint a's recorded training: its dataset and attack (only the
        ``keep_attack`` keys of it, when given)."""
        config = self.a.meta.get("config") or {}
        base: dict = {}
        if isinstance(config.get("data"), dict):
            base["data"] = {k: v for k, v in config["data"].items()
                            if k in ("dataset", "data_dir", "val_size", "val_seed")}
        elif self.a.dataset:
            base["data"] = {"dataset": self.a.dataset}
        if isinstance(config.get("attack"), dict):
            base["attack"] = {k: v for k, v in config["attack"].items()
                              if keep_attack is None or k in keep_attack}
        return base

    def check_data(self, data: Data) -> None:
        check_fits_data(self.a, data)
        check_fits_data(self.b, data)


def check_fits_data(ckpt: Checkpoint, data: Data) -> None:
    """The checkpoint's classes and input channels match the dataset's. A foreign checkpoint
    that records no shape takes the dataset's (classes, channels, image size)."""
    if "num_classes" not in ckpt.arch_kwargs:
        info = data.info
        ckpt.arch_kwargs.update(num_classes=info.num_classes, in_channels=info.in_channels,
                                image_size=info.image_size)
    if ckpt.num_classes != data.info.num_classes:
        raise UserError(f"{ckpt.path} has {ckpt.num_classes} classes but {data.info.name} "
                        f"has {data.info.num_classes}; choose the dataset it was trained on "
                        "with --dataset")
    channels = ckpt.arch_kwargs["in_channels"]
    if channels != data.info.in_channels:
        raise UserError(f"{ckpt.path} takes {channels}-channel images but {data.info.name} "
                        f"has {data.info.in_channels}; choose its dataset with --dataset")


def load_pair(path_a: str, path_b: str, options: LoadOptions | None = None) -> Pair:
    """Two endpoint files of one architecture, shape and normalization, read as ``options``
    (the user's ``--arch``, ``--trust-code``, ...) allow."""
    a, b = (load_checkpoint(path, options) for path in (path_a, path_b))
    if a.arch != b.arch:
        raise UserError(f"the endpoints have different architectures ({a.arch} vs {b.arch}); "
                        "connect two networks of one architecture")
    if a.arch_kwargs != b.arch_kwargs:
        diff = sorted(k for k in set(a.arch_kwargs) | set(b.arch_kwargs)
                      if a.arch_kwargs.get(k) != b.arch_kwargs.get(k))
        raise UserError(f"the endpoints differ in {diff[0]} ({a.arch_kwargs.get(diff[0])} vs "
                        f"{b.arch_kwargs.get(diff[0])}); connect two networks of one shape")
    if a.normalization != b.normalization:
        raise UserError("the endpoints normalize their inputs differently; connect networks "
                        "trained on the same dataset")
    return Pair(a, b)
