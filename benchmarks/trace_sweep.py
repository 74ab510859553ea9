"""Which networks the permutation tracer follows: every distinct architecture of RobustBench's
CIFAR-10 Linf and ImageNet Linf tables that builds offline (random weights), traced and checked;
with ``--timm``, the smallest variant of every architecture family timm offers; with
``--huggingface``, a small network of each image-classifier family of transformers.

    python -m benchmarks.trace_sweep [--max-params 120e6] [--tables cifar10/Linf imagenet/Linf]
    python -m benchmarks.trace_sweep --timm [--families resnet vision_transformer] [--out DIR]
    python -m benchmarks.trace_sweep --huggingface [--families ViT Swin] [--out DIR]

For each architecture (entries sharing a class and a parameter count are one architecture): the
spec is traced on two random images, a random permutation is applied, and the outputs are
compared (relative float32 difference). A network that does not build offline, or is larger than
``--max-params``, is listed with the reason. The timm sweep: see :mod:`benchmarks.timm_families`;
the Hugging Face sweep: :mod:`benchmarks.hf_families`.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from benchmarks.common import permutation_error, print_table, traced
from robust_mc.models.robustbench import import_robustbench


def check(model: torch.nn.Module, side: int) -> tuple[str, str]:
    x = torch.rand(2, 3, side, side)
    result = traced(model, x)
    if isinstance(result, str):
        return "fails", result[:160]
    spec, seconds = result
    error = permutation_error(model, spec, x)
    status = "permutes" if error < 1e-4 else "WRONG"
    fixed = f"; fixed: {len(spec.fixed)}" if spec.fixed else ""
    return status, (f"{len(spec)} spaces, moved {spec.moved_share(model):.3f}, error {error:.1e}, "
                    f"traced in {seconds:.1f} s{fixed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-params", type=float, default=120e6)
    parser.add_argument("--tables", nargs="+", default=["cifar10/Linf", "imagenet/Linf"])
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N entries of each table (a smoke run)")
    parser.add_argument("--timm", action="store_true",
                        help="sweep timm's architecture families instead")
    parser.add_argument("--huggingface", action="store_true",
                        help="sweep transformers' image classifiers instead (small configs)")
    parser.add_argument("--families", nargs="+", default=None,
                        help="--timm: only these families (timm's module names); "
                             "--huggingface: these (ViT, Swin, ...)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="--timm, --huggingface: seconds one family may take")
    parser.add_argument("--out", default=None,
                        help="--timm, --huggingface: folder for the rows (a .json), resumable")
    args = parser.parse_args()
    if args.timm or args.huggingface:
        from benchmarks import hf_families, timm_families

        (timm_families if args.timm else hf_families).sweep(args.families, args.timeout,
                                                            args.out)
        return
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    import_robustbench()
    zoo = import_robustbench("robustbench.model_zoo.models")
    enums = import_robustbench("robustbench.model_zoo.enums")
    rows, seen = [], set()
    for table in args.tables:
        dataset, threat = table.split("/")
        side = 224 if dataset == "imagenet" else 32
        entries = zoo.model_dicts[enums.BenchmarkDataset(dataset)][enums.ThreatModel(threat)]
        for name, entry in list(entries.items())[:args.limit]:
            try:
                model = entry["model"]().eval()
            except Exception as exc:  # noqa: BLE001 - a download or a missing extra
                rows.append([table, name, "-", "does not build offline",
                             f"{type(exc).__name__}: {str(exc)[:100]}"])
                continue
            params = sum(p.numel() for p in model.parameters())
            key = (type(model).__name__, params)
            if key in seen:
                continue
            seen.add(key)
            if params > args.max_params:
                rows.append([table, name, f"{params / 1e6:.0f}M", "too large", ""])
                continue
            status, detail = check(model, side)
            rows.append([table, name, f"{params / 1e6:.1f}M", status, detail])
            print(" | ".join(map(str, rows[-1])), flush=True)
    print_table("RobustBench architectures and the tracer",
                ["table", "entry", "params", "result", "detail"], rows)


if __name__ == "__main__":
    main()
