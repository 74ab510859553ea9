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
