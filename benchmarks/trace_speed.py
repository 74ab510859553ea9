"""Seconds to trace a permutation spec, from a CIFAR CNN to an ImageNet ViT-B/16.

    python -m benchmarks.trace_speed [--repeats 3]

Each network is built with random weights and traced on two random images (224x224 for the
ImageNet-sized ones); the median of ``--repeats`` traces is shown with the spec's size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision.models as tvm

from benchmarks.common import print_table
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.models import create_model


def zoo(arch: str):
    return lambda: create_model(arch, num_classes=10, in_channels=3, mean=(0.5,) * 3,
                                std=(0.25,) * 3, image_size=32)


NETWORKS = {
    "tinyten": (zoo("tinyten"), 32),
    "resnet20": (zoo("resnet20"), 32),
    "wrn28_10": (zoo("wrn28_10"), 32),
    "vit_cifar": (zoo("vit_cifar"), 32),
    "torchvision vit_b_16": (lambda: tvm.vit_b_16(), 224),
    "torchvision swin_t": (lambda: tvm.swin_t(), 224),
    "torchvision convnext_tiny": (lambda: tvm.convnext_tiny(), 224),
    "torchvision resnext50_32x4d": (lambda: tvm.resnext50_32x4d(), 224),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS))
    args = parser.parse_args()
    rows = []
    for name in args.networks:
        build, side = NETWORKS[name]
        model = build().eval()
        x = torch.rand(2, 3, side, side)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            spec = trace_permutation_spec(model, x)
            times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in model.parameters())
        rows.append([name, f"{params / 1e6:.1f}M", str(len(spec)),
                     str(sum(s.blocks is not None for s in spec)),
                     f"{statistics.median(times):.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    print_table(f"tracing a permutation spec, {torch.get_num_threads()} threads, "
                f"medians of {args.repeats}",
                ["network", "params", "spaces", "grouped spaces", "seconds"], rows)


if __name__ == "__main__":
    main()
