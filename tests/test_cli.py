"""The command line end to end: train, info, and every bad input giving one line and exit 2."""

import json
import subprocess
import sys

import pytest
import torch

from robust_mc import cli
from robust_mc.store.checkpoint_files import load_checkpoint

TRAIN = ["train", "--dataset", "synthetic", "--arch", "cnn", "--width", "0.25", "--epochs", "1",
         "--attack-steps", "2", "--eps", "4/255", "--eval-attack", "pgd:steps=2",
         "--batch-size", "64", "--device", "cpu"]


def run_cli(args, capsys):
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_then_info(tmp_path, capsys):
    path = tmp_path / "a.pt"
    code, out, _ = run_cli([*TRAIN, "--out", str(path), "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert 0 <= result["test"]["robust_acc"] <= result["test"]["clean_acc"] <= 100
    ckpt = load_checkpoint(path)
    assert ckpt.meta.dataset == "synthetic"
    assert ckpt.meta.config["attack"]["eps"] == pytest.approx(4 / 255)
    assert ckpt.meta.record["argv"][1] == "train"
    code, out, _ = run_cli(["info", str(path), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["arch"] == "cnn" and info["parameters"] > 0
    code, out, _ = run_cli(["info", str(path)], capsys)
    assert code == 0 and "normalization" in out


BAD = [
    (["--eps", "8"], "8/255"),
    (["--eps", "abc"], "not a number"),
    (["--eps", "8/0"], "division by zero"),
    (["--eps", "-0.1"], "non-negative"),
    (["--epochs", "0"], "optim.epochs"),
    (["--arch", "resnet1000"], "unknown architecture"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--eval-attack", "pgd:stesp=3"], "did you mean 'steps'"),
    (["--device", "tpu"], "--device"),
    (["--config", "missing.yaml"], "not found"),
    (["--schedule", "linear"], "invalid choice"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_train_inputs_exit_2_with_one_line(tmp_path, capsys, extra, message):
    out = tmp_path / "never.pt"
    try:
        code = cli.main([*TRAIN, *extra, "--out", str(out)])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()


SUBPROCESS = [BAD[5], pytest.param(*BAD[10], marks=pytest.mark.slow)]  # a library error and
# an argparse one, from a real process (5 s each on a 2-core CPU: the second in the slow step)


@pytest.mark.parametrize("extra, message", SUBPROCESS)
def test_bad_inputs_message_in_a_subprocess(tmp_path, extra, message):
    out = tmp_path / "never.pt"
    proc = subprocess.run([sys.executable, "-m", "robust_mc", *TRAIN, *extra, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in lines[0]
    assert not out.exists()


def test_bad_checkpoints_for_info(tmp_path, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"w": torch.zeros(1)}, tmp_path / "bare.pt")
    for path, message in ((tmp_path / "nope.pt", "not found"), (tmp_path / "empty.pt", "empty"),
                          (tmp_path / "bare.pt", "--arch")):
        code, _, err = run_cli(["info", str(path)], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(capsys):
    from robust_mc.errors import UserError

    with pytest.raises(UserError):
        cli.main(["info", "/nonexistent.pt", "--debug"])


def test_warmup_epochs_ramps_the_learning_rate_up(tmp_path, capsys):
    """--warmup-epochs takes effect and is recorded: a warmup far longer than the run keeps the
    rate below a thousandth of its peak, so the weights barely leave their (seeded) start."""
    def trained(name, *extra):
        path = tmp_path / f"{name}.pt"
        assert run_cli([*TRAIN, "--lr", "0.05", *extra, "--out", str(path)], capsys)[0] == 0
        return load_checkpoint(path)

    start, plain, warm = (trained("start", "--lr", "0"), trained("plain"),
                          trained("warm", "--warmup-epochs", "1000"))

    def moved(ckpt):
        return sum(float((ckpt.state_dict[k].float() - v.float()).norm())
                   for k, v in start.state_dict.items() if k.endswith("weight"))

    assert moved(warm) < 0.05 * moved(plain)
    assert warm.meta.training_recipe().warmup_epochs == 1000
