"""Hugging Face model directories as checkpoints: one that ``save_pretrained`` wrote is read
(config, weights, the preprocessor's normalization) and one is written back by ``export``.

Reading never runs code from the directory: the config is data checked by
:mod:`robust_mc.models.huggingface`, the weights come from safetensors (sharded or not), never
from a pickle.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from robust_mc.data import NO_NORMALIZATION, Normalization
from robust_mc.errors import UserError
from robust_mc.models.huggingface import (
    CLASS_PREFIX,
    CONFIG_FILE,
    PREPROCESSOR_FILE,
    class_name,
    read_config,
    read_normalization,
)
from robust_mc.run.files import check_writable_folder
from robust_mc.store.checkpoint import Checkpoint, LoadOptions
from robust_mc.store.meta import CheckpointMeta

WEIGHTS_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS = "pytorch_model.bin"


def load_model_dir(folder: Path, options: LoadOptions | None = None) -> Checkpoint:
    """The checkpoint a ``save_pretrained`` directory holds: ``transformers:<Class>`` with the
    config in its model arguments, the weights under the library's own names, the
    preprocessor's mean and std (``--normalization`` overrides them)."""
    options = options or LoadOptions()
    if options.arch is not None and options.arch != f"hf:{folder}":
        raise UserError(f"{folder} is a Hugging Face model directory, which names its own "
                        f"class; drop --arch {options.arch}")
    config = read_config(folder)
    return checkpoint_of(folder, config, read_weights(folder, config), options, str(folder))


def checkpoint_of(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor],
                  options: LoadOptions, source: str) -> Checkpoint:
    """A checkpoint of ``state`` (the library's parameter names) built as ``config`` (the
    ``config.json`` of ``folder``) says; ``source`` is the file or directory the weights came
    from."""
    arch = CLASS_PREFIX + class_name(config, folder)
    kwargs = {**(options.arch_kwargs or {}), "config": config}
    shape = {"num_classes": _count(config.get("num_labels", _labels(config)), "num_labels",
                                   folder),
             "in_channels": _count(config.get("num_channels", 3), "num_channels", folder),
             "width": 1.0}  # robust-mc's multiplier, which a library model never takes
    size = config.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        shape["image_size"] = size
    given = read_normalization(folder)
    if options.normalization is not None:
        normalization, told = options.normalization, "as given"
    elif given is not None:
        normalization, told = Normalization.of(*given), f"{folder / PREPROCESSOR_FILE}"
    else:
        normalization, told = NO_NORMALIZATION, (
            "none (the directory has no preprocessor_config.json; --normalization sets it)")
    meta = CheckpointMeta(source_format="foreign", normalization_from=told)
    extra = {k: v for k, v in kwargs.items() if k not in shape}
    return Checkpoint(arch, shape, state, normalization, meta, source, model_kwargs=extra,
                      trust=options.code)


def read_weights(folder: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The directory's weights under the installed library's parameter names: the library
    reads ``model.safetensors`` (or its shards) and renames parameters it has renamed since
    they were saved. A pickled ``pytorch_model.bin`` is not read: unpickling can run code."""
    from robust_mc.models.huggingface import pretrained_network

    if not ((folder / WEIGHTS_FILE).is_file() or (folder / SHARD_INDEX).is_file()):
        pickled = (folder / PICKLED_WEIGHTS).is_file()
        raise UserError(f"{folder} holds no safetensors weights ({WEIGHTS_FILE} or "
                        f"{SHARD_INDEX})" + (
                            f"; its {PICKLED_WEIGHTS} is a pickle, which robust-mc does not "
                            "load from a model directory: save it again with "
                            "save_pretrained(..., safe_serialization=True)" if pickled else
                            "; save the model with save_pretrained"))
    net = pretrained_network(folder, config)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def write_model_dir(ckpt: Checkpoint, out: Path) -> list[Path]:
    """``ckpt`` (a transformers image classifier) as a ``save_pretrained`` directory, with the
    normalization in ``preprocessor_config.json``; written beside ``out`` and renamed into
    place, so a failure leaves nothing half-written."""
    from robust_mc.store.model_building import build_model

    if not ckpt.arch.startswith(CLASS_PREFIX):
        raise UserError(f"--format huggingface writes transformers models; {ckpt.arch} is not "
                        "one (use safetensors or state-dict)")
    check_writable_folder(out)
    net: Any = build_model(ckpt).net  # the library's class: save_pretrained, config
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name[:40]}.", dir=out.parent))
    try:
        net.save_pretrained(staging, safe_serialization=True)
        size = net.config.to_dict().get("image_size")
        processor: dict[str, Any] = {
            "image_processor_type": "ViTImageProcessor", "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(ckpt.normalization.mean), "image_std": list(ckpt.normalization.std)}
        if isinstance(size, int):
            processor.update(do_resize=True, size={"height": size, "width": size})
        (staging / PREPROCESSOR_FILE).write_text(json.dumps(processor, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / CONFIG_FILE, out / WEIGHTS_FILE, out / PREPROCESSOR_FILE]


def _labels(config: dict) -> int:
    labels = config.get("id2label")
    return len(labels) if isinstance(labels, dict) and labels else 2  # the library's default


def _count(value: Any, key: str, folder: Path) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1_000_000:
        return value
    raise UserError(f"{folder / CONFIG_FILE}: {key} must be a positive integer")
