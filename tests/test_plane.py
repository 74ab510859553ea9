"""The plane through a curve's endpoints and bend: its geometry, and a grid whose anchors
reproduce the endpoints' and the bend's own figures."""

from __future__ import annotations

import json

import pytest
import torch

from robust_mc import cli
from robust_mc.config import ConnectRunConfig, build_config, flatten
from robust_mc.core.curves import Curve
from robust_mc.core.plane import Plane
from robust_mc.data import load_data
from robust_mc.evaluation.path import network_with, path_attack
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.models import create_model
from robust_mc.pipelines.pair import endpoints_from_run
from robust_mc.store.records import CurveRun


def test_the_basis_is_orthonormal_and_recovers_the_anchors():
    torch.manual_seed(0)
    module = create_model("mlp", num_classes=3, in_channels=1, image_size=4, mean=(0.5,),
                          std=(0.25,))
    a, b = ({k: torch.randn_like(v) for k, v in module.state_dict().items()} for _ in range(2))
    curve = Curve.between("bezier", module, a, b)
    with torch.no_grad():
        curve.bends += torch.randn_like(curve.bends)
    plane = Plane.of(curve)
    assert float(plane.e1 @ plane.e2) == pytest.approx(0, abs=1e-9)
    assert float(plane.e1.norm()) == pytest.approx(1) == float(plane.e2.norm())
    assert plane.coordinates(curve.start) == (0.0, 0.0)
    for anchor in (curve.end, curve.bends[0]):
        assert torch.allclose(plane.weights_at(*plane.coordinates(anchor)), anchor, atol=1e-5)
    assert plane.coordinates(curve.end)[1] == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="line"):
        Plane.of(Curve.between("line", module, a, b))


def test_plane_command_grid_anchors_reproduce_the_endpoints_and_the_bend(tiny_endpoint_files,
                                                                        tmp_path, runtime,
                                                                        capsys):
    run = tmp_path / "run"
    assert cli.main(["connect", str(tiny_endpoint_files["a"]), str(tiny_endpoint_files["b"]),
                     "--out", str(run), "--epochs", "1", "--attack-steps", "1", "--points",
                     "3", "--eval-attack", "pgd:steps=2", "--bn-images", "200",
                     "--align-samples", "200", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert cli.main(["plane", str(run), "--grid", "3", "--plane-images", "64", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    out = run / "plane"
    for name in ("plane.json", "plane.csv", "plane-clean.png", "plane-robust.png"):
        assert (out / name).is_file(), name
    plane = json.loads((out / "plane.json").read_text())
    assert len(plane["grid"]) == 9 and len(plane["xs"]) == len(plane["ys"]) == 3
    assert not (out / "plane-progress.json").exists()
    assert printed["anchors"] == plane["anchors"]

    saved = CurveRun.read(run / "curve.pt")
    cfg = build_config(ConnectRunConfig, None, flatten(saved.config))
    data = load_data(cfg.data)
    template = endpoints_from_run(saved, runtime, data.train.images[:2].float()).a
    attack = path_attack(cfg.path, cfg.attack, data.info.num_classes)
    curve = saved.curve
    for name, flat in (("a", curve.start), ("b", curve.end), ("bend", curve.bends[0])):
        model = network_with(template, curve.unflatten(flat.detach()), data, cfg.path,
                             cfg.attack, runtime)
        own = evaluate_seeded(model, data.test.take(64), attack, runtime, cfg.path.batch_size,
                              cfg.path.seed)
        anchor = plane["anchors"][name]
        # the plane's anchor is rebuilt from coordinates (a projection and back), so its
        # weights and losses match to float32 rounding, and its decisions exactly
        assert anchor["clean_loss"] == pytest.approx(own.clean_loss, abs=1e-4), name
        assert anchor["robust_loss"] == pytest.approx(own.robust_loss, abs=1e-4), name
        assert anchor["clean_acc"] == pytest.approx(own.clean_acc, abs=1e-9), name
    assert plane["curve"][0] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert plane["curve"][-1] == pytest.approx([plane["anchors"]["b"]["x"],
                                                plane["anchors"]["b"]["y"]], abs=1e-4)
