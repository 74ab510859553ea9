"""Runs on several processes with torchrun (Gloo, 2 CPU processes, one thread each): the same
figures as one process, rank 0 alone writing, a lost process ending the job; and bench workers
sharing one grid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from distributed_train_worker import SETTINGS

from robust_mc import cli
from robust_mc.config import TrainRunConfig, build_config
from robust_mc.pipelines.endpoint_training import train_endpoint
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
MLP_TRAIN = ["train", "--dataset", "digits", "--arch", "mlp", "--epochs", "2", "--eps", "0.1",
             "--attack-steps", "2", "--eval-attack", "none", "--device", "cpu"]
CONNECT = ["--epochs", "1", "--points", "5", "--eval-attack", "pgd:steps=3", "--batch-size",
           "64", "--bn-images", "300", "--align-samples", "300", "--eval-test-limit", "200",
           "--device", "cpu"]
ONE_IMAGE = 100 / 143 + 1e-9  # accuracy (%) of one of the digits' 143 validation images


def torchrun(*argv: str, module: bool = True) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2"]
    target = ["-m", "robust_mc"] if module else []
    return subprocess.Popen([*launcher, *target, *argv], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def mlp_endpoints(tmp_path_factory) -> list[str]:
    """Two PGD-trained MLPs (no batch norm: one process's computation is reproduced exactly)."""
    root = tmp_path_factory.mktemp("mlp")
    paths = [str(root / f"m{seed}.pt") for seed in (0, 1)]
    for seed, path in enumerate(paths):
        assert cli.main([*MLP_TRAIN, "--seed", str(seed), "--out", path]) == 0
    return paths


@pytest.mark.slow  # CI runs it in its end-to-end step
def test_two_ranks_train_the_same_weights_as_one_process(tmp_path):
    worker = str(ROOT / "tests" / "distributed_train_worker.py")
    code, _, err = finished(torchrun(worker, str(tmp_path), module=False))
    assert code == 0, err
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    cfg = build_config(TrainRunConfig, None, SETTINGS)  # the same run, in this one process
    one = train_endpoint(cfg, Runtime.for_device("cpu"), Reporter(quiet=True)).state_dict
    # two processes sum each gradient in two halves: float32 rounding (1e-7 relative a step)
    # over two epochs of an MLP whose weights are of order 0.1
    assert max((one[k] - ranks[0][k]).abs().max().item() for k in one) < 1e-5


@pytest.mark.slow  # 30 s on a 2-core CPU: CI runs it in its end-to-end step
def test_a_two_rank_connect_and_eval_give_the_figures_of_one_process(mlp_endpoints, tmp_path,
                                                                     capsys):
    two, one = tmp_path / "two", tmp_path / "one"
    code, out, err = finished(torchrun("connect", *mlp_endpoints, *CONNECT, "--out", str(two)))
    assert code == 0, err
    assert (out + err).count("wrote ") == 1  # rank 0 alone reports
    assert cli.main(["connect", *mlp_endpoints, *CONNECT, "--out", str(one)]) == 0
    rows = [json.loads((run / "path.json").read_text())["rows"] for run in (one, two)]
    assert len(rows[0]) == len(rows[1]) == 10
    for a, b in zip(*rows, strict=True):  # the curve trained on two processes: as for a
        assert a["t"] == b["t"] and a["split"] == b["split"]  # resumed run below
        for key in ("clean_loss", "robust_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
        for key in ("clean_acc", "robust_acc"):
            assert a[key] == pytest.approx(b[key], abs=ONE_IMAGE), key

    again = [run / "again" for run in (one, two)]
    code, _, err = finished(torchrun("eval", str(one), "--points", "4", "--out", str(again[1])))
    assert code == 0, err
    assert cli.main(["eval", str(one), "--points", "4", "--out", str(again[0])]) == 0
    capsys.readouterr()
    assert (again[0] / "path.json").read_text() != ""
    shared = [json.loads((run / "path.json").read_text())["rows"] for run in again]
    assert shared[0] == shared[1]


@pytest.mark.slow  # 30 s on a 2-core CPU: CI runs it in its end-to-end step
def test_two_rank_ensemble_and_layers_share_their_work_and_agree(mlp_endpoints, tmp_path,
                                                                 capsys):
    run = tmp_path / "run"
    line = [*CONNECT, "--curve", "line", "--out", str(run)]
    assert cli.main(["connect", *mlp_endpoints, *line]) == 0
    outputs = {}
    for name, argv, result in (
            ("ensemble", ["ensemble", str(run), "-k", "2"], "ensemble.json"),
            ("layers", ["layers", *mlp_endpoints, "--samples", "100", "--points", "3",
                        "--device", "cpu"], "layers.json")):
        one, two = tmp_path / f"{name}1", tmp_path / f"{name}2"
        code, _, err = finished(torchrun(*argv, "--out", str(two)))
        assert code == 0, err
        assert cli.main([*argv, "--out", str(one)]) == 0
        outputs[name] = [json.loads((d / result).read_text()) for d in (one, two)]
    capsys.readouterr()
    single, shared = outputs["ensemble"]
    assert single["members_t"] == shared["members_t"] and single["test"] == shared["test"]
    single, shared = outputs["layers"]
    groups = [report["aligned"]["groups"] for report in (single, shared)]
    assert [g["group"] for g in groups[0]] == [g["group"] for g in groups[1]]
    for a, b in zip(*groups, strict=True):  # threads differ: float rounding only, relative
        for key, value in a.items():  # to the figure, with a floor for barriers near 0
            assert value == (b[key] if isinstance(value, str) else pytest.approx(
                b[key], rel=1e-5, abs=1e-6))


@pytest.mark.slow  # CI runs it in its end-to-end step
def test_a_lost_rank_ends_the_job_with_one_line(tmp_path):
    out = tmp_path / "k.pt"
    state = tmp_path / "k.state.pt"
    process = torchrun(*MLP_TRAIN[:-4], "--arch", "cnn", "--epochs", "50", "--attack-steps",
                       "5", "--device", "cpu", "--out", str(out))
    while not state.exists():  # the run has saved a first epoch
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.05)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    os.kill(int(children[-1]), signal.SIGKILL)
    code, _, err = finished(process)
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("robust-mc train (rank")]
    assert lines and "another process of the run ended" in lines[0], err[-2000:]
    assert state.exists() and not out.exists()  # the saved state is kept for a rerun


@pytest.mark.slow  # 13 s on a 2-core CPU: CI runs it in its end-to-end step
def test_a_signal_to_one_rank_stops_all_at_one_step_and_one_process_resumes(mlp_endpoints,
                                                                           tmp_path):
    # four epochs: the signal comes once the first is saved, three before the run could end
    argv = ["connect", *mlp_endpoints, *CONNECT, "--epochs", "4", "--batch-size", "32",
            "--attack-steps", "5"]
    run, straight = tmp_path / "run", tmp_path / "straight"
    process = torchrun(*argv, "--out", str(run))
    while not (run / "curve.pt").exists():  # a first epoch is saved
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.01)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGUSR1)
    code, _, err = finished(process)
    assert code != 0
    stopped = [line for line in err.splitlines() if ": SIGUSR1: stopped " in line]
    assert len(stopped) == 1 and "(rank 0)" in stopped[0], err[-2000:]
    assert not (run / "summary.json").exists()
    assert cli.main([*argv, "--out", str(run)]) == 0  # resumed by one process
    assert cli.main([*argv, "--out", str(straight)]) == 0
    rows = [json.loads((d / "path.json").read_text())["rows"] for d in (run, straight)]
    # The first epoch ran on two processes, whose all-reduce sums the gradients in another
    # order than one process does: the weights differ by float32 rounding (about 1e-7
    # relative) from then on, and the remaining steps carry it into the losses (1e-5
    # absolute, 5e-6 relative, seen on an AVX2 CPU), twenty times below the tolerance. A resume
    # that lost, repeated or reseeded a step changes the training itself, not its rounding; so
    # losses agree to 1e-4 relative, and accuracies to one image of the smaller split.
    for a, b in zip(*rows, strict=True):
        for key in ("clean_loss", "robust_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
        for key in ("clean_acc", "robust_acc"):
            assert a[key] == pytest.approx(b[key], abs=ONE_IMAGE), key


FAST_CONNECT = {"attack": {"eps": 0.1, "steps": 2},
                "optim": {"epochs": 1, "batch_size": 64, "lr": 0.05},
                "align": {"samples": 300},
                "path": {"points": 3, "attack": "pgd:steps=2", "bn_images": 300,
                         "val_limit": 100, "test_limit": 200}}


@pytest.mark.slow  # CI runs it in its end-to-end step
def test_two_bench_workers_fill_one_grid_each_cell_once(mlp_endpoints, tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "digits"}, "device": "cpu", "connect": FAST_CONNECT,
        "bench": {"pairs": [mlp_endpoints], "methods": ["line", "line+align", "curve"],
                  "seeds": [0, 1]}}))
    shared = tmp_path / "shared"
    argv = ["bench", "--config", str(config), "--out", str(shared), "--json"]
    workers = [subprocess.Popen([sys.executable, "-m", "robust_mc", *argv], cwd=ROOT, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    results = []
    for worker in workers:
        code, out, err = finished(worker)
        assert code == 0, err
        results.append(json.loads(out))
    computed = [c for r in results for c in r["computed"]]
    assert len(computed) == len(set(computed)) == 4  # every cell, each by one worker
    assert results[0]["table"] == results[1]["table"]

    assert cli.main([*argv[:-3], "--out", str(tmp_path / "serial"), "--json"]) == 0
    serial = json.loads(capsys.readouterr().out)
    assert serial["table"] == results[0]["table"]


@pytest.mark.slow  # 30 s on a 2-core CPU: CI runs it in its end-to-end step
def test_a_two_rank_merge_gives_the_figures_of_one_process(mlp_endpoints, tmp_path, capsys):
    argv = ["merge", *mlp_endpoints, "--finetune-epochs", "1", "--eval-attack", "pgd:steps=3",
            "--eval-test-limit", "200", "--align-samples", "300", "--barrier-points", "3",
            "--device", "cpu", "--json"]
    two, one = tmp_path / "two.pt", tmp_path / "one.pt"
    code, out, err = finished(torchrun(*argv, "--out", str(two)))
    assert code == 0, err
    assert cli.main([*argv, "--out", str(one)]) == 0
    single = json.loads(capsys.readouterr().out)["contenders"]
    shared = json.loads(out)["contenders"]  # rank 0 alone prints
    assert [c["name"] for c in single] == [c["name"] for c in shared]
    for a, b in zip(single, shared, strict=True):  # the fine-tune's gradients summed in two
        for key in ("clean_loss", "robust_loss"):  # halves: float32 rounding, as for a curve
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["name"], key)
        for key in ("clean_acc", "robust_acc"):
            assert a[key] == pytest.approx(b[key], abs=100 / 200 + 1e-9), (a["name"], key)
    assert not list(tmp_path.glob("*.state.pt"))  # the fine-tune's state removed once written
