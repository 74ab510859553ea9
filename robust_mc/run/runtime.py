"""Where and how tensors run: the device (chosen once), CPU threads, autocast and memory layout."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import nn

from robust_mc.errors import UserError
from robust_mc.run import distributed
from robust_mc.settings import setting

ModuleT = TypeVar("ModuleT", bound=nn.Module)
# what torch says when a module calls .view() on a tensor the channels-last layout made strided
CHANNELS_LAST_VIEW = "view size is not compatible with input tensor's size and stride"
DEVICE_HELP = "auto (CUDA when there is one), cpu or cuda"


@dataclass(frozen=True)
class SpeedConfig:
    channels_last: bool = setting(True, help="NHWC memory layout",
                                  may_change=True)
    precision: Literal["auto", "float32", "bfloat16"] = setting(
        "auto", help="autocast dtype; auto = bfloat16 where it is faster: a CUDA device that "
                        "supports it, or a CPU with AMX or AVX-512 BF16 where the run's network "
                        "measured faster in it (cached per machine), else float32")
    compile: bool = setting(False, help="torch.compile the network for its training passes",
                            may_change=True)
    threads: int | None = setting(None, lo=1, hi=1024, help="CPU threads (default: all cores)",
                                  may_change=True)
    deterministic: bool = setting(False, help="torch's deterministic algorithms and every seed "
                                              "set (slower on GPU)")
    reuse_memory: bool = setting(
        True, help="keep freed CPU memory for the next tensors (glibc): no page fault per page "
                   "of every large tensor", may_change=True)


def _cannot_take(example: torch.Tensor, exc: RuntimeError) -> UserError:
    shape = "x".join(str(n) for n in example.shape[1:])
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"the network cannot take the data's inputs ({shape}): {reason}; give "
                     "data of the shape it was made for (--dataset), or the architecture that "
                     "takes this data (--arch, --model-kwargs)")


def select_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available; use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"--device {name!r}: use auto, cpu or cuda")


def set_threads(threads: int | None) -> None:
    """Use every core the process may run on unless told otherwise."""
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:
            threads = os.cpu_count() or 1
    torch.set_num_threads(max(1, threads))


# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def reuse_freed_memory() -> bool:
    """Have the C allocator serve tensors below 1 GiB from its heap and keep freed memory for
    the next ones. By default glibc maps fresh pages from the OS for every block over its mmap
    threshold (at most 32 MiB) and unmaps them when freed, so every large activation of every
    batch costs a page fault and a zeroing per 4 KiB page: on a CPU that was up to half the
    wall time of a forward pass. The heap then stays at its high-water mark. Process-wide;
    ``False`` where the C library has no ``mallopt`` (not glibc) or refuses."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def cpu_features() -> dict[str, object]:
    """What torch reports about the CPU's vector units: AMX tiles (bfloat16 matrix units),
    AVX-512 BF16 instructions, and the kernels' capability level."""
    def probe(name: str) -> bool:
        check = getattr(torch.cpu, name, None)  # torch's own probes (private, so guarded)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False

    return {"amx": probe("_is_amx_tile_supported"),
            "avx512_bf16": probe("_is_avx512_bf16_supported"),
            "capability": torch.backends.cpu.get_cpu_capability()}


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain float32.
    ``auto`` takes bfloat16 where it is fast: a CUDA device that supports it, or a CPU with AMX
    tiles (without them bfloat16 measured 0.78-0.94x the float32 speed on AVX2 and AVX-512 CPUs,
    1.7-2.8x with them; ``benchmarks/precision.py``)."""
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":  # precision == "auto"
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return None  # a CPU: float32 until the run's network is measured (Runtime.settle_precision)


def native_bfloat16(device: torch.device) -> bool:
    """A CPU that computes bfloat16 in hardware (AMX tiles or AVX-512 BF16): ``auto`` measures
    there; elsewhere bfloat16 is emulated and never chosen."""
    features = cpu_features()
    return device.type == "cpu" and bool(features["amx"] or features["avx512_bf16"])


def emulated_bfloat16_note(device: torch.device, dtype: torch.dtype | None) -> str | None:
    """One line when bfloat16 was asked for on a CPU that emulates it (neither AMX tiles nor
    AVX-512 BF16): there a PGD step measured 10-13x slower than in float32 (2-core AVX2
    EPYCs; ``benchmarks.train_step``), which ``auto`` would have avoided."""
    if dtype != torch.bfloat16 or device.type != "cpu":
        return None
    features = cpu_features()
    if features["amx"] or features["avx512_bf16"]:
        return None
    return ("note: --precision bfloat16 on this CPU (no AMX tiles, no AVX-512 BF16) is "
            "emulated: a PGD step measured 10-13x slower than in float32; --precision auto "
            "picks float32 here")


def configure_process(speed: SpeedConfig) -> None:
    """The process-wide set-up of a run, done once before it starts (the CLI does it for every
    command): CPU threads (``speed.threads``, else ``OMP_NUM_THREADS`` where a launcher set it,
    else every core the process may use), freed memory kept for reuse, deterministic
    algorithms. Library functions never change these."""
    threads = speed.threads
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    set_threads(threads)
    if speed.reuse_memory:
        reuse_freed_memory()
    if speed.deterministic:
        use_deterministic_algorithms()


@contextlib.contextmanager
def process_scope() -> Iterator[None]:
    """The process-wide torch settings that :func:`configure_process` may change (threads,
    deterministic algorithms, cuDNN autotuning), restored when the block ends: the CLI runs
    each command inside one, so a command run in-process leaves its caller as it found it.
    (Memory reuse stays: it only keeps freed memory for later.)"""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global generators (CPU and CUDA) seeded with ``seed``, and
    restore them afterwards: what draws from them inside (weight initialisation, a user
    module's dropout) is reproducible, and the caller's streams are left as they were."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def use_deterministic_algorithms() -> None:
    """torch's deterministic kernels everywhere (cuBLAS needs its workspace fixed before its first
    use); an operation without one raises instead of silently varying."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


class Runtime:
    """The device, autocast dtype and layout that one run uses everywhere."""

    def __init__(self, device: torch.device, speed: SpeedConfig | None = None) -> None:
        speed = speed or SpeedConfig()
        self.device = device
        self.speed = speed
        self.dtype = autocast_dtype(device, speed.precision)
        self.channels_last = speed.channels_last
        self.layout_reason = ""  # why channels-last was given up for the run's network
        self.auto_reason = ("the GPU supports bfloat16" if device.type == "cuda" else
                            "not measured: the CPU emulates bfloat16"
                            if not native_bfloat16(device) else "not measured yet")

    def settle(self, model: ModuleT, example: torch.Tensor) -> ModuleT:
        """Prepare the run's first network (:meth:`prepare`) once what depends on it is decided:
        the layout (channels-last unless the network cannot run in it: a ``.view()`` of a
        tensor that layout strides; then the contiguous layout, said in :meth:`summary`), then
        the precision (:meth:`settle_precision`). The run's other networks are prepared after
        it. A network that cannot take ``example`` (images of another size or channel count)
        is a :class:`UserError` here, before any work."""
        layouts = [torch.contiguous_format]
        if self.channels_last and example.dim() == 4:
            layouts.insert(0, torch.channels_last)
        for layout in layouts:
            try:
                self._probe(model, example, layout)
                break
            except RuntimeError as exc:
                if layout != torch.channels_last or CHANNELS_LAST_VIEW not in str(exc):
                    raise _cannot_take(example, exc) from None
                self.channels_last = False
                self.layout_reason = ("the network reshapes with .view(), which channels-last "
                                      "does not allow")
        self.prepare(model)
        self.settle_precision(model, example)
        return model

    def _probe(self, model: nn.Module, example: torch.Tensor,
               layout: torch.memory_format) -> None:
        """One eval-mode forward of a copy of ``model`` in ``layout``."""
        probe = copy.deepcopy(model).to(self.device).to(memory_format=layout)
        with torch.no_grad():
            probe.eval()(example.to(self.device).contiguous(memory_format=layout))

    def settle_precision(self, model: nn.Module, example: torch.Tensor) -> None:
        """With ``--precision auto`` on a CPU that computes bfloat16 natively, measure ``model``
        on inputs shaped like ``example`` and take the faster precision (see
        :mod:`robust_mc.run.precision`); anywhere else nothing changes. Under torchrun every
        process takes float32 unless all measured bfloat16 faster."""
        if self.speed.precision != "auto" or not native_bfloat16(self.device):
            return
        from robust_mc.run.precision import calibrated_choice

        choice = calibrated_choice(model, self.images(example.to(self.device)))
        faster = all(distributed.group().gather(choice.dtype is not None))
        self.dtype = torch.bfloat16 if faster else None
        self.auto_reason = choice.why if faster == (choice.dtype is not None) else \
            "another process measured float32 faster"

    @classmethod
    def for_device(cls, device: str, speed: SpeedConfig | None = None,
                   compiles: bool = False) -> Runtime:
        """The runtime on the device named ``device`` (``auto``, ``cpu``, ``cuda``). Nothing
        process-wide happens here: that is :func:`configure_process`. ``compiles``: the
        command compiles what it trains; elsewhere ``speed.compile`` would be ignored, so it is
        refused."""
        speed = speed or SpeedConfig()
        if speed.compile and not compiles:
            raise UserError("speed.compile: only train compiles its network (the other commands "
                            "would ignore it); remove it from the configuration")
        return cls(select_device(device), speed)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        return autocast(self.device, self.dtype)

    def prepare(self, model: ModuleT) -> ModuleT:
        """Move ``model`` to the device in the chosen memory layout (in place)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """A batch (B, C, H, W) in the layout the model expects."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def summary(self) -> str:
        """One line for the terminal: where, in what precision (and why, for ``auto``)."""
        precision = str(self.dtype or torch.float32).removeprefix("torch.")
        if self.speed.precision == "auto":
            precision = f"{precision} (auto: {self.auto_reason})"
        layout = ", channels-last" if self.channels_last else \
            f", contiguous layout ({self.layout_reason})" if self.layout_reason else ""
        return f"{self.device}, {precision}{layout}, {torch.get_num_threads()} threads"

    def describe(self) -> dict:
        hardware = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" \
            else cpu_features()
        return {"device": str(self.device), "hardware": hardware,
                "precision": str(self.dtype or torch.float32),
                "channels_last": self.channels_last, "compile": self.speed.compile,
                "threads": torch.get_num_threads(), "reuse_memory": self.speed.reuse_memory}


def start_runtime(device: str, speed: SpeedConfig | None = None, compiles: bool = False
                  ) -> Runtime:
    """The one place a run sets up its process (:func:`configure_process`) and picks its device
    (:meth:`Runtime.for_device`): every command calls it once its configuration is resolved,
    and the benchmarks do as the commands do."""
    speed = speed or SpeedConfig()
    distributed.start(device)  # joins torchrun's process group, if it started this process
    runtime = Runtime.for_device(distributed.device_name(device), speed, compiles)
    configure_process(speed)
    note = emulated_bfloat16_note(runtime.device, runtime.dtype)
    if note is not None and distributed.main_process():
        print(f"robust-mc: {note}", file=sys.stderr)
    return runtime
