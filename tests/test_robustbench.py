"""RobustBench's models (the ``robustbench`` extra): the architecture families of its CIFAR-10
Linf zoo trace, permute and align, zoo entries resolve by name, and two checkpoints saved the way
RobustBench saves them connect end to end. Nothing is downloaded: weights are random."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from robust_mc_testkit import assert_units_separable

from robust_mc import cli
from robust_mc.core.align import align
from robust_mc.core.permutation import permute_model, random_permutation, trace_permutation_spec
from robust_mc.errors import UserError
from robust_mc.models import create_model
from robust_mc.models.robustbench import import_robustbench

try:
    import_robustbench()
except UserError:
    pytest.skip("robustbench is not installed (pip install 'robust-mc[robustbench]')",
                allow_module_level=True)

ARCHITECTURES = "robustbench.model_zoo.architectures"
FAMILIES = {  # small members of the families behind the CIFAR-10 Linf zoo entries
    "WideResNet": (f"{ARCHITECTURES}.wide_resnet:WideResNet", {"depth": 16, "widen_factor": 1}),
    "DMWideResNet": (f"{ARCHITECTURES}.dm_wide_resnet:DMWideResNet", {"depth": 16, "width": 1}),
    "DMPreActResNet": (f"{ARCHITECTURES}.dm_wide_resnet:DMPreActResNet", {"depth": 18}),
    "PreActResNet18": (f"{ARCHITECTURES}.resnet:PreActResNet18", {}),
}


def build(arch: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, in_channels=3, mean=[0.0], std=[1.0],
                         kwargs=kwargs)
    with torch.no_grad():  # batch-norm statistics as a trained network has them
        model.train()
        for _ in range(2):
            model(torch.rand(16, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_family_traces_permutes_and_is_recovered(family, runtime):
    model = build(*FAMILIES[family])
    # 64 images: PreActResNet18's last block has 512 units on 4x4 positions, and 32 images (512
    # samples) left some of them tied with others
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(64, dtype=torch.long)
    spec = trace_permutation_spec(model, x)
    assert_units_separable(model, spec, [(x, labels)], runtime)
    shuffled = copy.deepcopy(model)
    permute_model(shuffled, spec, random_permutation(spec, torch.Generator().manual_seed(2)))
    with torch.no_grad():
        # the same sums in a permuted order, through a deep network: float32 rounding
        torch.testing.assert_close(shuffled(x), model(x), atol=1e-4, rtol=1e-4)
    result = align(model, shuffled, [(x, labels)], spec=spec, runtime=runtime)
    permute_model(shuffled, spec, result.perm)
    for key, value in model.state_dict().items():
        assert torch.equal(shuffled.state_dict()[key], value), key


def test_zoo_entries_resolve_by_name_and_typos_are_named():
    model = create_model("robustbench:cifar10/Linf/Carmon2019Unlabeled", num_classes=10,
                         in_channels=3, mean=[0.0], std=[1.0])
    assert sum(p.numel() for p in model.parameters()) > 30_000_000  # WRN-28-10
    with pytest.raises(UserError, match="did you mean 'Carmon2019Unlabeled'"):
        create_model("robustbench:cifar10/Linf/Carmon2019Unlabelled", num_classes=10,
                     in_channels=3, mean=[0.0], std=[1.0])


def test_two_robustbench_checkpoints_connect_end_to_end(tmp_path, capsys):
    arch, kwargs = FAMILIES["WideResNet"]
    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = create_model(arch, num_classes=4, in_channels=3, mean=[0.0], std=[1.0],
                             kwargs=kwargs)
        state = {f"module.{k}": v for k, v in model.net.state_dict().items()}
        files.append(str(tmp_path / f"e{seed}.pt"))
        torch.save({"state_dict": state}, files[-1])  # as RobustBench's checkpoints are
    given = ["--arch", arch, "--model-kwargs", json.dumps(kwargs), "--dataset", "synthetic:32",
             "--device", "cpu"]
    assert cli.main(["connect", *files, *given, "--epochs", "1", "--batch-size", "64",
                     "--points", "3", "--attack-steps", "1", "--eval-attack", "none",
                     "--bn-images", "64", "--align-samples", "128", "--val-limit", "64",
                     "--eval-test-limit", "64", "--out", str(tmp_path / "run"), "--json"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["curve"]["aligned"] and "best" in summary
    assert cli.main(["info", str(tmp_path / "run" / "best.pt"), "--arch", arch]) == 0


def test_a_zoo_entry_as_an_endpoint_needs_the_model_dir(capsys):
    assert cli.main(["info", "robustbench:cifar10/Linf/Carmon2019Unlabeled"]) == 2
    assert "--model-dir DIR" in capsys.readouterr().err


ROBUSTBENCH_LOAD = """
import sys, json, torch
from robust_mc.models.robustbench import import_robustbench
module = import_robustbench("robustbench.model_zoo.architectures.wide_resnet")
record = json.load(open(sys.argv[1] + ".json"))
model = module.WideResNet(num_classes=4, **record["model_kwargs"])
model.load_state_dict(torch.load(sys.argv[1], weights_only=True)["state_dict"])
x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
print(json.dumps(model.eval()(x).tolist()))
"""


@pytest.mark.slow  # 7 s on a 2-core CPU (a WideResNet): CI runs it in its slow step
def test_a_robustbench_model_exports_as_robustbench_keeps_it(tmp_path, capsys):
    import subprocess
    import sys

    from robust_mc.store.checkpoint import checkpoint_from_model, save_checkpoint
    from robust_mc.store.model_building import build_model

    arch, kwargs = FAMILIES["WideResNet"]
    model = create_model(arch, num_classes=4, in_channels=3, mean=[0.0], std=[1.0],
                         kwargs=kwargs).eval()
    ckpt = checkpoint_from_model(model, arch, {"num_classes": 4, "in_channels": 3}, {},
                                 model_kwargs=kwargs)
    save_checkpoint(ckpt, tmp_path / "m.pt")
    out = tmp_path / "m_robustbench.pt"
    assert cli.main(["export", str(tmp_path / "m.pt"), "--arch", arch, "--format",
                     "robustbench", "-o", str(out)]) == 0
    fresh = subprocess.run([sys.executable, "-c", ROBUSTBENCH_LOAD, str(out)],
                           capture_output=True, text=True, check=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = build_model(ckpt).eval()(x)
    assert torch.allclose(torch.tensor(json.loads(fresh.stdout)), expected, atol=1e-6)


def test_two_zoo_entries_of_one_architecture_make_a_pair(tmp_path):
    from robust_mc.pipelines.pair import load_pair
    from robust_mc.store.checkpoint import LoadOptions

    names = ("Carmon2019Unlabeled", "Wang2020Improving")  # both WRN-28-10 (sub_block1)
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        model = create_model(f"robustbench:cifar10/Linf/{name}", num_classes=10,
                             in_channels=3, mean=[0.0], std=[1.0])
        folder = tmp_path / "cifar10" / "Linf"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.net.state_dict().items()}},
                   folder / f"{name}.pt")
    pair = load_pair(*(f"robustbench:cifar10/Linf/{n}" for n in names),
                     LoadOptions(model_dir=str(tmp_path)))
    assert pair.a.arch.endswith(names[0]) and pair.b.arch.endswith(names[1])
    with pytest.raises(UserError, match="different architectures"):
        torch.manual_seed(0)
        other = create_model("robustbench:cifar10/Linf/Zhang2019Theoretically", num_classes=10,
                             in_channels=3, mean=[0.0], std=[1.0])
        torch.save({"state_dict": other.net.state_dict()},
                   tmp_path / "cifar10" / "Linf" / "Zhang2019Theoretically.pt")
        load_pair(f"robustbench:cifar10/Linf/{names[0]}",
                  "robustbench:cifar10/Linf/Zhang2019Theoretically",
                  LoadOptions(model_dir=str(tmp_path)))


def test_eval_reads_a_zoo_entry_from_the_model_dir(tmp_path, capsys):
    arch = "robustbench:cifar10/Linf/Carmon2019Unlabeled"
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, in_channels=3, mean=[0.0], std=[1.0])
    folder = tmp_path / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.net.state_dict().items()}},
               folder / "Carmon2019Unlabeled.pt")
    assert cli.main(["eval", arch, "--model-dir", str(tmp_path), "--dataset", "synthetic:32",
                     "--model-kwargs", "{num_classes: 10}", "--eval-attack", "none",
                     "--eval-test-limit", "8", "--device", "cpu", "--json"]) == 2
    assert "10 classes but synthetic has 4" in capsys.readouterr().err  # read, then checked


ONE_ARCHITECTURE = ["Rebuffi2021Fixing_R18_ddpm", "Rade2021Helper_R18_extra",
                    "Gowal2021Improving_R18_ddpm_100m"]  # DMPreActResNet-18 in RobustBench's zoo


@pytest.mark.slow  # about a minute on a 2-core CPU (three PreActResNet-18s): CI's slow step
def test_robustbench_zoo_entries_merge_end_to_end(tmp_path, capsys):
    """Three zoo entries of one architecture, by name, their files where RobustBench keeps
    them: merged and measured beside each member. The network flattens with ``.view()``, so
    the run says it takes the contiguous layout instead of failing in channels-last."""
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    for seed, name in enumerate(ONE_ARCHITECTURE):
        model = build(f"robustbench:cifar10/Linf/{name}", {})
        torch.manual_seed(seed)
        with torch.no_grad():  # another member: weights moved apart
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.net.state_dict().items()}},
                   folder / f"{name}.pt")
    out = tmp_path / "merged.pt"
    assert cli.main(["merge", *(f"robustbench:cifar10/Linf/{n}" for n in ONE_ARCHITECTURE),
                     "--model-dir", str(tmp_path / "models"), "--dataset", "synthetic:32",
                     "--train-limit", "96", "--align-samples", "64", "--bn-images", "64",
                     "--val-limit", "32", "--eval-test-limit", "32", "--eval-attack",
                     "pgd:steps=1", "--barrier-points", "3", "--device", "cpu", "-o", str(out),
                     "--json"]) == 0
    names = [c["name"] for c in json.loads(capsys.readouterr().out)["contenders"]]
    assert sum(n.startswith("member") for n in names) == 3
    assert {"ensemble of 3", "merge"} <= set(names)
    assert cli.main(["info", str(out)]) == 0
