"""Every benchmark answers --help and runs at its smallest size, printing its table: a rename or
a changed signature breaks CI, not the speed figures in the docs (slow: each is a process of its
own)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# module -> (smallest arguments, a line its table prints)
SMOKE = {
    "align_speed": (["--archs", "tinyten", "--samples", "64", "--batch", "32", "--repeats", "1"],
                    "correlation alignment on"),
    "curve_step": (["--archs", "tinyten", "--steps", "1", "--batch", "8", "--repeats", "1"],
                   "arch"),
    "distributed": (["--procs", "1", "--batch", "16", "--steps", "1", "--points", "1",
                     "--bn-images", "32", "--test-images", "32"], "processes"),
    "memory_reuse": (["--archs", "tinyten", "--rounds", "1"], "tinyten"),
    "path_eval": (["--points", "1", "--bn-images", "32", "--test-images", "32",
                   "--precisions", "float32"], "float32"),
    "precision": (["--epochs", "1", "--seeds", "0", "--test-images", "32"], "bfloat16"),
    "trace_speed": (["--networks", "tinyten", "--repeats", "1"], "tinyten"),
    "trace_sweep": (["--tables", "cifar10/Linf", "--limit", "1"],
                    "RobustBench architectures and the tracer"),
    "train_epoch": (["--archs", "tinyten", "--images", "64"], "tinyten"),
    "train_step": (["--archs", "tinyten", "--options", "eager fp32", "--steps", "1", "--batch",
                    "8", "--repeats", "1"], "eager fp32"),
}


def test_every_benchmark_module_is_smoke_run():
    helpers = {"__init__", "common", "data", "reference_align", "reference_path_eval",
               "timm_families", "hf_families"}
    modules = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - helpers
    assert modules == set(SMOKE)


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(SMOKE))
def test_a_benchmark_runs_at_its_smallest_size(module):
    args, expected = SMOKE[module]
    usage = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert usage.returncode == 0 and "usage:" in usage.stdout, usage.stderr[-2000:]
    run = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert expected in run.stdout, run.stdout[-2000:]


@pytest.mark.slow
def test_the_timm_sweep_runs_on_a_sample_of_families():
    """``trace_sweep --timm`` on three families (the whole sweep is a benchmark run): each
    traced exactly, none wrong."""
    pytest.importorskip("timm")
    families = ["vision_transformer", "nfnet", "convnext"]
    run = subprocess.run([sys.executable, "-m", "benchmarks.trace_sweep", "--timm",
                          "--families", *families], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "3 families, 3 tried: 3 exact" in run.stdout, run.stdout[-2000:]


@pytest.mark.slow
def test_the_huggingface_sweep_runs_on_a_sample_of_families():
    """``trace_sweep --huggingface`` on two families: each traced exactly, none wrong."""
    pytest.importorskip("transformers")
    run = subprocess.run([sys.executable, "-m", "benchmarks.trace_sweep", "--huggingface",
                          "--families", "ViT", "ConvNextV2"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 families, 2 tried: 2 exact" in run.stdout, run.stdout[-2000:]
