"""spawn: children forked from one parent's saved states, the lines between them measured."""

from __future__ import annotations

import json

import torch
import yaml

from robust_mc import cli


def test_spawn_forks_children_from_the_parent_and_caches_everything(tmp_path, capsys):
    config = tmp_path / "spawn.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "digits"}, "device": "cpu",
        "spawn": {"epochs": [0, 1], "child_seeds": [11, 12]},
        "train": {"model": {"arch": "cnn", "width": 0.25}, "attack": {"eps": 0.1, "steps": 1},
                  "optim": {"epochs": 2, "batch_size": 64, "lr": 0.05},
                  "eval": {"attack": "none"}},
        "connect": {"attack": {"eps": 0.1, "steps": 1}, "align": {"samples": 200},
                    "path": {"points": 3, "attack": "pgd:steps=2", "bn_images": 200,
                             "val_limit": 100, "test_limit": 200}},
        "layers": {"points": 3, "samples": 100}}))
    out = tmp_path / "spawn"
    argv = ["spawn", "--config", str(config), "--out", str(out), "--json"]
    assert cli.main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert [p["epoch"] for p in first["points"]] == [0, 1]
    for point in first["points"]:
        for which in ("unaligned", "aligned"):
            assert point[which]["robust_acc_min"] <= point[which]["clean_acc_min"] + 1e-9
        assert point["layers"]["worst_group"]
    for name in ("spawn.json", "spawn.md", "spawn.png", "parent/parent.pt",
                 "parent/epoch0.state.pt", "parent/epoch1.state.pt"):
        assert (out / name).is_file(), name

    # a child forked at epoch 1 carries the parent's first epoch, then goes its own way
    parent = torch.load(out / "parent" / "parent.pt", weights_only=True)["meta"]["history"]
    child = [torch.load(out / "epoch1" / f"child{i}.pt", weights_only=True)["meta"]["history"]
             for i in (1, 2)]
    assert child[0][0] == parent[0] == child[1][0]
    assert child[0][1]["loss"] != child[1][1]["loss"] != parent[1]["loss"]
    weights = [torch.load(out / "epoch0" / f"child{i}.pt", weights_only=True)["state_dict"]
               for i in (1, 2)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    saved = (out / "epoch1" / "child1.pt").read_bytes()
    assert cli.main(argv) == 0  # everything read back
    assert json.loads(capsys.readouterr().out)["points"] == first["points"]
    assert (out / "epoch1" / "child1.pt").read_bytes() == saved


def test_a_saved_layers_file_of_the_wrong_shape_is_refused_in_one_line(tmp_path):
    """spawn takes up layers.json again with the settings it was measured with; groups that
    are not the rows layers writes end in one line naming the file, whatever their shape."""
    import pytest

    from robust_mc.config import LayersRunConfig, build_config
    from robust_mc.errors import UserError
    from robust_mc.pipelines.spawn import WHOLE, layer_figures
    from robust_mc.settings import to_dict

    cfg = build_config(LayersRunConfig, None, {"device": "cpu"})
    row = {"group": WHOLE, "measured_clean_midpoint": 0.1, "predicted_clean_barrier": 0.1,
           "measured_robust_midpoint": 0.2, "predicted_robust_barrier": 0.2,
           "measured_robust_barrier": 0.3}
    shapes = {"a mapping": {"x": 1}, "a string": "rows", "rows without names": [[1, 2]],
              "no whole network": [{**row, "group": "block1"}],
              "a barrier that is text": [row, {**row, "group": "b", "measured_robust_barrier":
                                               "high"}]}
    for groups in shapes.values():
        (tmp_path / "layers.json").write_text(json.dumps(
            {"config": to_dict(cfg), "aligned": {"groups": groups}}))
        with pytest.raises(UserError, match="layers.json is not what robust-mc writes"):
            layer_figures(None, cfg, tmp_path, None, None, None)  # type: ignore[arg-type]
    (tmp_path / "layers.json").write_text(json.dumps(  # the rows layers writes are read back
        {"config": to_dict(cfg), "aligned": {"groups": [row, {**row, "group": "b"}]}}))
    figures = layer_figures(None, cfg, tmp_path, None, None, None)  # type: ignore[arg-type]
    assert (figures.worst_group, figures.measured_robust) == ("b", 0.2)
