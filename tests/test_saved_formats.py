"""Files written by earlier versions of robust-mc still load: a connect run saved in the first
curve format (two tiny digits CNNs, a PAM-trained Bezier curve with the straight lines beside it)
is re-evaluated and ensembled as it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import cli

FIXTURE = Path(__file__).parent / "fixtures" / "connect-run-format1"
QUICK = ["--points", "3", "--bn-images", "100", "--eval-attack", "none", "--val-limit", "50",
         "--eval-test-limit", "50", "--device", "cpu", "--json"]


@pytest.fixture
def saved_run(tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def test_a_saved_run_is_re_evaluated(saved_run, capsys):
    assert cli.main(["eval", str(saved_run), "--out", str(saved_run / "again"), *QUICK]) == 0
    summary = json.loads((saved_run / "again" / "summary.json").read_text())
    assert summary["curve"]["kind"] == "bezier" and len(summary["timings"]) > 0


def test_a_saved_run_is_ensembled(saved_run, capsys):
    assert cli.main(["ensemble", str(saved_run), "-k", "2", *QUICK]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["members_t"]) == 2
