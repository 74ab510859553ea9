"""Files written by earlier versions of robust-mc still load: a connect run rewritten into the
first curve format as the code before typed records wrote it (no ``model_kwargs``, no
``format`` in summary.json, none of the settings added since, no attack stream in the saved
generators), from two tiny digits CNNs and a PAM-trained Bezier curve with the lines beside it,
is re-evaluated and ensembled as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robust_mc import cli

QUICK = ["--points", "3", "--bn-images", "100", "--eval-attack", "none", "--val-limit", "50",
         "--eval-test-limit", "50", "--device", "cpu", "--json"]
ADDED_SETTINGS = {"align": ("seed",), "attack": ("method",)}  # since the first curve format


def as_first_format(config: dict) -> dict:
    return {section: ({k: v for k, v in values.items() if k not in ADDED_SETTINGS[section]}
                      if section in ADDED_SETTINGS else values)
            for section, values in config.items()}


@pytest.fixture(scope="module")
def saved_run(tiny_endpoint_files, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("format1") / "run"
    assert cli.main(["connect", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]),
                     "--epochs", "2", "--points", "3", "--attack-steps", "1", "--eval-attack",
                     "pgd:steps=1", "--bn-images", "100", "--align-samples", "200",
                     "--compare-line", "--pam", "--pam-outer", "1", "--out", str(run),
                     "--device", "cpu", "--json"]) == 0
    record = torch.load(run / "curve.pt", weights_only=True)
    record.pop("model_kwargs")
    record["config"] = as_first_format(record["config"])
    record["rng"].pop("attack")
    torch.save(record, run / "curve.pt")
    summary = json.loads((run / "summary.json").read_text())
    summary.pop("format")
    summary["config"] = as_first_format(summary["config"])
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_a_saved_run_is_re_evaluated(saved_run, tmp_path, capsys):
    assert cli.main(["eval", str(saved_run), "--out", str(tmp_path / "again"), *QUICK]) == 0
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["curve"]["kind"] == "bezier" and len(summary["timings"]) > 0


def test_a_saved_run_is_ensembled(saved_run, tmp_path, capsys):
    assert cli.main(["ensemble", str(saved_run), "-k", "2", "--out", str(tmp_path / "ens"),
                     *QUICK]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["members_t"]) == 2


# Files as the version before typed metadata wrote them: the same records without the fields
# the typed ones write since (a native file's ``source_format``, an endpoint's ``kind``), made
# here from tiny digits CNNs: an endpoint, b aligned, a connect run's best network, an ensemble, a
# safetensors export; and an unfinished training state.
ADDED_META = ("source_format",)


def as_untyped(path: Path, endpoint: bool = False) -> Path:
    record = torch.load(path, weights_only=True)
    record["meta"] = {k: v for k, v in record["meta"].items()
                      if k not in ADDED_META and not (endpoint and k == "kind")}
    torch.save(record, path)
    return path


@pytest.fixture(scope="module")
def untyped(saved_run, tiny_endpoint_files, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("untyped")
    endpoint = folder / "endpoint0.pt"
    endpoint.write_bytes(tiny_endpoint_files["a"].read_bytes())
    as_untyped(endpoint, endpoint=True)
    assert cli.main(["align", str(endpoint), str(tiny_endpoint_files["b"]), "--align-samples",
                     "200", "--device", "cpu", "-o", str(folder / "aligned1.pt")]) == 0
    as_untyped(folder / "aligned1.pt", endpoint=True)
    assert cli.main(["ensemble", str(saved_run), "-k", "2", "--out", str(folder / "ens"),
                     *QUICK]) == 0
    (folder / "ensemble.pt").write_bytes(as_untyped(folder / "ens" / "ensemble.pt").read_bytes())
    (folder / "run").mkdir()
    (folder / "run" / "best.pt").write_bytes(as_untyped(saved_run / "best.pt").read_bytes())
    assert cli.main(["export", str(endpoint), "--format", "safetensors", "-o",
                     str(folder / "endpoint0.safetensors")]) == 0
    return folder


TRAIN_STATE = ["--dataset", "digits", "--arch", "cnn", "--width", "0.25", "--epochs", "1",
               "--train-limit", "400", "--attack-steps", "1", "--eval-attack", "pgd:steps=1",
               "--device", "cpu"]


@pytest.mark.parametrize("name", ["endpoint0.pt", "aligned1.pt", "ensemble.pt", "run/best.pt",
                                  "endpoint0.safetensors"])
def test_a_checkpoint_of_the_first_format_is_described(untyped, name, capsys):
    capsys.readouterr()
    assert cli.main(["info", str(untyped / name), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dataset"] == "digits" and info["parameters"] > 0


def test_the_first_format_s_metadata_reads_as_typed_records(untyped):
    from robust_mc.evaluation.robustness import Metrics
    from robust_mc.store.checkpoint_files import load_checkpoint

    endpoint = load_checkpoint(untyped / "endpoint0.pt").meta
    assert isinstance(endpoint.metrics.test, Metrics) and endpoint.kind == "endpoint"
    assert endpoint.objective.name == "adversarial" and endpoint.history[0].epoch == 1
    assert endpoint.timings.train_s > 0 and endpoint.config["optim"]["epochs"] == 1
    aligned = load_checkpoint(untyped / "aligned1.pt").meta.alignment
    assert aligned.method == "corr" and all(sorted(p) == list(range(len(p)))
                                            for p in aligned.permutation.values())
    ensemble = load_checkpoint(untyped / "ensemble.pt", allow_ensemble=True).meta
    assert ensemble.kind == "ensemble" and len(ensemble.members_t) == 2
    best = load_checkpoint(untyped / "run" / "best.pt").meta
    assert best.kind == "on-path" and 0 <= best.t <= 1 and best.metrics.val is not None


def test_an_ensemble_of_the_first_format_is_evaluated(untyped, capsys):
    capsys.readouterr()
    assert cli.main(["eval", str(untyped / "ensemble.pt"), "--eval-attack", "none",
                     "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["members"] == 2


def test_training_continues_from_a_first_format_state(tmp_path, capsys):
    """A training state written as a plain mapping (what the typed record writes, and what the
    version before it wrote): training takes it up."""
    from robust_mc.config import TrainRunConfig, build_config
    from robust_mc.pipelines.endpoint_training import train_endpoint
    from robust_mc.run.progress import Reporter
    from robust_mc.run.runtime import start_runtime
    from robust_mc.store.checkpoint_files import load_checkpoint

    cfg = build_config(TrainRunConfig, None, {
        "data.dataset": "digits", "model.arch": "cnn", "model.width": 0.25, "optim.epochs": 1,
        "data.train_limit": 400, "attack.steps": 1, "eval.attack": "pgd:steps=1",
        "device": "cpu"})
    state = tmp_path / "endpoint2.state.pt"
    train_endpoint(cfg, start_runtime(cfg.device, cfg.speed), Reporter(quiet=True),
                   state_path=state)
    record = torch.load(state, weights_only=True)
    assert isinstance(record, dict) and isinstance(record["history"][0], dict)
    out = tmp_path / "endpoint2.pt"
    assert cli.main(["train", *TRAIN_STATE, "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().err
    assert len(load_checkpoint(out).meta.history) == 1  # the saved epoch, not a new one
