"""CUDA paths: the same invariants and pipelines on a GPU (``python -m pytest -m gpu``)."""

import pytest
import torch

from robust_mc.attacks import build_attack, pgd
from robust_mc.config import AlignConfig, AttackConfig, PathConfig, SpeedConfig
from robust_mc.core.curves import Curve
from robust_mc.evaluation.path import evaluate_path
from robust_mc.evaluation.robustness import evaluate_model
from robust_mc.pipelines.alignment import align_models
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.model_building import build_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def cuda():
    return Runtime.for_device("cuda", SpeedConfig(precision="auto"))


def test_pgd_on_cuda_stays_in_the_ball(cuda):
    from robust_mc.models import create_model

    model = cuda.prepare(create_model("resnet20", num_classes=10, in_channels=3,
                                      mean=(0.5,) * 3, std=(0.25,) * 3)).eval()
    x = torch.rand(64, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (64,), device="cuda")
    with cuda.autocast():
        adv = pgd(model, cuda.images(x), y, eps=8 / 255, step_size=2 / 255, steps=5,
                  generator=torch.Generator("cuda").manual_seed(0))
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_cuda_agrees_with_cpu(digits_endpoints, digits, runtime, cuda):
    cpu_model = build_model(digits_endpoints[0])
    gpu_model = cuda.prepare(build_model(digits_endpoints[0]))
    attack = build_attack("none", eps=0.1)
    on_cpu = evaluate_model(cpu_model, digits.test, attack, runtime)
    on_gpu = evaluate_model(gpu_model, digits.test.to("cuda"), attack, cuda)
    assert abs(on_cpu.clean_acc - on_gpu.clean_acc) <= 0.6
    robust = evaluate_model(gpu_model, digits.test.to("cuda"), build_attack("pgd:steps=5",
                                                                            eps=0.1), cuda)
    assert robust.robust_acc <= robust.clean_acc


def test_align_and_path_on_cuda(digits_endpoints, digits, cuda):
    a, b = (cuda.prepare(build_model(c)) for c in digits_endpoints)
    data = digits.to("cuda")
    result = align_models(a, b, data.train, AlignConfig(samples=800), AttackConfig(eps=0.1),
                          cuda)
    assert result.function_error < 1e-2  # bf16 autocast on the GPU
    curve = Curve.between("bezier", a, a.state_dict(), result.model_b.state_dict()).cuda()
    points, best = evaluate_path(curve, a, data, PathConfig(points=3, attack="pgd:steps=3"),
                                 AttackConfig(eps=0.1, steps=3), cuda, Reporter(quiet=True), "t")
    assert len(points) == 3 and best is not None
    assert all(p.test.robust_acc <= p.test.clean_acc for p in points)


def test_connect_resumed_on_cuda_ends_where_an_uninterrupted_run_does(digits_endpoints, tmp_path,
                                                                       monkeypatch, capsys):
    """Bit for bit with --deterministic; without it, the difference is float rounding carried
    through training (printed)."""
    from robust_mc_testkit import StopAfter

    from robust_mc import cli
    from robust_mc.store.checkpoint import save_checkpoint
    from robust_mc.store.checkpoint_files import read_torch_file

    paths = [str(save_checkpoint(c, tmp_path / f"e{i}.pt")) for i, c in
             enumerate(digits_endpoints)]
    args = ["connect", *paths, "--epochs", "3", "--attack-steps", "3", "--points", "3",
            "--eval-attack", "pgd:steps=3", "--bn-images", "300", "--align-samples", "300",
            "--device", "cuda", "--json"]
    differences = {}
    try:
        for flags in ([], ["--deterministic"]):
            name = "deterministic" if flags else "default"
            reference, resumed = tmp_path / f"ref-{name}", tmp_path / f"run-{name}"
            assert cli.main([*args, *flags, "--out", str(reference)]) == 0
            stop = StopAfter(checks=30)
            monkeypatch.setattr("robust_mc.commands.connect.StopSignals", lambda s=stop: s)
            assert cli.main([*args, *flags, "--out", str(resumed)]) == 130
            monkeypatch.undo()
            assert cli.main([*args, *flags, "--out", str(resumed)]) == 0
            bends = [read_torch_file(d / "curve.pt")["curve"]["bends"]
                     for d in (reference, resumed)]
            differences[name] = float((bends[0] - bends[1]).abs().max())
    finally:
        torch.use_deterministic_algorithms(False)
    capsys.readouterr()
    print(f"max |bend difference| resumed vs uninterrupted on CUDA: {differences}")
    assert differences["deterministic"] == 0.0
    assert differences["default"] < 1e-2


def test_pam_and_ensemble_on_cuda(digits_endpoints, tmp_path, capsys):
    import json

    from robust_mc import cli
    from robust_mc.store.checkpoint import save_checkpoint

    paths = [str(save_checkpoint(c, tmp_path / f"e{i}.pt")) for i, c in
             enumerate(digits_endpoints)]
    run = tmp_path / "run"
    assert cli.main(["connect", *paths, "--pam", "--pam-outer", "1", "--epochs", "2",
                     "--attack-steps", "2", "--points", "3", "--eval-attack", "pgd:steps=2",
                     "--bn-images", "300", "--device", "cuda", "--out", str(run),
                     "--json"]) == 0
    capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["pam"]["updates"]) == 1
    assert cli.main(["ensemble", str(run), "-k", "2", "--device", "cuda", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert all(r["robust_acc"] <= r["clean_acc"] for r in result["test"].values())
