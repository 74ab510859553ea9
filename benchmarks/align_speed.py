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
Reference point: about 9.5 s and 3.4 GiB to match two tinytens on 5,000 images on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from benchmarks.common import print_table
from benchmarks.data import benchmark_data
from robust_mc.config import AlignConfig
from robust_mc.core.align import Alignment, align
from robust_mc.core.fold import fold_batchnorm
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.rotatable import MapClass
from robust_mc.core.unit_statistics import TOKENS
from robust_mc.data import DatasetInfo, Split, batches
from robust_mc.models import create_model
from robust_mc.run.runtime import Runtime, start_runtime

# a timm model sized for 32x32 images (its patch embedding and position embedding)
TIMM_CIFAR = {"img_size": 32, "patch_size": 4}


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(arch: str, subset: Split, info: DatasetInfo, batch: int, repeats: int,
            runtime: Runtime) -> list[str]:
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(runtime.prepare(create_model(
            arch, num_classes=10, in_channels=3, mean=info.mean, std=info.std,
            kwargs=dict(TIMM_CIFAR) if arch.startswith("timm:") else None)).eval())
    folded = [fold_batchnorm(m) for m in models]
    spec = trace_permutation_spec(models[0], subset.images[:2].float())

    def forward(nets: list[torch.nn.Module]) -> None:
        with torch.no_grad():
            for x, _ in batches(subset, batch):
                for net in nets:
                    net(runtime.images(x))

    results: list[Alignment] = []

    def run_align(maps: MapClass = "permutations", tokens: int = TOKENS) -> None:
        results.append(align(models[0], models[1], batches(subset, batch), spec=spec,
                             runtime=runtime, maps=maps, tokens=tokens))

    forward(models)  # warm-up
    before = rss_gib()
    runs = {"plain": lambda: forward(models), "folded": lambda: forward(folded),
            "align": run_align, "orthogonal": lambda: run_align("orthogonal"),
            "every token": lambda: run_align(tokens=0)}
    times: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):  # interleaved, so that drifts in machine speed hit all alike
        for key, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    plain, floor, align_s, orthogonal_s, every_s = (statistics.median(times[k]) for k in runs)
    outside = max(align_s - floor, 0.0) / align_s
    rotated = sum(s.angle is not None for s in results[-2].spaces)
    print(f"  {arch}: align {align_s:.2f} s, forward floor {floor:.2f} s, with rotations "
          f"{orthogonal_s:.2f} s", flush=True)
    return [arch, str(len(subset)), f"{plain:.2f}", f"{floor:.2f}", f"{align_s:.2f}",
            f"{100 * outside:.1f}%", f"{every_s:.2f}",
            f"{results[-3].seconds['assignment']:.3f}", f"{orthogonal_s:.2f} ({rotated} rotated)",
            f"{rss_gib():.2f} (+{rss_gib() - before:.2f})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None, help="imagefolder:PATH (default random tensors)")
    parser.add_argument("--archs", nargs="+", default=["tinyten", "resnet20"])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=AlignConfig.batch_size)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs; medians shown")
    args = parser.parse_args()
    data = benchmark_data(args.data, args.samples, 100)
    runtime = start_runtime("cpu")  # as the CLI runs: every core, freed memory reused
    subset = data.train.take(args.samples)
    rows = [measure(arch, subset, data.info, args.batch, args.repeats, runtime)
            for arch in args.archs]
    print_table(f"correlation alignment on {data.info.name}, batch {args.batch}, "
                f"{torch.get_num_threads()} threads, medians of {args.repeats}",
                ["arch", "images", "2 fwd passes s", "2 fwd BN folded s", "align s",
                 "outside fwd", "align every token s", "assignment s", "align orthogonal s",
                 "peak RSS GiB"], rows)


if __name__ == "__main__":
    main()
