"""`robust-mc eval model.pt`: one model (or an ensemble, attacked as one model) measured clean
and robust on the test split, with the settings its checkpoint records as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from robust_mc.config import ConnectRunConfig, build_config
from robust_mc.data import DatasetInfo, as_float, load_data
from robust_mc.errors import UserError
from robust_mc.evaluation.path import path_attack
from robust_mc.evaluation.robustness import Metrics, evaluate_seeded
from robust_mc.pipelines.connect import preflight
from robust_mc.pipelines.pair import check_fits_data
from robust_mc.run.files import atomic_write_json, ensure_out_dir
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import start_runtime
from robust_mc.store.checkpoint import Checkpoint
from robust_mc.store.model_building import build_network


@dataclass(frozen=True)
class ModelEvaluation:
    checkpoint: Checkpoint
    data: DatasetInfo
    metrics: Metrics  # test split
    cfg: ConnectRunConfig

    def to_state(self) -> dict:
        return {"checkpoint": str(self.checkpoint.path),
                "members": len(self.checkpoint.members or [None]),
                "test": self.metrics.as_dict(), "eval_attack": self.cfg.path.attack,
                "eps": self.cfg.attack.eps}


def model_config(ckpt: Checkpoint, overrides: dict) -> ConnectRunConfig:
    """The evaluation settings: the checkpoint's dataset and training eps as defaults, the
    user's overrides on top."""
    base: dict = {"data": {"dataset": ckpt.dataset}} if ckpt.dataset else {}
    if ckpt.meta.eps is not None:
        base["attack"] = {"eps": ckpt.meta.eps}
    cfg = build_config(ConnectRunConfig, None, overrides, base=base)
    preflight(cfg, re_evaluation=True)
    if cfg.verify.enabled or cfg.path.similarity:
        raise UserError("--verify and --similarity measure points of a path; give a connect "
                        "run directory (robust-mc verify RUN_DIR), not one model")
    return cfg


def evaluate_model_file(ckpt: Checkpoint, cfg: ConnectRunConfig, out: Path | None,
                        argv: list[str] | None = None) -> ModelEvaluation:
    """Measure the checkpoint's network under the path attack on the test split; with ``out``,
    write eval.json there."""
    runtime = start_runtime(cfg.device, cfg.speed)
    data = load_data(cfg.data)
    check_fits_data(ckpt, data)
    out = ensure_out_dir(out) if out is not None else None
    model = runtime.settle(build_network(ckpt), as_float(data.test.images[:1]))
    attack = path_attack(cfg.path, cfg.attack, data.info.num_classes)
    test = data.test.take(cfg.path.test_limit).to(runtime.device)
    metrics = evaluate_seeded(model, test, attack, runtime, cfg.path.batch_size, cfg.path.seed)
    result = ModelEvaluation(ckpt, data.info, metrics, cfg)
    if out is not None:
        atomic_write_json(out / "eval.json", {**result.to_state(), "record": run_record(argv)})
    return result
