"""The runtime: device selection and the process-wide CPU settings a run makes."""

import platform
import sys

import pytest
import torch

from robust_mc.config import SpeedConfig
from robust_mc.errors import UserError
from robust_mc.run.runtime import configure_process, reuse_freed_memory, seeded, select_device


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


@pytest.mark.parametrize("amx, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_precision_takes_bfloat16_on_a_cpu_with_amx_tiles_only(monkeypatch, amx, expected):
    from robust_mc.run import runtime as rt

    monkeypatch.setattr(rt, "cpu_features", lambda: {"amx": amx, "avx512_bf16": True,
                                                     "capability": "AVX512"})
    chosen = rt.Runtime(torch.device("cpu"), SpeedConfig(precision="auto"))
    assert chosen.dtype == expected
    assert ("AMX tiles" in chosen.summary()) and (("no AMX" in chosen.summary()) != amx)
    assert chosen.describe()["precision"] == str(expected or torch.float32)


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
