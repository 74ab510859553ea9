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


# Files as the version before typed metadata wrote them (tests/fixtures/format-v1: two tiny
# digits CNNs trained for one epoch, b aligned, a connect run, its ensemble, a safetensors
# export and an unfinished training state), read by this version.
FORMAT_V1 = Path(__file__).parent / "fixtures" / "format-v1"


@pytest.mark.parametrize("name", ["endpoint0.pt", "aligned1.pt", "ensemble.pt", "run/best.pt",
                                  "endpoint0.safetensors"])
def test_a_checkpoint_of_the_first_format_is_described(name, capsys):
    assert cli.main(["info", str(FORMAT_V1 / name), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dataset"] == "digits" and info["parameters"] > 0


def test_the_first_format_s_metadata_reads_as_typed_records():
    from robust_mc.evaluation.robustness import Metrics
    from robust_mc.store.checkpoint import load_checkpoint

    endpoint = load_checkpoint(FORMAT_V1 / "endpoint0.pt").meta
    assert isinstance(endpoint.metrics.test, Metrics) and endpoint.kind == "endpoint"
    assert endpoint.objective.name == "adversarial" and endpoint.history[0].epoch == 1
    assert endpoint.timings.train_s > 0 and endpoint.config["optim"]["epochs"] == 1
    aligned = load_checkpoint(FORMAT_V1 / "aligned1.pt").meta.alignment
    assert aligned.method == "corr" and all(sorted(p) == list(range(len(p)))
                                            for p in aligned.permutation.values())
    ensemble = load_checkpoint(FORMAT_V1 / "ensemble.pt", allow_ensemble=True).meta
    assert ensemble.kind == "ensemble" and len(ensemble.members_t) == 2
    best = load_checkpoint(FORMAT_V1 / "run" / "best.pt").meta
    assert best.kind == "on-path" and 0 <= best.t <= 1 and best.metrics.val is not None


def test_a_run_and_an_ensemble_of_the_first_format_are_evaluated(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("curve.pt", "summary.json"):
        (run / name).write_bytes((FORMAT_V1 / "run" / name).read_bytes())
    assert cli.main(["eval", str(run), "--out", str(tmp_path / "again"), *QUICK]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(FORMAT_V1 / "ensemble.pt"), "--eval-attack", "none",
                     "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["members"] == 2


def test_training_continues_from_a_first_format_state(tmp_path, capsys):
    out = tmp_path / "endpoint2.pt"
    (tmp_path / "endpoint2.state.pt").write_bytes((FORMAT_V1 / "endpoint2.state.pt").read_bytes())
    assert cli.main(["train", "--dataset", "digits", "--arch", "cnn", "--width", "0.25",
                     "--epochs", "1", "--train-limit", "400", "--attack-steps", "1",
                     "--eval-attack", "pgd:steps=1", "--device", "cpu", "--out", str(out)]) == 0
    assert "resuming" in capsys.readouterr().err
    from robust_mc.store.checkpoint import load_checkpoint

    assert len(load_checkpoint(out).meta.history) == 1  # the saved epoch, not a new one
