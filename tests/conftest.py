"""Shared fixtures: tiny data and small trained models, made once per session, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robust_mc.config import DataConfig, TrainRunConfig, build_config
from robust_mc.data import load_data
from robust_mc.pipelines.endpoint_training import train_endpoint
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint import save_checkpoint

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    return Runtime.for_device("cpu")


@pytest.fixture(scope="session")
def synthetic():
    return load_data(DataConfig(dataset="synthetic"))


@pytest.fixture(scope="session")
def digits():
    return load_data(DataConfig(dataset="digits"))


def quick_config(seed: int, **extra) -> TrainRunConfig:
    values = {"data.dataset": "digits", "model.arch": "cnn", "model.width": 0.5,
              "attack.eps": 0.1, "attack.steps": 3, "optim.epochs": 5, "optim.batch_size": 64,
              "optim.lr": 0.05, "optim.schedule": "cosine", "optim.seed": seed,
              "eval.attack": "pgd:steps=5", "device": "cpu"}
    values.update(extra)
    return build_config(TrainRunConfig, None, values)


@pytest.fixture(scope="session")
def digits_endpoints(digits, runtime):
    """Two small PGD-trained digits CNNs with different seeds (a few seconds each)."""
    return [train_endpoint(quick_config(seed), runtime, Reporter(quiet=True), data=digits)
            for seed in (0, 1)]


@pytest.fixture(scope="session")
def tiny_endpoint(runtime, digits):
    """``tiny_endpoint(**settings)``: a one-epoch digits CNN endpoint (a Checkpoint), in about a
    second; ``settings`` are dotted train settings."""

    def make(**extra):
        values = {"data.dataset": "digits", "model.arch": "cnn", "model.width": 0.25,
                  "optim.epochs": 1, "attack.steps": 1, "eval.attack": "none",
                  "optim.precise_bn": "off", "device": "cpu", **extra}
        cfg = build_config(TrainRunConfig, None, values)
        return train_endpoint(cfg, runtime, Reporter(quiet=True), data=digits)

    return make


@pytest.fixture(scope="session")
def tiny_endpoint_files(tmp_path_factory, tiny_endpoint) -> dict[str, Path]:
    """Two tiny endpoints of different seeds as checkpoint files (``a``, ``b``), made once."""
    root = tmp_path_factory.mktemp("tiny-endpoints")
    return {name: save_checkpoint(tiny_endpoint(**{"optim.seed": seed}), root / f"{name}.pt")
            for name, seed in (("a", 0), ("b", 1))}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_endpoint_files) -> Path:
    """A finished connect run between the tiny endpoints with the QUICK_CONNECT settings, made
    once; tests read it, and copy it before changing anything in it."""
    from robust_mc_testkit import QUICK_CONNECT

    from robust_mc import cli

    run = tmp_path_factory.mktemp("tiny-run") / "run"
    assert cli.main(["connect", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]),
                     *QUICK_CONNECT, "--out", str(run), "--json"]) == 0
    return run


@pytest.fixture(scope="session")
def vit_endpoint_files(tiny_endpoint, tmp_path_factory) -> list[Path]:
    """Two one-epoch digits endpoints of the zoo's ViT at half width (AdamW), seeds 0 and 1."""
    root = tmp_path_factory.mktemp("vits")
    settings = {"model.arch": "vit_cifar", "model.width": 0.5, "optim.optimizer": "adamw",
                "optim.lr": 0.002, "optim.batch_size": 64}
    return [save_checkpoint(tiny_endpoint(**settings, **{"optim.seed": s}), root / f"v{s}.pt")
            for s in (0, 1)]
