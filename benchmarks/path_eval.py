"""Seconds per evaluated t of a path against the reference's procedure at equal work, side by side.

    python -m benchmarks.path_eval --bn-data adversarial [--data imagefolder:/path/to/cifar10]
    python -m benchmarks.path_eval --repair repair --repair-inputs adversarial  # repair's cost

Per t, both sides do the same work: BN statistics from ``--bn-images`` training images
(``adversarial``: PGD-5 examples of them, the reference's procedure; ``clean``: the images
themselves, robust-mc's default), then ``--test-images`` test images clean and under PGD-5.
The reference figure is measured here, in the same process on the same machine, by
``benchmarks/reference_path_eval.py``: the reference implementation's per-t procedure
(NeuronAlignment's curve evaluation) re-expressed on in-memory tensors, TinyTen. robust-mc is
timed per ``--precision``: ``bfloat16`` generates the attacks in bfloat16 and scores in float32.
Prints the split (BN, repair, clean, attack) and each figure's ratio to the reference's;
``--repair repair`` adds robust-mc's statistics repair at each interior t (the reference has
none, so its column is what repair costs on top).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch

from benchmarks import reference_path_eval as reference
from benchmarks.common import print_table
from benchmarks.data import benchmark_data
from robust_mc.config import AttackConfig, PathConfig, SpeedConfig
from robust_mc.core.curves import Curve
from robust_mc.data import Data, as_float
from robust_mc.evaluation.path import evaluate_path
from robust_mc.models import create_model
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import cpu_features, start_runtime

KEYS = ("total", "bn", "repair", "clean", "attack")


def reference_seconds(data: Data, ts: list[float], bn_data: str, bn_images: int
                      ) -> dict[str, float]:
    torch.manual_seed(0)
    model = reference.CurveTinyTen(data.info.num_classes)
    bn = data.train.take(bn_images)
    bn_x, bn_y = as_float(bn.images), bn.labels
    test_x, test_y = as_float(data.test.images), data.test.labels
    adversarial = bn_data == "adversarial"
    warm = slice(0, reference.BATCH)  # one batch each, untimed: first-call set-up costs
    reference.seconds_per_t(model, 0.5, bn_x[warm], bn_y[warm], test_x[warm], test_y[warm],
                            adversarial_bn=adversarial)
    runs = [reference.seconds_per_t(model, t, bn_x, bn_y, test_x, test_y,
                                    adversarial_bn=adversarial) for t in ts]
    return {k: statistics.mean(r.get(k, 0.0) for r in runs) for k in KEYS}


def robust_mc_seconds(data: Data, points: int, bn_data: str, bn_images: int, test_images: int,
                      precision: str, device: str, repair: str = "reset",
                      repair_inputs: str = "clean") -> tuple[dict[str, float], str]:
    """Seconds per t (mean over the points) and the precision the run took."""
    runtime = start_runtime(device, SpeedConfig(precision=precision))
    on_device = data.to(runtime.device)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(create_model("tinyten", num_classes=10, in_channels=3,
                                   mean=data.info.mean, std=data.info.std))
    runtime.settle(models[0], as_float(data.train.images[:1]))  # as the commands: auto measured
    runtime.prepare(models[1])
    curve = Curve.between("line", models[0], models[0].state_dict(), models[1].state_dict()
                          ).to(runtime.device)
    path = PathConfig(points=points, bn_images=bn_images, attack="pgd:steps=5", val_limit=1,
                      test_limit=test_images, bn_data=bn_data, repair=repair,  # type: ignore[arg-type]
                      repair_inputs=repair_inputs)  # type: ignore[arg-type]
    attack = AttackConfig(eps=8 / 255, steps=5)
    warm = replace(path, points=2, bn_images=250, test_limit=250)  # untimed: set-up costs
    evaluate_path(curve, models[0], on_device, warm, attack, runtime, Reporter(quiet=True),
                  "warm-up", keep_best=False, endpoint_b=models[1])
    results, _ = evaluate_path(curve, models[0], on_device, path, attack, runtime,
                               Reporter(quiet=True), "bench", keep_best=False,
                               endpoint_b=models[1])
    return ({k: statistics.mean(p.seconds.get(k, 0.0) for p in results) for k in KEYS},
            str(runtime.dtype or torch.float32).removeprefix("torch."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="imagefolder:PATH (default: random images)")
    parser.add_argument("--points", type=int, default=3)
    parser.add_argument("--bn-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--bn-data", default="adversarial", choices=["clean", "adversarial"])
    parser.add_argument("--repair", default="reset", choices=["off", "reset", "repair"])
    parser.add_argument("--repair-inputs", default="clean", choices=["clean", "adversarial"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    data = benchmark_data(args.data, args.bn_images, args.test_images)
    ts = torch.linspace(0, 1, args.points).tolist()
    rows = []
    ref = reference_seconds(data, ts, args.bn_data, args.bn_images)
    rows.append(["reference (fp32, NCHW)", *(f"{ref[k]:.2f}" for k in KEYS), "1.00x"])
    print(f"  reference: {ref['total']:.2f} s per t", flush=True)
    for precision in args.precisions:
        ours, dtype = robust_mc_seconds(data, args.points, args.bn_data, args.bn_images,
                                 args.test_images, precision, args.device, args.repair,
                                 args.repair_inputs)
        rows.append([f"robust-mc {precision}" + (f" ({dtype})" if precision == "auto"
                                                  else ""), *(f"{ours[k]:.2f}" for k in KEYS),
                     f"{ours['total'] / ref['total']:.2f}x"])
        print(f"  robust-mc {precision}: {ours['total']:.2f} s per t", flush=True)
    features = cpu_features()
    print_table(f"tinyten, seconds per t: BN from {args.bn_images} {args.bn_data} images, "
                f"repair {args.repair} ({args.repair_inputs}), "
                f"{args.test_images} test images clean and under PGD-5; {args.device}, "
                f"{torch.get_num_threads()} threads, CPU features {features}",
                ["procedure", "total", "BN", "repair", "clean", "attack", "of reference"], rows)


if __name__ == "__main__":
    main()
