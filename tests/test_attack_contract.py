"""One attack contract: every training-attack setting a command accepts takes effect, and the
same settings and seed give the same adversarial examples."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from robust_mc import cli
from robust_mc.attacks import build_attack
from robust_mc.config import AttackConfig


@pytest.mark.parametrize("field, value", [("eps", 0.1), ("step_size", 0.01), ("steps", 3),
                                          ("norm", "l2"), ("random_start", False),
                                          ("mode", "eval")])
def test_the_built_attack_honours_every_setting(field, value):
    config = dataclasses.replace(AttackConfig(), **{field: value})
    attack = build_attack(config)
    built = {"step_size": attack.step_size, "eps": attack.eps, "steps": attack.steps,
             "norm": attack.norm, "random_start": attack.random_start, "mode": attack.mode}
    assert built[field] == value
    assert build_attack(config, mode="train").mode == "train"  # a procedure's own mode


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


def test_a_registered_training_attack_is_offered_by_the_flag_and_used_by_training(runtime):
    from robust_mc.attacks import training
    from robust_mc.config import TrainRunConfig, build_config
    from robust_mc.models import create_model
    from robust_mc.train.tasks import EndpointTask

    seen = []

    class Shift:  # a deterministic stand-in: every pixel moved by eps, clipped to [0, 1]
        def __init__(self, eps: float, mode: str) -> None:
            self.eps, self.mode = eps, mode

        def __call__(self, model, x, y, generator=None, *, forward=None, loss_fn=None):
            seen.append(self.mode)
            return (x + self.eps).clamp(0, 1)

    with training.TRAINING_ATTACKS.scoped():
        @training.register_training_attack("test-shift")
        def _shift(config, mode):
            return Shift(config.eps, mode)

        args = cli.build_parser().parse_args(["train", "--attack-method", "test-shift"])
        cfg = build_config(TrainRunConfig, None, {"attack.method": args.__dict__["attack.method"],
                                                  "attack.mode": "eval"})
        model = create_model("mlp", num_classes=3, in_channels=1, mean=[0.0], std=[1.0],
                             image_size=4)
        task = EndpointTask(model, model, cfg.attack, runtime)
        loss, _ = task(torch.rand(5, 1, 4, 4), torch.zeros(5, dtype=torch.long))
        assert seen == ["eval"] and loss.requires_grad
