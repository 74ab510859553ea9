"""`robust-mc demo`'s work: two PGD-trained endpoints on the embedded digits, then connect with
the line beside the curve, unaligned and aligned."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robust_mc.config import ConnectRunConfig, TrainRunConfig, build_config
from robust_mc.data import load_data
from robust_mc.pipelines.connect import run_connect
from robust_mc.pipelines.endpoint_training import trained_endpoint
from robust_mc.pipelines.pair import load_pair
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.path_summary import PathSummary

SEEDS = (0, 1)
TRAIN_PRESET = "digits-demo"
CONNECT_PRESET = "digits-connect"


@dataclass(frozen=True)
class DemoEndpoint:
    checkpoint: Path
    seed: int
    clean_acc: float  # percent, test split
    robust_acc: float
    train_s: float


@dataclass(frozen=True)
class DemoResult:
    endpoints: list[DemoEndpoint]
    summary: PathSummary  # the connect run between them


def train_settings(overrides: dict) -> TrainRunConfig:
    """The demo's endpoint settings with the user's flags on top."""
    return build_config(TrainRunConfig, TRAIN_PRESET, overrides)


def run_demo(out: Path, overrides: dict, runtime: Runtime, reporter: Reporter,
             argv: list[str]) -> DemoResult:
    """Train (or reuse) the two endpoints in ``out`` and connect them in ``out/connect``."""
    data = load_data(train_settings(overrides).data)
    endpoints = []
    for seed in SEEDS:
        train = build_config(TrainRunConfig, TRAIN_PRESET, {**overrides, "optim.seed": seed})
        path = out / f"endpoint-seed{seed}.pt"
        meta = trained_endpoint(train, path, runtime, reporter, data=data, argv=argv).meta
        assert meta.metrics is not None and meta.metrics.test is not None  # trained here
        assert meta.timings is not None
        endpoints.append(DemoEndpoint(path, seed, meta.metrics.test.clean_acc,
                                      meta.metrics.test.robust_acc, meta.timings.train_s))
    pair = load_pair(str(endpoints[0].checkpoint), str(endpoints[1].checkpoint))
    connect = build_config(ConnectRunConfig, CONNECT_PRESET,
                           {**overrides, "path.compare_line": True})
    summary = run_connect(pair, connect, out / "connect", runtime, reporter, argv)
    return DemoResult(endpoints, summary)
