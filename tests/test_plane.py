"""The plane through a curve's endpoints and bend: its geometry, and a grid whose anchors
reproduce the endpoints' and the bend's own figures."""

from __future__ import annotations

import json

import pytest
import torch

from robust_mc import cli
from robust_mc.config import ConnectRunConfig, build_config, flatten
from robust_mc.core.curves import Curve
from robust_mc.core.plane import Plane, position_between
from robust_mc.data import as_float, load_data
from robust_mc.evaluation.path import PathNetworks, network_with, path_attack
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


def _bent_curve(kind: str, module: torch.nn.Module) -> Curve:
    a, b = ({k: torch.randn_like(v) for k, v in module.state_dict().items()} for _ in range(2))
    curve = Curve.between(kind, module, a, b)
    with torch.no_grad():
        curve.bends += torch.randn_like(curve.bends)
    return curve


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_a_plane_point_on_the_curve_stands_at_the_curves_own_t(kind):
    torch.manual_seed(1)
    module = create_model("mlp", num_classes=3, in_channels=1, image_size=4, mean=(0.5,),
                          std=(0.25,))
    curve = _bent_curve(kind, module)
    plane = Plane.of(curve)
    a, b, bend = (plane.coordinates(w) for w in (curve.start, curve.end, curve.bends[0]))
    for t in (0.0, 0.1, 0.37, 0.5, 0.8, 1.0):
        # the curve's point lies in the plane; its coordinates carry float32 rounding
        assert position_between(plane.coordinates(curve.flat_at(t)), a, b, bend) == \
            pytest.approx(t, abs=1e-5)
    assert position_between((2 * b[0], 0.0), a, b, bend) == 1.0  # beyond b: clipped
    assert position_between((-b[0], 0.0), a, b, bend) == 0.0
    with pytest.raises(ValueError, match="collinear"):
        position_between((1.0, 1.0), (0.0, 0.0), (1.0, 0.0), (0.5, 0.0))


def test_the_planes_network_at_a_curve_point_is_the_paths(digits, runtime):
    """With repair, the plane's network at the weights of the curve at t is the path's
    network at t: the same statistics, repaired to the same target."""
    torch.manual_seed(2)
    template = create_model("mlp", num_classes=10, in_channels=1, mean=(0.3,), std=(0.4,),
                            image_size=8)
    curve = _bent_curve("bezier", template)
    plane = Plane.of(curve)
    anchors = [plane.coordinates(w) for w in (curve.start, curve.end, curve.bends[0])]
    cfg = build_config(ConnectRunConfig, None, {"path.repair": "repair",
                                                 "path.repair_images": 200})
    along = PathNetworks(curve, template, digits, cfg.path, cfg.attack, runtime)
    x = as_float(digits.test.images[:64])
    for t in (0.25, 0.5):
        point = plane.coordinates(curve.flat_at(t))
        on_plane = along.network(curve.unflatten(plane.weights_at(*point)),
                                 position_between(point, *anchors))
        on_path = along.at(t)
        with torch.no_grad():
            expected = on_path(x)
            # the plane's weights are the curve's through a float64 projection and back, equal
            # to float32 rounding: every logit agrees to a few float32 ulps of the largest
            # activations (~1e-6 of the largest logit); a target 0.05 off in t moves them by
            # ~5% of it
            torch.testing.assert_close(on_plane(x), expected, rtol=0,
                                       atol=1e-4 * float(expected.abs().max()))


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

    # with repair the endpoints stay the endpoints: the anchors a and b are the same networks
    repaired_out = tmp_path / "repaired"
    assert cli.main(["plane", str(run), "--grid", "2", "--plane-images", "64", "--repair",
                     "repair", "--repair-images", "100", "--out", str(repaired_out)]) == 0
    repaired = json.loads((repaired_out / "plane.json").read_text())
    assert repaired["config"]["path"]["repair"] == "repair"
    for name in ("a", "b"):
        assert repaired["anchors"][name] == plane["anchors"][name], name

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
