"""The tracer on every architecture family timm offers (``python -m benchmarks.trace_sweep
--timm``): for each of timm's model modules, its smallest variant that builds offline (random
weights) within the memory bound, every parameter and buffer perturbed, in float64; traced,
permuted at random and compared.

One row per family: ``exact`` (every weight moved by some permutation, if only with its whole
head, and the logits unchanged to 1e-10 relative), ``partial`` (spaces holding 0.1% of the
weights or more left as they are: the share and why),
``refused`` (the tracer's one line), ``WRONG`` (a permuted copy computes another function: a bug
to fix), or why it was not tried (does not build offline, too large, over the time limit). With
``--out`` the rows are kept in ``timm_sweep.json`` and a family already there is not tried again.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from benchmarks.common import permutation_error, print_table, traced

MAX_PARAMS = 2**31 / 16  # the float64 network and its permuted copy within 2 GiB
CLASSES = 10  # a classifier's head, as robust-mc trains one: a variant timm builds as a feature
# extractor by default (EVA-02's pretraining weights) would otherwise return its residual
# stream, which as the output cannot move
META_NUMEL = 1 << 12  # a tensor this large is a weight: counted, never made
EXACT = 1e-10  # relative logit change of a float64 permuted copy
LEFT = 1e-3  # a share of weights no space moves beyond the logits' bias: partial


class TimedOut(Exception):
    pass


class LargeOnMeta(TorchFunctionMode):
    """Tensor constructors make large tensors (the weights) on the meta device, taking neither
    memory nor time, and small ones (a drop-path schedule, an index table that an ``__init__``
    reads back with ``item``) as usual."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None:
            probe = func(*args, **{**kwargs, "device": "meta"})
            if probe.numel() >= META_NUMEL:
                return probe
        return func(*args, **kwargs)


def parameter_count(timm: Any, name: str) -> int | None:
    """The variant's parameter count with a 10-class head: its weights built on the meta
    device, or, where its ``__init__`` computes with them (a hybrid's backbone probed with an
    image), built as usual; None where it does not build offline."""
    for counting in (LargeOnMeta, contextlib.nullcontext):
        try:
            with counting():
                model = timm.create_model(name, pretrained=False, num_classes=CLASSES)
            return sum(p.numel() for p in model.parameters())
        except Exception:  # noqa: BLE001 - an extra missing, a download needed
            continue
    return None


def smallest(timm: Any, family: str) -> tuple[str, torch.nn.Module] | str:
    """The family's variant with the fewest parameters that builds offline, or why none was
    tried (timm's own ``test_`` configurations are left out: shrunk to a head or a block, they
    would not show the family as people use it)."""
    names = [n for n in timm.list_models(module=family) if not n.startswith("test_")]
    counted = {n: c for n in names if (c := parameter_count(timm, n)) is not None}
    if not counted:
        return "no variant builds offline" if names else "no variants"
    failure = ""
    for name in sorted(counted, key=lambda n: (counted[n], n)):
        if counted[name] > MAX_PARAMS:
            return failure or f"too large ({counted[name] / 1e6:.0f}M parameters at the smallest)"
        try:
            return name, timm.create_model(name, pretrained=False, num_classes=CLASSES)
        except Exception as exc:  # noqa: BLE001 - a download needed
            failure = f"does not build offline ({type(exc).__name__}: {str(exc)[:80]})"
    return failure


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """float64, every floating parameter and buffer moved off its value (unit gains and zero
    shifts would hide a wrongly moved tensor); variances kept positive."""
    generator = torch.Generator().manual_seed(0)
    model = model.double().eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            if "running_var" in name:
                tensor.copy_(noise.abs() + 0.5)
            else:  # a zero-initialised tensor (a classifier head) gets noise of its own
                spread = tensor.std() if tensor.numel() > 1 else tensor.new_zeros(())
                tensor.add_(0.1 * noise * (spread if spread > 0 else 1.0))
    return model


def check(model: torch.nn.Module, size: tuple[int, ...]) -> tuple[str, str]:
    """(result, detail) for one network on two random images of ``size``: in float64, or in
    float32 (said in the detail, and compared at 1e-5) where the model's own code cannot run
    in float64 (buffers it makes in the default dtype)."""
    x, exact, precision = torch.rand(2, *size, dtype=torch.float64), EXACT, ""
    try:
        with torch.no_grad():
            logits = model(x)
    except RuntimeError:
        model, x, exact, precision = model.float(), x.float(), 1e-5, "float32; "
        with torch.no_grad():
            logits = model(x)
    if not logits.any():
        return "error", f"{precision}the network's outputs are all zero: nothing compared"
    result = traced(model, x)
    if isinstance(result, str):
        return "refused", result[:200]
    spec, seconds = result
    try:
        error = permutation_error(model, spec, x)
    except Exception as exc:  # noqa: BLE001 - a traced spec that cannot be applied is a bug
        return "WRONG", f"applying the spec fails: {type(exc).__name__}: {str(exc)[:120]}"
    if not math.isfinite(error):  # outputs that overflow compare as nothing
        return "error", f"{precision}the network's outputs are not finite: nothing compared"
    if error > exact:
        return "WRONG", f"{precision}permuted copy differs by {error:.1e} (relative)"
    fixed = 1 - spec.moved_share(model)
    detail = f"{precision}{len(spec)} spaces, traced in {seconds:.1f} s, error {error:.0e}"
    reasons = "; ".join(spec.fixed)[:200]
    if spec.fixed and fixed >= LEFT:
        return "partial", f"{detail}; {100 * fixed:.1f}% of weights fixed: {reasons}"
    return "exact", f"{detail}; every weight moves{' (' + reasons + ')' if reasons else ''}"


def _alarm(signum: int, frame: Any) -> None:
    raise TimedOut


def sweep(families: list[str] | None, timeout: float, out: str | None) -> list[list[str]]:
    import timm

    def pick(family: str) -> tuple[str, torch.nn.Module, tuple[int, ...]] | str:
        picked = smallest(timm, family)
        if isinstance(picked, str):
            return picked
        name, model = picked
        return name, model, tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))

    return sweep_families("timm architecture families and the tracer",
                          families or timm.list_modules(), pick, timeout,
                          Path(out) / "timm_sweep.json" if out else None)


Pick = Callable[[str], "tuple[str, torch.nn.Module, tuple[int, ...]] | str"]


def sweep_families(title: str, families: list[str], pick: Pick, timeout: float,
                   path: Path | None) -> list[list[str]]:
    """One row per family: ``pick`` builds its network (variant, model, input size) or says why
    not; the network is checked by :func:`check`. Rows already in ``path`` are kept."""
    warnings.filterwarnings("ignore")
    done: dict[str, list[str]] = {}
    if path is not None and path.is_file():
        done = {row[0]: row for row in json.loads(path.read_text())["rows"]}
    start = time.perf_counter()
    for family in families:
        if family in done:
            continue
        began = time.perf_counter()
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(int(timeout))
        try:
            picked = pick(family)
            if isinstance(picked, str):
                row = [family, "-", "-", "not tried", picked]
            else:
                name, model, size = picked
                params = sum(p.numel() for p in model.parameters())
                result, detail = check(perturbed(model), size)
                row = [family, name, f"{params / 1e6:.1f}M", result, detail]
        except TimedOut:
            row = [family, "-", "-", "not tried", f"over {timeout:.0f} s"]
        except Exception as exc:  # noqa: BLE001 - a failure of the model's own code
            row = [family, "-", "-", "error", f"{type(exc).__name__}: {str(exc)[:160]}"]
        finally:
            signal.alarm(0)
        row.append(f"{time.perf_counter() - began:.0f} s")
        done[family] = row
        print(" | ".join(row), flush=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"rows": list(done.values())}, indent=1))
    rows = [done[f] for f in sorted(done)]
    counts = {r: sum(row[3] == r for row in rows)
              for r in ("exact", "partial", "refused", "WRONG", "error", "not tried")}
    print_table(title, ["family", "variant", "params", "result", "detail", "time"], rows)
    tried = len(rows) - counts["not tried"]
    print(f"\n{len(rows)} families, {tried} tried: " + ", ".join(
        f"{n} {r}" for r, n in counts.items()) + f"; {time.perf_counter() - start:.0f} s")
    return rows
