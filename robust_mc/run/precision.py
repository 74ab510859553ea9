"""``--precision auto`` on a CPU that computes bfloat16 natively: decided by measuring the run's
own network, once per machine.

Whether bfloat16 autocast is faster depends on the network as much as on the CPU: on a 2-core
AMD EPYC with AVX-512 BF16 (no AMX) a PGD step of TinyTen runs 1.6-1.8x faster in bfloat16, one
of the zoo's ViT 2x slower (its attention's small matrix products and softmax gain nothing and
pay the casts). So where the CPU has AMX tiles or AVX-512 BF16, ``auto`` times a training pass
(forward and backward, as a PGD step makes them) of the network at hand in both precisions,
interleaved, and takes bfloat16 when it is at least ``MARGIN`` faster. The choice is cached per
CPU, torch version, thread count, network shape and input shape (``~/.cache/robust-mc``), so a
run pays the measurement (about a second) once. A CPU without either unit emulates bfloat16 (a
PGD step measured 11x slower) and is never measured; CUDA takes bfloat16 where the device
supports it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robust_mc.run.files import atomic_write_json, cache_dir

MARGIN = 1.2  # bfloat16 must be this much faster: below it, float32's exact figures win
REPEATS = 3  # timed passes per precision, after one warm-up each
BATCH = 32  # images per timed pass: a training batch's shape, at a fraction of its cost


@dataclass(frozen=True)
class Choice:
    """The precision ``auto`` settled on, and why (shown in the run's first line)."""

    dtype: torch.dtype | None  # None: plain float32
    why: str


def cache_file() -> Path:
    return cache_dir() / "precision.json"


def cache_key(model: nn.Module, example: torch.Tensor) -> str:
    """What the choice depends on: the CPU, torch, the threads, the network's layers and
    parameter shapes, and the input's shape."""
    layers = [(type(m).__name__, [tuple(p.shape) for p in m.parameters(recurse=False)])
              for m in model.modules()]
    described = json.dumps([platform.processor() or platform.machine(), _cpu_name(),
                            torch.__version__, torch.get_num_threads(), layers,
                            list(example.shape[1:])], default=str)
    return hashlib.sha256(described.encode()).hexdigest()[:24]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def measured_choice(model: nn.Module, example: torch.Tensor,
                    timer: Callable[[], float] = time.perf_counter) -> Choice:
    """Time a training pass of ``model`` on a batch shaped like ``example`` in float32 and in
    bfloat16 autocast (interleaved, after a warm-up each) and choose; the model's parameters,
    gradients and mode are left as they were."""
    x = example[:1].expand(BATCH, *example.shape[1:]).clone()
    was_training = model.training
    grads = {p: p.grad for p in model.parameters()}
    seconds: dict[torch.dtype, list[float]] = {torch.float32: [], torch.bfloat16: []}
    model.eval()  # batch norm's running statistics are left alone
    try:
        for repeat in range(REPEATS + 1):
            for dtype in (torch.float32, torch.bfloat16):
                start = timer()
                with torch.autocast("cpu", dtype=torch.bfloat16,
                                    enabled=dtype == torch.bfloat16):
                    model(x).float().sum().backward()
                elapsed = timer() - start
                if repeat:  # the first pass of each warms caches and kernels
                    seconds[dtype].append(elapsed)
    finally:
        for p, grad in grads.items():
            p.grad = grad
        model.train(was_training)
    fp32, bf16 = (min(seconds[d]) for d in (torch.float32, torch.bfloat16))
    speedup = fp32 / bf16 if bf16 > 0 else 0.0
    if speedup >= MARGIN:
        return Choice(torch.bfloat16, f"measured {speedup:.2f}x faster than float32 here")
    return Choice(None, f"bfloat16 measured {speedup:.2f}x float32's speed here")


def calibrated_choice(model: nn.Module, example: torch.Tensor) -> Choice:
    """The cached choice for this network on this machine, or a new measurement (cached)."""
    path = cache_file()
    key = cache_key(model, example)
    try:
        cached = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        cached = None
    if isinstance(cached, dict) and cached.get("dtype") in ("bfloat16", "float32") \
            and isinstance(cached.get("why"), str):
        dtype = torch.bfloat16 if cached["dtype"] == "bfloat16" else None
        return Choice(dtype, f"{cached['why']} (cached)")
    choice = measured_choice(model, example)
    _store(path, key, choice)
    return choice


def _store(path: Path, key: str, choice: Choice) -> None:
    """Add the choice to the cache file; a cache that cannot be written is no error."""
    try:
        table = json.loads(path.read_text()) if path.is_file() else {}
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    table[key] = {"dtype": "bfloat16" if choice.dtype else "float32", "why": choice.why}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, table)
    except OSError:
        pass
