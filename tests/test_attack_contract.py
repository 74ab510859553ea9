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


# every evaluation attack at its cheapest settings; the contract below covers the whole registry
QUICK_SPECS = {"none": "none", "pgd": "pgd:steps=2", "ta-pgd": "ta-pgd:steps=2",
               "fgsm": "fgsm", "apgd-ce": "apgd-ce:steps=2", "apgd-dlr": "apgd-dlr:steps=2",
               "apgd-t": "apgd-t:steps=2", "autoattack": "autoattack:steps=2",
               "square": "square:queries=10", "cw": "cw:steps=2",
               "pyautoattack": "pyautoattack"}
UNBOUNDED = {"cw"}  # Carlini-Wagner minimises an L2 norm instead of keeping to eps


def test_the_contract_covers_every_registered_evaluation_attack():
    from robust_mc.attacks import list_attacks

    assert set(QUICK_SPECS) == set(list_attacks()), "add the new attack to QUICK_SPECS"


# the two AutoAttacks take 6-10 s each even at their cheapest: CI's slow step runs them
SLOW = {"autoattack", "pyautoattack"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in sorted(QUICK_SPECS)])
def test_every_evaluation_attack_stays_in_the_ball_and_the_box_and_restores_the_mode(name):
    """Adversarial images within eps of the clean ones (but for an L2 minimiser) and in [0, 1],
    no parameter gradient left behind, and the model in the mode it was given (a model in
    training mode comes back in it, its batch-norm statistics untouched)."""
    from robust_mc.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn", num_classes=10, in_channels=1, mean=(0.3,), std=(0.4,),
                         width=0.5)
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # correctly classified: every attack has work to do
    eps = 8 / 255
    for training in (False, True):
        model.train(training)
        statistics = {k: v.clone() for k, v in model.state_dict().items()}
        adv = build_attack(QUICK_SPECS[name], eps=eps, num_classes=10)(model, x, y)
        assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        if name not in UNBOUNDED:
            assert (adv - x).abs().max() <= eps + 1e-6  # float32 rounding of x + delta
        assert model.training is training
        assert all(torch.equal(v, statistics[k]) for k, v in model.state_dict().items())
        assert all(p.grad is None for p in model.parameters())
