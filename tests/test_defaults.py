"""Every command with its defaults alone, as a newcomer types it first: each gets only the inputs
it cannot do without (the files it reads, export's format and output) and must finish, or, for
the two commands whose input is a grid (bench, spawn), refuse in one line naming the preset to
start from. Slow (minutes: the defaults are full-size runs), so CI runs it in its end-to-end
step."""

from __future__ import annotations

from pathlib import Path

import pytest

from robust_mc import cli

pytestmark = pytest.mark.slow


def run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def only_run_in(folder: Path) -> Path:
    runs = [p for p in (folder / "runs").iterdir() if (p / "summary.json").is_file()]
    assert len(runs) == 1, runs
    return runs[0]


def test_every_command_runs_with_its_defaults_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv in (["train", "--out", "a.pt"], ["train", "--seed", "1", "--out", "b.pt"]):
        code, err = run(capsys, *argv)
        assert code == 0, err
    for argv in (["info", "a.pt"], ["export", "a.pt", "--format", "safetensors", "-o",
                                    "a.safetensors"], ["align", "a.pt", "b.pt"],
                 ["layers", "a.pt", "b.pt"], ["connect", "a.pt", "b.pt"]):
        code, err = run(capsys, *argv)
        assert code == 0, (argv, err)
    connected = only_run_in(tmp_path)
    for argv in (["eval", str(connected)], ["ensemble", str(connected)],
                 ["plane", str(connected)], ["eval", "a.pt"], ["demo"]):
        code, err = run(capsys, *argv)
        assert code == 0, (argv, err)

    # verify's defaults are a full AutoAttack (minutes per point on the whole test split): it
    # verifies a run measured on 16 test images, which it takes from the run's configuration
    small = tmp_path / "small"
    code, err = run(capsys, "connect", "a.pt", "b.pt", "--epochs", "1", "--points", "2",
                    "--test-limit", "16", "--out", str(small))
    assert code == 0, err
    code, err = run(capsys, "verify", str(small))
    assert code == 0, err

    for command, preset in (("bench", "bench-digits"), ("spawn", "spawn-digits")):
        code, err = run(capsys, command)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"--config {preset}" in err and "Traceback" not in err
