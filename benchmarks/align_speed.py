"""Wall time and memory of correlation alignment, and the share spent outside the forward passes.

    python -m benchmarks.align_speed --data imagefolder:/path/to/cifar10 --samples 5000

For each architecture: two plain forward passes of both models over the alignment images
(the floor), then `align` (one pass of each model with statistics), side by side.
Reference point: about 9.5 s and 3.4 GiB to match two tinytens on 5,000 images on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from benchmarks.common import print_table
from benchmarks.data import benchmark_data
from robust_mc.align import align
from robust_mc.data import batches
from robust_mc.models import create_model
from robust_mc.permutation import trace_permutation_spec
from robust_mc.runtime import Runtime, set_threads


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None, help="imagefolder:PATH (default random tensors)")
    parser.add_argument("--archs", nargs="+", default=["tinyten", "resnet20"])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    set_threads(None)
    data = benchmark_data(args.data, args.samples, 100)
    runtime = Runtime(torch.device("cpu"))
    subset = data.train.take(args.samples)
    rows = []
    for arch in args.archs:
        models = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            models.append(runtime.prepare(create_model(
                arch, num_classes=10, in_channels=3, mean=data.info.mean, std=data.info.std)
            ).eval())
        spec = trace_permutation_spec(models[0], subset.images[:2].float())
        with torch.no_grad():  # warm-up, then the floor: plain forward passes of both models
            models[0](runtime.images(subset.images[:64].float() / 255))
            start = time.perf_counter()
            for x, _ in batches(subset, args.batch):
                for m in models:
                    m(runtime.images(x))
            forward_s = time.perf_counter() - start
        before = rss_gib()
        start = time.perf_counter()
        result = align(models[0], models[1], batches(subset, args.batch), spec=spec,
                       runtime=runtime)
        align_s = time.perf_counter() - start
        outside = max(align_s - forward_s, 0.0) / align_s
        rows.append([arch, str(len(subset)), f"{forward_s:.2f}", f"{align_s:.2f}",
                     f"{100 * outside:.1f}%", f"{result.seconds['assignment']:.3f}",
                     f"{rss_gib():.2f} (+{rss_gib() - before:.2f})"])
        print(f"  {arch}: align {align_s:.2f} s, forward floor {forward_s:.2f} s", flush=True)
    print_table(f"correlation alignment on {data.info.name}, {torch.get_num_threads()} threads",
                ["arch", "images", "2 fwd passes s", "align s", "outside fwd",
                 "assignment s", "peak RSS GiB"], rows)


if __name__ == "__main__":
    main()
