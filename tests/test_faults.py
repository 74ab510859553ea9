"""Runs that survive faults: a run stopped or killed at any moment and then resumed ends exactly
where an uninterrupted one does, and no output file is ever torn."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from robust_mc_testkit import StopAfter

from robust_mc import cli
from robust_mc.config import OptimConfig
from robust_mc.data import Split
from robust_mc.errors import Interrupted
from robust_mc.run.progress import Step
from robust_mc.run.runtime import Runtime
from robust_mc.store.checkpoint_files import load_checkpoint, read_torch_file
from robust_mc.train.loop import NonFiniteLoss, Position, Trainer, TrainingContext

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--dataset", "synthetic", "--arch", "cnn", "--width", "0.5", "--eps", "0.03",
         "--attack-steps", "3", "--epochs", "6", "--batch-size", "32", "--lr", "0.1",
         "--schedule", "cosine", "--eval-attack", "pgd:steps=3", "--device", "cpu",
         "--threads", "2", "--json"]
CONNECT = ["--epochs", "4", "--attack-steps", "3", "--batch-size", "32", "--lr", "0.05",
           "--points", "5", "--eval-attack", "pgd:steps=3", "--bn-images", "300",
           "--align-samples", "300", "--device", "cpu", "--threads", "2", "--json"]


@pytest.fixture(scope="module")
def synthetic_endpoints(tmp_path_factory) -> list[str]:
    """Two PGD-trained CNNs on the synthetic data, as checkpoint files."""
    root = tmp_path_factory.mktemp("endpoints")
    paths = []
    for seed in (0, 1):
        path = root / f"e{seed}.pt"
        args = [*TRAIN, "--epochs", "4", "--seed", str(seed), "--out", str(path)]
        assert cli.main(args) == 0
        paths.append(str(path))
    return paths


def launch(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robust_mc", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def assert_no_torn_files(folder: Path) -> None:
    """Every file under its own name reads back whole (temp files are a kill's leftovers and
    are cleared by the next run)."""
    for path in folder.iterdir():
        if path.name.endswith(".tmp"):
            continue
        if path.suffix == ".pt":
            assert isinstance(read_torch_file(path), dict), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            assert path.read_text().endswith("\n"), path


def kill_after_two_saved_epochs(argv: list[str], folder: Path, state: str) -> None:
    """Launch ``argv``, SIGKILL it once its resumable state (the file in ``folder`` matching
    ``state``) holds two epochs, whatever the machine's speed, and check nothing is torn."""
    process = launch(argv)

    def saved_epochs() -> int:
        try:
            (path,) = folder.glob(state)
            return read_torch_file(path)["position"]["epoch"]
        except Exception:  # not written yet
            return 0

    assert wait_until(lambda: saved_epochs() >= 2, process), process.communicate()
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert_no_torn_files(folder)


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("extra", [[], ["--ema", "0.9"], ["--awp", "0.005"]],
                         ids=["plain", "weight-average", "weight-perturbation"])
def test_train_stopped_mid_epoch_and_resumed_ends_bit_for_bit_equal(tmp_path, monkeypatch,
                                                                    extra):
    train = [*TRAIN, *extra, "--epochs", "3"]
    reference = tmp_path / "reference.pt"
    assert cli.main([*train, "--out", str(reference)]) == 0
    out = tmp_path / "a.pt"
    stop = StopAfter(checks=35)  # a poll per step (22 an epoch), two per epoch: in epoch 2
    monkeypatch.setattr("robust_mc.commands.train.StopSignals", lambda: stop)
    assert cli.main([*train, "--out", str(out)]) == 130
    state = read_torch_file(tmp_path / "a.state.pt")
    assert state["position"]["epoch"] == 1 and state["position"]["step"] > 0
    assert not out.exists()
    monkeypatch.undo()
    assert cli.main([*train, "--out", str(out)]) == 0  # rerunning continues
    assert_same_weights(final_weights(out), final_weights(reference))
    assert load_checkpoint(out).meta.metrics == load_checkpoint(reference).meta.metrics
    assert not (tmp_path / "a.state.pt").exists()


@pytest.mark.slow  # 15 s on a 2-core CPU: CI runs it in its end-to-end step
def test_train_killed_with_sigkill_and_resumed_matches_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference.pt"
    assert cli.main([*TRAIN, "--out", str(reference)]) == 0
    out = tmp_path / "a.pt"
    kill_after_two_saved_epochs([*TRAIN, "--out", str(out), "--save-every", "1"], tmp_path,
                                "a.state.pt")
    assert not out.exists()
    resumed = launch([*TRAIN, "--out", str(out), "--resume"])
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert_same_weights(final_weights(out), final_weights(reference))


def test_sigint_saves_the_state_and_exits_130_with_how_to_resume(tmp_path):
    out, state = tmp_path / "a.pt", tmp_path / "a.state.pt"
    process = launch([*TRAIN, "--epochs", "40", "--out", str(out)])
    assert wait_for(state, process), process.communicate()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "SIGINT" in last and "rerun the same command" in last and "Traceback" not in err
    assert read_torch_file(state)["format"] == "robust-mc-train-state/1"


def test_a_second_signal_stops_at_once_and_leaves_no_torn_file(tmp_path):
    out, state = tmp_path / "a.pt", tmp_path / "a.state.pt"
    process = launch([*TRAIN, "--epochs", "40", "--out", str(out)])
    assert wait_for(state, process), process.communicate()
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    # 130 from the handler, or (when the second signal lands after the state was saved, while
    # Python shuts down) death by SIGINT, which a shell reports as 130 too
    assert process.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    assert_no_torn_files(tmp_path)


def saved_epoch(out: Path) -> int | None:
    """The epoch a connect run in ``out`` has saved its curve training at (None: no state)."""
    try:
        return read_torch_file(out / "curve.pt")["position"]["epoch"]
    except Exception:  # not written yet
        return None


def points_evaluated(out: Path) -> int:
    """Points of the path evaluation saved in ``out``'s progress file so far."""
    try:
        saved = json.loads((out / "path-progress.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(len(points) for points in saved["paths"].values())


def wait_until(condition, process: subprocess.Popen, timeout: float = 300) -> bool:
    """Poll ``condition`` until it holds (True) or the process ends or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.slow  # 25 s on a 2-core CPU: CI runs it in its end-to-end step
def test_connect_killed_again_and_again_resumes_to_the_same_figures(synthetic_endpoints,
                                                                    tmp_path, capsys):
    """Killed once while the curve trains and once while the path is evaluated (each kill
    waits for the phase to show progress on disk, so it holds on any machine's speed)."""
    paths = synthetic_endpoints
    reference = tmp_path / "reference"
    assert cli.main(["connect", *paths, *CONNECT, "--out", str(reference)]) == 0
    epochs = int(CONNECT[CONNECT.index("--epochs") + 1])
    out = tmp_path / "run"
    phases = [("training", lambda: (saved_epoch(out) or 0) >= 1),
              ("evaluation", lambda: points_evaluated(out) >= 1)]
    for phase, progressed in phases:
        process = launch(["connect", *paths, *CONNECT, "--out", str(out)])
        assert wait_until(progressed, process), (phase, process.communicate())
        process.kill()
        process.communicate()
        assert process.returncode == -signal.SIGKILL, phase
        assert_no_torn_files(out)
        assert not (out / "summary.json").exists(), f"the kill came after the {phase}"
        if phase == "training":
            assert (saved_epoch(out) or 0) < epochs and points_evaluated(out) == 0
    final = launch(["connect", *paths, *CONNECT, "--out", str(out)])
    _, err = final.communicate()
    assert final.returncode == 0, err
    assert not list(out.glob(".*.tmp")) and not (out / "path-progress.json").exists()
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert ours["barriers"] == theirs["barriers"] and ours["best"] == theirs["best"]
    rows = [json.loads((d / "path.json").read_text())["rows"] for d in (out, reference)]
    assert rows[0] == rows[1]
    curves = [read_torch_file(d / "curve.pt")["curve"]["bends"] for d in (out, reference)]
    assert torch.equal(curves[0], curves[1])


@pytest.mark.slow  # 14 s on a 2-core CPU: CI runs it in its end-to-end step
def test_connect_sigterm_during_the_path_evaluation_exits_143_and_resumes(
        synthetic_endpoints, tmp_path, capsys):
    paths = synthetic_endpoints
    out = tmp_path / "run"
    process = launch(["connect", *paths, *CONNECT, "--points", "12", "--out", str(out)])
    assert wait_for(out / "path-progress.json", process), process.communicate()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "SIGTERM" in err and "rerun the same command" in err
    done = json.loads((out / "path-progress.json").read_text())["paths"]
    assert 1 <= len(next(iter(done.values()))) < 12
    assert not (out / "summary.json").exists()
    assert cli.main(["connect", *paths, *CONNECT, "--points", "12", "--out", str(out)]) == 0
    capsys.readouterr()
    # finished: a rerun recomputes nothing, and other settings are refused, not mixed in
    written = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    assert cli.main(["connect", *paths, *CONNECT, "--points", "12", "--out", str(out)]) == 0
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == written  # nothing rewritten
    capsys.readouterr()
    (out / "summary.json").unlink()
    assert cli.main(["connect", *paths, *CONNECT, "--lr", "0.1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.05 -> 0.1" in err and "--fresh" in err


def nan_on(bad_steps: set[int]):
    calls = {"n": 0}
    weight = torch.nn.Parameter(torch.ones(()))

    def task(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        loss = weight * x.mean()
        if calls["n"] in bad_steps:
            loss = loss * math.nan
        return loss, torch.tensor(0)

    return task, torch.optim.SGD([weight], lr=0.1)


@pytest.mark.parametrize("skip", [0, 1])
def test_a_non_finite_loss_stops_the_run_unless_skipped(skip):
    split = Split(torch.rand(64, 1, 4, 4), torch.zeros(64, dtype=torch.long))
    task, optimizer = nan_on({2})
    position = Position()
    optim = OptimConfig(epochs=1, batch_size=16, skip_nonfinite=skip)
    context = TrainingContext(Runtime.for_device("cpu"), train=split)
    trainer = Trainer(task, optimizer, optim, context, position)
    if skip == 0:
        with pytest.raises(NonFiniteLoss, match="epoch 1, step 2 .*learning rate"):
            trainer.train_one_epoch(Step(None, None))
    else:
        result = trainer.train_one_epoch(Step(None, None))
        assert result is not None and result.images == 48 and position.skipped == 1


def test_a_diverging_run_names_epoch_step_and_learning_rate(tmp_path, capsys):
    code = cli.main([*TRAIN, "--lr", "1e12", "--epochs", "2", "--out", str(tmp_path / "a.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite" in err and "learning rate" in err and "--lr" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.pt").exists()


def test_deterministic_runs_give_identical_summaries(synthetic_endpoints, tmp_path, capsys):
    paths = synthetic_endpoints
    threads = torch.get_num_threads()
    for name in ("one", "two"):
        assert cli.main(["connect", *paths, *CONNECT, "--epochs", "1", "--points", "3",
                         "--deterministic", "--threads", "1", "--out", str(tmp_path / name)]) == 0
    # the command's process settings end with it
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    capsys.readouterr()
    one, two = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("one", "two"))
    for key in ("barriers", "best", "endpoints"):
        assert one[key] == two[key], key
    one["alignment"].pop("seconds"), two["alignment"].pop("seconds")
    assert one["alignment"] == two["alignment"]
    assert [h["loss"] for h in one["training"]] == [h["loss"] for h in two["training"]]


def test_interrupted_carries_the_exit_code_of_its_signal():
    assert Interrupted(signal.SIGINT, "x").exit_code == 130
    assert Interrupted(signal.SIGTERM, "x").exit_code == 143


def test_resume_without_a_saved_run_and_resume_with_fresh_are_refused(tmp_path, capsys):
    assert cli.main([*TRAIN, "--resume", "--out", str(tmp_path / "a.pt")]) == 2
    assert "no saved training state" in capsys.readouterr().err
    assert cli.main([*TRAIN, "--resume", "--fresh", "--out", str(tmp_path / "a.pt")]) == 2
    assert "contradict" in capsys.readouterr().err


def test_stale_temp_files_of_a_killed_write_are_cleared(tmp_path):
    from robust_mc.store.resume import remove_stale_temps

    (tmp_path / ".curve.pt.abc.tmp").write_bytes(b"half")
    (tmp_path / "curve.pt").write_bytes(b"whole")
    remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["curve.pt"]


def test_a_resumed_epoch_counts_each_step_once_on_the_progress_bar():
    split = Split(torch.rand(25 * 4, 1, 4, 4), torch.zeros(25 * 4, dtype=torch.long))
    task, optimizer = nan_on(set())
    position = Position(step=7)  # an epoch interrupted after step 7
    trainer = Trainer(task, optimizer, OptimConfig(epochs=1, batch_size=4),
                      TrainingContext(Runtime.for_device("cpu"), train=split), position)

    class CountingStep(Step):
        count = 7  # what the bar showed when the epoch resumed

        def advance(self, amount: int = 1, status: str | None = None) -> None:
            CountingStep.count += amount

    assert trainer.train_one_epoch(CountingStep(None, None)) is not None
    assert CountingStep.count == 25


@pytest.mark.slow  # 30 s on a 2-core CPU: CI runs it in its end-to-end step
def test_merge_killed_during_its_fine_tune_resumes_to_the_same_network(synthetic_endpoints,
                                                                       tmp_path):
    merge = ["merge", *synthetic_endpoints, "--finetune-epochs", "4", "--eval-attack",
             "pgd:steps=3", "--align-samples", "300", "--barrier-points", "0", "--device",
             "cpu", "--threads", "2", "--json"]
    reference = tmp_path / "reference.pt"
    assert cli.main([*merge, "--out", str(reference)]) == 0
    out = tmp_path / "merged.pt"
    kill_after_two_saved_epochs([*merge, "--out", str(out)], tmp_path,
                                "merged.finetune-*.state.pt")
    assert not out.exists()
    resumed = launch([*merge, "--out", str(out)])
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert_same_weights(final_weights(out), final_weights(reference))
    assert not list(tmp_path.glob("*.state.pt"))
