"""Robust ensembles from a path: one model, attacked as one model, selected greedily."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from robust_mc import cli
from robust_mc.attacks import build_attack
from robust_mc.evaluation.ensemble import greedy_select
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.models.ensemble import Ensemble
from robust_mc.store.checkpoint import save_checkpoint
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_model, build_network


@pytest.fixture(scope="module")
def run_dir(digits_endpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    paths = [str(save_checkpoint(c, root / f"e{i}.pt")) for i, c in enumerate(digits_endpoints)]
    run = root / "run"
    assert cli.main(["connect", *paths, "--out", str(run), "--epochs", "2", "--attack-steps",
                     "2", "--points", "5", "--eval-attack", "pgd:steps=3", "--bn-images", "300",
                     "--align-samples", "300", "--val-limit", "150", "--eval-test-limit",
                     "300", "--device", "cpu", "--json"]) == 0
    return run


def test_an_ensemble_of_a_model_with_itself_is_that_model(digits_endpoints, digits, runtime):
    model = runtime.prepare(build_model(digits_endpoints[0]))
    attack = build_attack("pgd:steps=5", eps=0.1, num_classes=10)
    test = digits.test.take(300)
    alone = evaluate_seeded(model, test, attack, runtime, 128, seed=3)
    twice = evaluate_seeded(Ensemble([model, model]), test, attack, runtime, 128, seed=3)
    assert twice == alone
    x = test.images[:8].float()
    with torch.no_grad():
        probs = Ensemble([model, model], "probs").eval()(x)
        torch.testing.assert_close(probs, F.log_softmax(model.eval()(x), -1))


def test_greedy_selection_starts_with_the_most_robust_candidate(digits_endpoints, digits,
                                                                 runtime):
    models = [runtime.prepare(build_model(c)) for c in digits_endpoints]
    attack = build_attack("pgd:steps=3", eps=0.1, num_classes=10)
    val = digits.val.take(200)
    alone = [evaluate_seeded(m, val, attack, runtime, 128, seed=0) for m in models]
    selection = greedy_select(models, 2, val, attack, runtime, batch_size=128, seed=0)
    first = max(range(2), key=lambda i: (alone[i].robust_acc, alone[i].clean_acc))
    assert selection.indices[0] == first and sorted(selection.indices) == [0, 1]
    assert selection.rounds[0]["val"]["robust_acc"] == alone[first].robust_acc
    with pytest.raises(ValueError):
        greedy_select(models, 3, val, attack, runtime, batch_size=128, seed=0)


def test_ensemble_command_reports_what_attacking_the_saved_module_gives(run_dir, digits,
                                                                        runtime, capsys):
    out = run_dir / "ens"
    assert cli.main(["ensemble", str(run_dir), "-k", "2", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["members_t"]) == 2 and set(printed["test"]) == {
        "ensemble", "endpoint a", "endpoint b", "a + b"}
    for result in printed["test"].values():
        assert result["robust_acc"] <= result["clean_acc"]
    ckpt = load_checkpoint(out / "ensemble.pt", allow_ensemble=True)
    module = runtime.prepare(build_network(ckpt))
    assert isinstance(module, Ensemble) and len(module.members) == 2
    saved = json.loads((out / "ensemble.json").read_text())
    attack = build_attack(saved["eval_attack"], eps=saved["eps"], num_classes=10)
    direct = evaluate_seeded(module, digits.test.take(300), attack, runtime,
                             saved["config"]["path"]["batch_size"], seed=0)
    assert direct.as_dict() == printed["test"]["ensemble"]
    assert cli.main(["eval", str(out / "ensemble.pt"), "--eval-test-limit", "300",
                     "--eval-attack", saved["eval_attack"], "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["members"] == 2 and again["test"] == printed["test"]["ensemble"]
    assert cli.main(["info", str(out / "ensemble.pt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["members"] == 2 and info["kind"] == "ensemble"


def test_an_ensemble_is_not_an_endpoint(run_dir, capsys):
    ens = run_dir / "ens2"
    assert cli.main(["ensemble", str(run_dir), "-k", "1", "--out", str(ens), "--json"]) == 0
    capsys.readouterr()
    code = cli.main(["connect", str(ens / "ensemble.pt"), str(ens / "ensemble.pt"),
                     "--out", str(run_dir / "never")])
    assert code == 2 and "is an ensemble of 1 networks" in capsys.readouterr().err
    assert cli.main(["ensemble", str(run_dir), "-k", "9"]) == 2
    assert "-k 9" in capsys.readouterr().err


def test_an_ensemble_of_model_files_is_chosen_on_validation_and_reads_back(
        tiny_endpoint_files, tiny_endpoint, tmp_path, digits, runtime, capsys):
    third = save_checkpoint(tiny_endpoint(**{"optim.seed": 2}), tmp_path / "c.pt")
    files = [str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]), str(third)]
    out = tmp_path / "ens"
    assert cli.main(["ensemble", *files, "-k", "2", "--eval-test-limit", "200",
                     "--eval-attack", "pgd:steps=2", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["members"]) == 2 and set(printed["members"]) <= set(files)
    assert set(printed["test"]) == {"ensemble", *files, "all 3"}
    assert printed["selection"][0]["added"] == printed["members"][0]
    ckpt = load_checkpoint(out / "ensemble.pt", allow_ensemble=True)
    module = runtime.prepare(build_network(ckpt))
    assert isinstance(module, Ensemble) and len(module.members) == 2
    attack = build_attack("pgd:steps=2", eps=ckpt.meta.eps, num_classes=10)
    direct = evaluate_seeded(module, digits.test.take(200), attack, runtime, 250, seed=0)
    assert direct.as_dict() == printed["test"]["ensemble"]  # the file is what was measured


def test_an_ensemble_chooses_among_a_run_s_points_and_model_files(run_dir, tiny_endpoint,
                                                                  digits_endpoints, tmp_path,
                                                                  capsys):
    other = save_checkpoint(digits_endpoints[1], tmp_path / "other.pt")
    out = tmp_path / "ens"
    assert cli.main(["ensemble", str(run_dir), str(other), "-k", "2", "--out", str(out),
                     "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    labels = {f"run t={t:.2f}" for t in (0.0, 0.25, 0.5, 0.75, 1.0)} | {str(other)}
    assert set(printed["members"]) <= labels and len(printed["members"]) == 2
    assert set(printed["test"]) == {"ensemble", "run t=0.00", "run t=1.00", str(other)}
    for result in printed["test"].values():
        assert result["count"] == 300  # the run's settings: its test images
    assert load_checkpoint(out / "ensemble.pt", allow_ensemble=True).members is not None
