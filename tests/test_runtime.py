"""The runtime: device selection and the process-wide CPU settings a run makes."""

import platform
import sys

import pytest
import torch

from robust_mc.config import SpeedConfig
from robust_mc.errors import UserError
from robust_mc.run.runtime import (
    Runtime,
    configure_process,
    reuse_freed_memory,
    seeded,
    select_device,
)


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="use auto, cpu or cuda"):
        select_device("tpu")


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt tuning is glibc's")
def test_freed_memory_is_kept_for_reuse():
    assert reuse_freed_memory()
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB: served from the heap now, the same values
    assert float(x.sum()) == x.numel()


def test_the_process_set_up_takes_threads_from_the_config_or_the_launcher(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        configure_process(SpeedConfig(reuse_memory=False))
        assert torch.get_num_threads() == 1
        configure_process(SpeedConfig(threads=2, reuse_memory=False))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_runs_leave_the_global_random_streams_as_they_found_them(tiny_endpoint, digits, runtime):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ckpt = tiny_endpoint(**{"optim.seed": 5, "eval.attack": "pgd:steps=1"})
    assert torch.equal(torch.get_rng_state(), state)
    with seeded(5):
        expected = torch.rand(3)
    with seeded(5):
        assert torch.equal(torch.rand(3), expected)
    assert torch.equal(torch.get_rng_state(), state) and ckpt.meta.metrics


class SteppedClock:
    """A timer whose float32 passes take ``fp32`` seconds and bfloat16 passes ``bf16`` (the
    measurement alternates float32, bfloat16): the rule is tested, not this CPU's speed."""

    def __init__(self, fp32: float, bf16: float) -> None:
        self.durations = [fp32, bf16]
        self.now, self.calls = 0.0, 0

    def __call__(self) -> float:
        if self.calls % 2:  # the end of a pass
            self.now += self.durations[(self.calls // 2) % 2]
        self.calls += 1
        return self.now


@pytest.mark.parametrize("fp32, bf16, expected", [(2.0, 1.0, torch.bfloat16),
                                                  (1.1, 1.0, None), (1.0, 2.0, None)])
def test_auto_takes_bfloat16_where_the_network_measured_faster_in_it(fp32, bf16, expected):
    from robust_mc.models import create_model
    from robust_mc.run.precision import measured_choice

    model = create_model("cnn", num_classes=10, in_channels=1, mean=[0.5], std=[0.5]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice = measured_choice(model, torch.rand(2, 1, 8, 8), timer=SteppedClock(fp32, bf16))
    assert choice.dtype == expected and "measured" in choice.why
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_choice_is_measured_once_per_network_and_machine(monkeypatch, tmp_path):
    from robust_mc.models import create_model
    from robust_mc.run import precision

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = []
    monkeypatch.setattr(precision, "measured_choice", lambda model, example: measured.append(
        1) or precision.Choice(torch.bfloat16, "measured 2.00x faster than float32 here"))
    model = create_model("cnn", num_classes=10, in_channels=1, mean=[0.5], std=[0.5])
    x = torch.rand(2, 1, 8, 8)
    first, second = (precision.calibrated_choice(model, x) for _ in range(2))
    assert measured == [1] and first.dtype == second.dtype == torch.bfloat16
    assert second.why.endswith("(cached)")
    wider = create_model("cnn", num_classes=10, in_channels=1, mean=[0.5], std=[0.5], width=2)
    precision.calibrated_choice(wider, x)  # another network: measured again
    assert measured == [1, 1]
    (tmp_path / "robust-mc" / "precision.json").write_text("[not a table")  # a torn cache
    assert precision.calibrated_choice(model, x).dtype == torch.bfloat16 and len(measured) == 3


@pytest.mark.parametrize("amx, avx512_bf16, measures", [(True, False, True), (False, True, True),
                                                        (False, False, False)])
def test_auto_measures_only_where_the_cpu_computes_bfloat16(monkeypatch, amx, avx512_bf16,
                                                            measures):
    from robust_mc.run import precision
    from robust_mc.run import runtime as rt

    monkeypatch.setattr(rt, "cpu_features", lambda: {"amx": amx, "avx512_bf16": avx512_bf16,
                                                     "capability": "AVX512"})
    monkeypatch.setattr(precision, "calibrated_choice", lambda model, example: precision.Choice(
        torch.bfloat16, "measured 1.50x faster than float32 here"))
    chosen = rt.Runtime(torch.device("cpu"), SpeedConfig(precision="auto"))
    assert chosen.dtype is None  # float32 until the network is measured
    chosen.settle_precision(torch.nn.Linear(4, 2), torch.rand(1, 4))
    assert chosen.dtype == (torch.bfloat16 if measures else None)
    assert ("1.50x faster" in chosen.summary()) == measures
    assert ("emulates" in chosen.summary()) != measures
    fixed = rt.Runtime(torch.device("cpu"), SpeedConfig(precision="float32"))
    fixed.settle_precision(torch.nn.Linear(4, 2), torch.rand(1, 4))
    assert fixed.dtype is None  # only auto is decided by measuring


def test_bfloat16_finds_the_attacks_and_float32_scores_them(digits_endpoints, digits):
    """Under --precision bfloat16 the BN statistics and both logits are those of float32: the
    clean figures and the recomputed statistics are identical, only the adversarial images may
    differ (and robust accuracy stays at most clean accuracy)."""
    from robust_mc.attacks import build_attack
    from robust_mc.config import AttackConfig
    from robust_mc.evaluation.path import recompute_batchnorm
    from robust_mc.evaluation.robustness import evaluate_seeded
    from robust_mc.run.runtime import Runtime
    from robust_mc.store.model_building import build_model

    model = build_model(digits_endpoints[0])
    pgd = build_attack("pgd:steps=3", eps=0.1)
    figures, statistics = {}, {}
    for precision in ("float32", "bfloat16"):
        runtime = Runtime(torch.device("cpu"), SpeedConfig(precision=precision))
        recompute_batchnorm(model, digits.train, images=500, data="clean",
                            attack=AttackConfig(eps=0.1, steps=2), runtime=runtime)
        statistics[precision] = [b.clone() for name, b in model.named_buffers()
                                 if name.endswith("running_mean")]
        figures[precision] = evaluate_seeded(model, digits.test, pgd, runtime, 128, seed=0)
    assert statistics["float32"] and all(
        torch.equal(a, b) for a, b in zip(statistics["float32"], statistics["bfloat16"],
                                          strict=True))
    fp32, bf16 = figures["float32"], figures["bfloat16"]
    assert (bf16.clean_loss, bf16.clean_acc) == (fp32.clean_loss, fp32.clean_acc)
    assert bf16.robust_acc <= bf16.clean_acc and abs(bf16.robust_acc - fp32.robust_acc) < 5


@pytest.mark.parametrize("features, precision, noted", [
    ({"amx": False, "avx512_bf16": False}, "bfloat16", True),   # AVX2 only: emulated
    ({"amx": False, "avx512_bf16": True}, "bfloat16", False),   # native bfloat16 instructions
    ({"amx": True, "avx512_bf16": True}, "bfloat16", False),
    ({"amx": False, "avx512_bf16": False}, "float32", False),
])
def test_asking_for_bfloat16_on_a_cpu_that_emulates_it_says_so(monkeypatch, features,
                                                                precision, noted):
    from robust_mc.run import runtime as rt

    monkeypatch.setattr(rt, "cpu_features", lambda: {**features, "capability": "AVX2"})
    chosen = rt.Runtime(torch.device("cpu"), SpeedConfig(precision=precision))
    note = rt.emulated_bfloat16_note(chosen.device, chosen.dtype)
    assert (note is not None) == noted
    if noted:
        assert "--precision auto" in note and "slower" in note


@pytest.mark.parametrize("command", ["align", "layers"])
def test_align_and_layers_settle_auto_precision_and_say_it(command, tiny_endpoint_files,
                                                            tmp_path, capsys):
    """``--precision auto`` is decided (by measurement where the CPU has native bfloat16, else
    float32 with the reason) before align and layers work, and their first line says which."""
    from robust_mc import cli

    a, b = (str(tiny_endpoint_files[k]) for k in ("a", "b"))
    extra = {"align": ["--align-samples", "100", "--out", str(tmp_path / "b.pt")],
             "layers": ["--points", "3", "--samples", "100", "--align-samples", "100",
                        "--out", str(tmp_path / "layers")]}[command]
    assert cli.main([command, a, b, "--precision", "auto", "--device", "cpu", *extra]) == 0
    said = capsys.readouterr()
    out = said.out + said.err  # the run's lines go to stderr
    assert "not measured yet" not in out and ("bfloat16" in out or "float32" in out)


class ViewsItsMaps(torch.nn.Module):
    """A convolution then ``.view()`` of its maps, as some published networks flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        out = self.conv(x)
        return self.fc(out.view(out.shape[0], -1))


def test_a_network_that_cannot_run_channels_last_runs_contiguous_and_says_why():
    runtime = Runtime(torch.device("cpu"), SpeedConfig(precision="float32"))
    model = runtime.settle(ViewsItsMaps(), torch.rand(1, 3, 8, 8))
    assert not runtime.channels_last and ".view()" in runtime.summary()
    assert model.conv.weight.is_contiguous()  # prepared in the layout it can run in
    x = runtime.images(torch.rand(2, 3, 8, 8))
    assert x.is_contiguous() and model(x).shape == (2, 2)
    plain = Runtime(torch.device("cpu"), SpeedConfig(precision="float32"))
    plain.settle(torch.nn.Conv2d(3, 4, 3), torch.rand(1, 3, 8, 8))
    assert plain.channels_last and "contiguous" not in plain.summary()


def test_a_network_that_cannot_take_the_data_is_one_line_before_any_work():
    runtime = Runtime(torch.device("cpu"), SpeedConfig(precision="float32"))
    with pytest.raises(UserError, match=r"cannot take the data's inputs \(3x16x16\): .*--arch"):
        runtime.settle(ViewsItsMaps(), torch.rand(1, 3, 16, 16))  # made for 8x8 images
