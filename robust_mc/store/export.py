"""A checkpoint in formats other tools read: safetensors (weights, and the architecture, its
arguments, normalization and meta as JSON metadata), a plain state dict (``torch.save`` of
the architecture's own weights, the rest in a JSON file beside it), RobustBench's, and a Hugging
Face model directory (for transformers' image classifiers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from robust_mc.errors import UserError
from robust_mc.run.files import atomic_torch_save, atomic_write_bytes, atomic_write_json
from robust_mc.store.checkpoint import FORMAT, Checkpoint, plain
from robust_mc.store.safetensors_format import safetensors_bytes
from robust_mc.store.typed import write_record


def _record(ckpt: Checkpoint) -> dict:
    return {"format": FORMAT, "arch": ckpt.arch, "arch_kwargs": plain(ckpt.arch_kwargs),
            "model_kwargs": plain(ckpt.model_kwargs),
            "normalization": plain(write_record(ckpt.normalization)),
            "meta": plain(write_record(ckpt.meta))}


def _safetensors(ckpt: Checkpoint, out: Path) -> list[Path]:
    return [atomic_write_bytes(out, safetensors_bytes(ckpt.state_dict, _record(ckpt)))]


def _state_dict(ckpt: Checkpoint, out: Path) -> list[Path]:
    sidecar = out.with_name(out.name + ".json")
    return [atomic_torch_save(dict(ckpt.state_dict), out), atomic_write_json(sidecar, {
        **_record(ckpt), "note": "the weights of the architecture 'arch' (built with "
                                 "arch_kwargs and model_kwargs), which expects inputs "
                                 "normalized as 'normalization' says from [0, 1] images"})]


def _robustbench(ckpt: Checkpoint, out: Path) -> list[Path]:
    """As RobustBench keeps its models: ``{"state_dict": ...}`` keyed to the RobustBench
    architecture (which takes [0, 1] images itself), with the metadata beside it."""
    from_zoo = ckpt.arch.startswith("robustbench:") or ckpt.arch.split(".")[0] == "robustbench"
    if not from_zoo:
        raise UserError(f"--format robustbench writes RobustBench architectures; {ckpt.arch} is "
                        "not one (use safetensors or state-dict)")
    if any(m != 0.0 for m in ckpt.normalization.mean) or any(
            s != 1.0 for s in ckpt.normalization.std):
        raise UserError("--format robustbench: this model normalizes its inputs outside the "
                        "architecture, which RobustBench's models do not; use safetensors")
    sidecar = out.with_name(out.name + ".json")
    return [atomic_torch_save({"state_dict": dict(ckpt.state_dict)}, out),
            atomic_write_json(sidecar, _record(ckpt))]


def _huggingface(ckpt: Checkpoint, out: Path) -> list[Path]:
    from robust_mc.store.huggingface_dir import write_model_dir

    return write_model_dir(ckpt, out)


FORMATS: dict[str, Callable[[Checkpoint, Path], list[Path]]] = {
    "safetensors": _safetensors, "state-dict": _state_dict, "robustbench": _robustbench,
    "huggingface": _huggingface}
DIRECTORY_FORMATS = ("huggingface",)  # written as a new directory, not a file


def export_checkpoint(ckpt: Checkpoint, fmt: str, out: Path) -> list[Path]:
    """Write ``ckpt`` as ``fmt``; the files written (each atomically)."""
    return FORMATS[fmt](ckpt, out)
