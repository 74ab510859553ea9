"""bench: a grid of connect runs, cached per cell, aggregated in the paper's form."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from robust_mc_testkit import CleanOnlyVerification

from robust_mc import cli
from robust_mc.errors import UserError
from robust_mc.pipelines.bench import parse_method
from robust_mc.store.checkpoint import save_checkpoint

FAST_CONNECT = {"attack": {"eps": 0.1, "steps": 2},
                "optim": {"epochs": 2, "batch_size": 64, "lr": 0.05, "schedule": "cosine"},
                "align": {"samples": 300},
                "path": {"points": 3, "attack": "pgd:steps=2", "bn_images": 300,
                         "val_limit": 150, "test_limit": 300}}


def write_config(path, **bench):
    path.write_text(yaml.safe_dump({"data": {"dataset": "digits"}, "device": "cpu",
                                    "bench": bench, "connect": FAST_CONNECT}))
    return path


def run_bench(config, out, capsys) -> dict:
    assert cli.main(["bench", "--config", str(config), "--out", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_rerun_recomputes_nothing_and_a_deleted_cell_only_itself(digits_endpoints, tmp_path,
                                                                 capsys):
    a, b = (str(save_checkpoint(c, tmp_path / f"e{i}.pt")) for i, c in
            enumerate(digits_endpoints))
    config = write_config(tmp_path / "bench.yaml", pairs=[[a, b]],
                          methods=["line", "line+align", "curve+align"], seeds=[0, 1])
    out = tmp_path / "bench"
    first = run_bench(config, out, capsys)
    assert len(first["computed"]) == 4  # two lines, one curve method x two seeds
    table = first["table"]
    assert [table[m]["robust_loss_barrier"]["n"] for m in table] == [1, 1, 2]
    for stats in table.values():
        assert stats["robust_acc_min"]["mean"] <= stats["clean_acc_min"]["mean"] + 1e-9
    assert table["line+align"]["robust_loss_barrier"]["mean"] < \
        table["line"]["robust_loss_barrier"]["mean"]
    for name in ("bench.csv", "bench.md", "bench.json", "bench.png"):
        assert (out / name).is_file(), name
    assert "| curve+align | 2 |" in (out / "bench.md").read_text()

    again = run_bench(config, out, capsys)
    assert again["computed"] == [] and again["table"] == table
    shutil.rmtree(out / "cells" / "pair0" / "curve+align" / "seed1")
    third = run_bench(config, out, capsys)
    assert third["computed"] == [str(out / "cells" / "pair0" / "curve+align" / "seed1")]
    assert third["table"] == table  # the same cell, recomputed, gives the same figures


def test_endpoints_trained_from_seeds_are_reused(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "digits"}, "device": "cpu",
        "bench": {"endpoint_seeds": [[0, 1]], "methods": ["line", "line+align"]},
        "train": {"model": {"arch": "cnn", "width": 0.25},
                  "optim": {"epochs": 1, "batch_size": 64}, "attack": {"steps": 1},
                  "eval": {"attack": "none"}},
        "connect": FAST_CONNECT}))
    out = tmp_path / "bench"
    first = run_bench(config, out, capsys)
    assert len(first["computed"]) == 2
    assert sorted(p.name for p in (out / "endpoints").iterdir()) == ["seed0.pt", "seed1.pt"]
    stamp = (out / "endpoints" / "seed0.pt").stat().st_mtime_ns
    assert run_bench(config, out, capsys)["computed"] == []
    assert (out / "endpoints" / "seed0.pt").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("name, ok", [("line", True), ("curve+align+pam", True),
                                      ("curve+pam", True), ("line+pam", False),
                                      ("curve+aling", False), ("bezier", False),
                                      ("curve+align+align", False),
                                      ("line+head-rotations", True),
                                      ("curve+orthogonal", True),
                                      ("curve+permutations+pam", True),
                                      ("curve+orthogonal+pam", False),
                                      ("line+align+orthogonal", False)])
def test_method_names(name, ok):
    if ok:
        method = parse_method(name)
        assert method.curve == name.startswith("curve") and method.pam == ("pam" in name)
        maps = [m for m in ("permutations", "head-rotations", "orthogonal") if m in name]
        assert method.maps == (maps[0] if maps else None)
        assert method.align == ("align" in name or bool(maps))
    else:
        with pytest.raises(UserError, match="bench method"):
            parse_method(name)


def test_a_cell_whose_settings_changed_is_recomputed(digits_endpoints, tmp_path, capsys):
    a, b = (str(save_checkpoint(c, tmp_path / f"e{i}.pt")) for i, c in
            enumerate(digits_endpoints))
    config = write_config(tmp_path / "bench.yaml", pairs=[[a, b]], methods=["line+align"])
    out = tmp_path / "bench"
    assert len(run_bench(config, out, capsys)["computed"]) == 1
    settings = yaml.safe_load(config.read_text())
    settings["connect"]["path"]["points"] = 4
    config.write_text(yaml.safe_dump(settings))
    again = run_bench(config, out, capsys)
    assert len(again["computed"]) == 1
    rows = json.loads((out / "cells" / "pair0" / "line+align" / "path.json").read_text())["rows"]
    assert len({r["t"] for r in rows}) == 4


def test_bench_verify_adds_autoattack_columns_to_finished_cells(digits_endpoints, tmp_path,
                                                                capsys, monkeypatch):
    from robust_mc.pipelines import verification

    monkeypatch.setattr(verification, "verify_point", CleanOnlyVerification())
    a, b = (str(save_checkpoint(c, tmp_path / f"e{i}.pt")) for i, c in
            enumerate(digits_endpoints))
    config = write_config(tmp_path / "bench.yaml", pairs=[[a, b]], methods=["line"])
    out = tmp_path / "bench"
    plain = run_bench(config, out, capsys)
    assert "autoattack_acc_min" not in plain["table"]["line"]
    settings = yaml.safe_load(config.read_text())
    settings["connect"]["verify"] = {"images": 4, "square_queries": 50}
    config.write_text(yaml.safe_dump(settings))
    assert cli.main(["bench", "--config", str(config), "--out", str(out), "--verify",
                     "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    line = verified["table"]["line"]
    assert line["robust_loss_barrier"] == plain["table"]["line"]["robust_loss_barrier"]
    assert 0 <= line["autoattack_acc_min"]["mean"] <= 100  # AA <= clean: test_verification
    assert line["flagged_points"]["n"] == 1
    assert "AutoAttack acc min" in (out / "bench.md").read_text()
    cell = json.loads((out / "bench.json").read_text())["cells"][0]
    assert cell["verification"]["settings"]["images"] == 4


def test_an_endpoint_shared_by_cells_is_verified_once(digits_endpoints, tmp_path, capsys,
                                                      monkeypatch):
    from robust_mc.pipelines import verification

    stub = CleanOnlyVerification()
    monkeypatch.setattr(verification, "verify_point", stub)
    attacked = stub.attacked
    a, b = (str(save_checkpoint(c, tmp_path / f"e{i}.pt")) for i, c in
            enumerate(digits_endpoints))
    config = write_config(tmp_path / "bench.yaml", pairs=[[a, b]],
                          methods=["line", "line+align"])
    out = tmp_path / "bench"
    assert cli.main(["bench", "--config", str(config), "--out", str(out), "--verify",
                     "--json"]) == 0
    cells = json.loads((out / "bench.json").read_text())["cells"]
    points = [p for c in cells for p in c["verification"]["points"]]
    # endpoint a is one network in both cells: verified once, read back in the other cell
    assert len(attacked) == len(points) - 1
    at_a = [p for p in points if "a" in p["roles"]]
    assert len(at_a) == 2 and at_a[0]["t"] == at_a[1]["t"] == 0
    assert at_a[0]["clean_acc"] == at_a[1]["clean_acc"]
    assert len(list((out / "verified").glob("*.json"))) == len(attacked)
