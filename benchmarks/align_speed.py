"""Wall time and memory of correlation alignment, and the share spent outside the forward passes.

    python -m benchmarks.align_speed --data imagefolder:/path/to/cifar10 --samples 5000
    python -m benchmarks.align_speed --archs vit_cifar timm:vit_tiny_patch16_224 ...

For each architecture, interleaved: plain forward passes of both models over the alignment
images, the same with batch norm folded into the convolutions (what `align` runs: the floor),
`align` itself (one folded pass of each model with the statistics), `align` with the
orthogonal map class (its exactness checks and the rotations' statistics) and `align` with every
token of a transformer in the statistics (``tokens=0``; by default at most 8 per image where the
images give 40,000 samples); the share outside the forward passes is measured against the floor.
Statistics are accumulated batch by batch: peak memory grows with the batch, not with the number
of images. timm models are built for 32x32 images (patch 4).

``--reference DIR`` (a NeuronAlignment checkout: ``fetch github:IBM/NeuronAlignment``) also times
the reference implementation's own alignment of the same two tinytens on the same images, in
the same rounds (:mod:`benchmarks.reference_align`), and prints robust-mc's time as a fraction
of it. For the side-by-side figure on one core, as the docs state it::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c 1 \
        python -m benchmarks.align_speed --archs tinyten --data imagefolder:DATA --threads 1 \
        --reference /path/to/NeuronAlignment

``--precision`` is the run's (``auto`` by default, as the commands): the statistics pass runs in
it; the forward floor is measured in float32 and in the run's precision.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import reference_align
from benchmarks.common import print_table
from benchmarks.data import benchmark_data
from robust_mc.config import AlignConfig, SpeedConfig
from robust_mc.core.align import Alignment, align
from robust_mc.core.fold import fold_batchnorm
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.rotatable import MapClass
from robust_mc.core.unit_statistics import TOKENS
from robust_mc.data import DatasetInfo, Split, as_float, batches
from robust_mc.models import create_model
from robust_mc.run.runtime import Runtime, cpu_features, start_runtime

# a timm model sized for 32x32 images (its patch embedding and position embedding)
TIMM_CIFAR = {"img_size": 32, "patch_size": 4}


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(arch: str, subset: Split, info: DatasetInfo, batch: int, repeats: int,
            runtime: Runtime, reference: types.SimpleNamespace | None) -> list[str]:
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(runtime.prepare(create_model(
            arch, num_classes=10, in_channels=3, mean=info.mean, std=info.std,
            kwargs=dict(TIMM_CIFAR) if arch.startswith("timm:") else None)).eval())
    runtime.settle_precision(models[0], as_float(subset.images[:1]))
    folded = [fold_batchnorm(m) for m in models]
    spec = trace_permutation_spec(models[0], subset.images[:2].float())

    def forward(nets: list[torch.nn.Module], autocast: bool = False) -> None:
        with torch.no_grad(), runtime.autocast() if autocast else contextlib.nullcontext():
            for x, _ in batches(subset, batch):
                for net in nets:
                    net(runtime.images(x))

    results: list[Alignment] = []

    def run_align(maps: MapClass = "permutations", tokens: int = TOKENS) -> None:
        results.append(align(models[0], models[1], batches(subset, batch), spec=spec,
                             runtime=runtime, maps=maps, tokens=tokens))

    runs: dict[str, Callable[[], None]] = {
        "plain": lambda: forward(models), "folded": lambda: forward(folded),
        "folded, run's precision": lambda: forward(folded, autocast=True),
        "align": run_align, "orthogonal": lambda: run_align("orthogonal"),
        "every token": lambda: run_align(tokens=0)}
    if reference is not None and arch == "tinyten":  # equal work: the reference has TinyTen
        theirs = [reference_align.reference_model(reference, m) for m in models]
        runs["reference"] = lambda: reference_align.align(reference, *theirs, subset.images,
                                                          subset.labels)
    forward(models)  # warm-up
    times: dict[str, list[float]] = {key: [] for key in runs}
    added: dict[str, float] = {}  # peak RSS each variant added the first time it ran
    for _ in range(repeats):  # interleaved, so that drifts in machine speed hit all alike
        for key, fn in runs.items():
            before = rss_gib()
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
            added.setdefault(key, rss_gib() - before)
    median = {key: statistics.median(t) for key, t in times.items()}
    floor = median["folded, run's precision"]
    outside = max(median["align"] - floor, 0.0) / median["align"]
    rotated = sum(s.angle is not None for s in results[-2].spaces)
    ref = median.get("reference")
    print(f"  {arch}: align {median['align']:.2f} s, forward floor {floor:.2f} s, with "
          f"rotations {median['orthogonal']:.2f} s"
          + (f", reference {ref:.2f} s" if ref is not None else ""), flush=True)
    precision = str(runtime.dtype or torch.float32).removeprefix("torch.")
    return [arch, precision, str(len(subset)), f"{median['plain']:.2f}",
            f"{median['folded']:.2f}", f"{floor:.2f}", f"{median['align']:.2f}",
            f"{100 * outside:.1f}%", f"{median['every token']:.2f}",
            f"{results[-3].seconds['assignment']:.3f}",
            f"{median['orthogonal']:.2f} ({rotated} rotated)",
            f"+{added['align']:.2f}",
            "-" if ref is None else f"{ref:.2f} (+{added['reference']:.2f} GiB)",
            "-" if ref is None else f"{median['align'] / ref:.2f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None, help="imagefolder:PATH (default random tensors)")
    parser.add_argument("--archs", nargs="+", default=["tinyten", "resnet20"])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=AlignConfig.batch_size)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs; medians shown")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a NeuronAlignment checkout: its alignment of the tinytens beside")
    args = parser.parse_args()
    reference = reference_align.load(args.reference) if args.reference else None
    data = benchmark_data(args.data, args.samples, 100)
    # as the CLI runs: freed memory reused, the precision settled per network
    runtime = start_runtime("cpu", SpeedConfig(precision=args.precision, threads=args.threads))
    subset = data.train.take(args.samples)
    rows = [measure(arch, subset, data.info, args.batch, args.repeats, runtime, reference)
            for arch in args.archs]
    print_table(f"correlation alignment on {data.info.name}, batch {args.batch}, "
                f"{torch.get_num_threads()} threads, medians of {args.repeats}, CPU features "
                f"{cpu_features()}",
                ["arch", "precision", "images", "2 fwd s", "2 fwd folded s",
                 "floor: 2 fwd folded, run's precision s", "align s", "outside floor",
                 "align every token s", "assignment s", "align orthogonal s",
                 "align peak RSS added GiB", "reference s", "align / reference"], rows)


if __name__ == "__main__":
    main()
