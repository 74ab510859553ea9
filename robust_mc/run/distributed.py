"""Runs on many processes, launched by PyTorch's ``torchrun`` (``torchrun --nproc-per-node N -m
robust_mc train|connect|eval ...``): the process group comes from the environment torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...); without it everything runs in one
process as before.

The group is NCCL on GPUs (one GPU per local rank) and Gloo on CPUs. Rank 0 alone prints and
writes files; the others keep stdout quiet and skip writes. Every collective here is called by
every rank at the same point of the run, so results never depend on which rank is slower.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from robust_mc.errors import UserError

T = TypeVar("T")
R = TypeVar("R")
TIMEOUT = timedelta(minutes=30)  # a rank that waits longer than this for the others gives up


@dataclass(frozen=True)
class Group:
    """This process's place among the run's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch: the batch split in ``world`` equal parts."""
        if not self.active:
            return tensor
        per = tensor.shape[0] // self.world
        return tensor[self.rank * per:(self.rank + 1) * per]

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Element-wise sums over ranks (float64)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
        if self.active:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def maximum(self, value: int) -> int:
        """The largest ``value`` over ranks."""
        if not self.active:
            return value
        tensor = torch.tensor([value], device=collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def map(self, fn: Callable[[T], R], items: Sequence[T],
            done: Callable[[int, R], None] | None = None) -> list[R]:
        """``[fn(item) for item in items]``, the items shared out over ranks in rounds of
        ``world`` (item i on rank i % world), every result on every rank in order. ``done(i,
        result)`` runs on every rank after each round, in order (progress, saving)."""
        results: list[R] = []
        for first in range(0, len(items), self.world):
            index = first + self.rank
            mine = fn(items[index]) if index < len(items) else None
            for result in self.gather(mine)[:len(items) - first]:
                results.append(result)  # type: ignore[arg-type]
                if done is not None:
                    done(len(results) - 1, result)  # type: ignore[arg-type]
        return results

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def average_gradients(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor's ``.grad`` by its mean over ranks (one flat all-reduce)."""
        if not self.active:
            return
        grads = [t.grad for t in tensors if t.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


_GROUP = Group()


def group() -> Group:
    """The current process group (rank 0 of 1 unless started by torchrun)."""
    return _GROUP


def collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def main_process() -> bool:
    """Whether this is the process that prints and writes: rank 0 as the launcher numbered it
    (known before the group is joined), or the only process."""
    return os.environ.get("RANK", "0") == "0"


def quiet_unless_main() -> None:
    """On every rank but 0, standard output goes nowhere for the life of the process."""
    if launched() and not main_process():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115


def launched() -> bool:
    """Whether torchrun (or another launcher that sets its variables) started this process as
    one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str) -> Group:
    """Join the process group torchrun describes (once per process) with the backend for
    ``device``; the group of one without torchrun."""
    global _GROUP
    if not launched():
        return _GROUP
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device != "cpu" and torch.cuda.is_available()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available; use --device cpu")
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
        _GROUP = Group(dist.get_rank(), dist.get_world_size(), local_rank)
    return _GROUP


def device_name(name: str) -> str:
    """The device a rank uses: its own GPU (``cuda:LOCAL_RANK``) when the run uses CUDA."""
    g = group()
    if g.active and dist.get_backend() == "nccl":
        return f"cuda:{torch.cuda.current_device()}"
    return name


def writes_files() -> bool:
    """Only rank 0 writes: the others compute the same state (or their share of it)."""
    return group().main


def stop() -> None:
    """Leave the process group at the end of a command."""
    global _GROUP
    if dist.is_initialized():
        dist.destroy_process_group()
    _GROUP = Group()
