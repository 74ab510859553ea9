"""One attack contract: every training-attack setting a command accepts takes effect, and the
same settings and seed give the same adversarial examples."""

from __future__ import annotations

import dataclasses
import json

import pytest

import cli
from robust_mc.config import AttackConfig


@pytest.mark.parametrize("field, value", [("eps", 0.1), ("step_size", 0.01), ("steps", 3),
                                          ("norm", "l2"), ("random_start", False),
                                          ("mode", "eval")])
def test_the_built_attack_honours_every_setting(field, value):
    config = dataclasses.replace(AttackConfig(), **{field: value})
    attack = config.build()
    built = {"step_size": attack.step_size, "eps": attack.eps, "steps": attack.steps,
             "norm": attack.norm, "random_start": attack.random_start, "mode": attack.mode}
    assert built[field] == value
    assert config.build(mode="train").mode == "train"  # a procedure's own mode


def adversarial_alignment(files, capsys, *extra: str) -> dict:
    argv = ["align", str(files["a"]), str(files["b"]), "--align-inputs", "adversarial",
            "--align-samples", "300", "--attack-steps", "2", "--eps", "0.1", "--device", "cpu",
            "--json", *extra]
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_align_attack_mode_takes_effect_and_a_seed_repeats(tiny_endpoint_files, tmp_path,
                                                          capsys):
    out = ["--out", str(tmp_path / "b.pt")]
    train = adversarial_alignment(tiny_endpoint_files, capsys, "--attack-mode", "train", *out)
    again = adversarial_alignment(tiny_endpoint_files, capsys, "--attack-mode", "train", *out)
    evaluation = adversarial_alignment(tiny_endpoint_files, capsys, "--attack-mode", "eval", *out)
    keys = ("mean_corr_before", "mean_corr_after")
    assert [train[k] for k in keys] == [again[k] for k in keys]
    assert train["mean_corr_before"] != evaluation["mean_corr_before"]
