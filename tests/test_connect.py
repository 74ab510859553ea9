"""Connect end to end: known answers and a real, measured effect of alignment."""

import json

import pytest
import torch

from robust_mc import cli
from robust_mc.config import ConnectRunConfig, build_config
from robust_mc.evaluation.barriers import barrier
from robust_mc.pipelines import connect as pipeline
from robust_mc.pipelines.pair import Endpoints, Pair, make_curve
from robust_mc.pipelines.path_evaluation import evaluate_run, summarize
from robust_mc.pipelines.session import ConnectSession
from robust_mc.run.progress import Reporter
from robust_mc.store.checkpoint import save_checkpoint
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_model
from robust_mc.store.records import CurveRun, PathLabel


def connect_config(**extra) -> ConnectRunConfig:
    values = {"data.dataset": "digits", "attack.eps": 0.1, "attack.steps": 3,
              "optim.epochs": 4, "optim.batch_size": 64, "optim.lr": 0.05,
              "path.points": 5, "path.attack": "pgd:steps=5",
              "path.val_limit": 143, "align.samples": 800, "device": "cpu"}
    values.update(extra)
    return build_config(ConnectRunConfig, None, values)


def test_barrier_of_a_chord_is_zero_and_of_a_bump_is_its_height():
    assert barrier([0, 0.5, 1], [1.0, 1.5, 2.0]) == (0.0, 0)
    assert barrier([0, 0.5, 1], [1.0, 3.0, 1.0]) == (2.0, 0.5)


@pytest.mark.parametrize("kind", ["line", "bezier"])
def test_a_model_connected_to_itself_has_no_barrier(digits_endpoints, digits, runtime, kind,
                                                    tmp_path):
    model = runtime.prepare(build_model(digits_endpoints[0]))
    cfg = connect_config(**{"curve.kind": kind, "aligned": False})
    session = ConnectSession(Pair(digits_endpoints[0], digits_endpoints[0]), cfg, tmp_path,
                             runtime, Reporter(quiet=True), digits)
    endpoints = Endpoints(model, model, model)
    curve = make_curve(kind, endpoints, 1, runtime)  # untrained: every t is the model
    result = evaluate_run(session, curve, endpoints)
    summary = summarize(result, cfg)
    for split in ("val", "test"):
        for key, value in summary.barriers[split].to_state().items():
            if key.endswith("barrier"):  # the same network at every t: only the BN
                assert abs(value) < 1e-4, (split, key, value)  # statistics' rounding differs
    first = result.points[0].test
    for point in result.points:
        assert point.test.robust_acc == first.robust_acc
        assert point.test.clean_acc == first.clean_acc
    assert all(check.reproduced for check in summary.endpoints.values())


def test_the_lines_beside_a_path_measure_its_endpoints_once(digits_endpoints, digits, runtime,
                                                           tmp_path, monkeypatch):
    """The lines join the path's own endpoints (b aligned and b as given compute one function):
    their t = 0 and t = 1 are the path's points, not measured again."""
    from robust_mc.evaluation import path as path_module

    built = []
    recompute = path_module.recompute_batchnorm
    monkeypatch.setattr(path_module, "recompute_batchnorm",
                        lambda model, *args, **kwargs: built.append(1) or
                        recompute(model, *args, **kwargs))
    model = runtime.prepare(build_model(digits_endpoints[0]))
    cfg = connect_config(**{"path.compare_line": True, "path.points": 4, "path.val_limit": 32,
                            "path.test_limit": 32, "path.bn_images": 64})
    session = ConnectSession(Pair(digits_endpoints[0], digits_endpoints[1]), cfg, tmp_path,
                             runtime, Reporter(quiet=True), digits)
    other = runtime.prepare(build_model(digits_endpoints[1]))
    endpoints = Endpoints(model, other, other)
    result = evaluate_run(session, make_curve("bezier", endpoints, 1, runtime), endpoints)
    assert len(built) == 4 + 2 * 2  # the path's 4 t, then each line's 2 interior t
    for line in result.lines.values():
        assert line[0] is result.points[0] and line[-1] is result.points[-1]
        assert [p.t for p in line] == [p.t for p in result.points]


def test_aligned_curve_lowers_the_robust_barrier_of_the_unaligned_line(digits_endpoints,
                                                                      tmp_path, runtime):
    paths = [save_checkpoint(c, tmp_path / f"e{i}.pt") for i, c in enumerate(digits_endpoints)]
    from robust_mc.pipelines.pair import load_pair

    pair = load_pair(str(paths[0]), str(paths[1]))
    cfg = connect_config(**{"path.compare_line": True})
    summary = pipeline.run_connect(pair, cfg, tmp_path / "run", runtime, Reporter(quiet=True))
    curve_barrier = summary.barriers["test"].robust_loss_barrier
    line_barrier = summary.lines[PathLabel("line", False)]["test"].robust_loss_barrier
    aligned_line = summary.lines[PathLabel("line", True)]["test"].robust_loss_barrier
    assert curve_barrier < line_barrier
    assert aligned_line < line_barrier
    assert summary.barriers["test"].robust_acc_min <= summary.barriers["test"].clean_acc_min


def test_connect_and_eval_commands(digits_endpoints, tmp_path, capsys):
    paths = [str(save_checkpoint(c, tmp_path / f"e{i}.pt")) for i, c in
             enumerate(digits_endpoints)]
    run = tmp_path / "run"
    args = ["connect", *paths, "--out", str(run), "--epochs", "1", "--attack-steps", "2",
            "--points", "3", "--eval-attack", "pgd:steps=3", "--bn-images", "300",
            "--align-samples", "300", "--device", "cpu", "--json"]
    assert cli.main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 < result["best"]["t"] < 1
    for name in ("curve.pt", "path.json", "path.csv", "summary.json", "best.pt", "path.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["curve"]["kind"] == "bezier"
    assert summary["config"]["attack"]["eps"] == pytest.approx(0.1)  # from the endpoints
    rows = (run / "path.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2  # header, 3 points x (val, test)
    best = load_checkpoint(run / "best.pt")
    assert best.meta.kind == "on-path" and build_model(best) is not None
    assert cli.main(["info", str(run / "best.pt")]) == 0
    capsys.readouterr()
    out = tmp_path / "again"
    assert cli.main(["eval", str(run), "--eval-attack", "fgsm", "--points", "2",
                     "--compare-line", "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert set(again["endpoints"]) == {"a", "b"}
    lines = json.loads((out / "summary.json").read_text())["lines"]
    assert set(lines) == {"line (aligned)", "line (unaligned)"}


def test_resumable_curve_file_has_what_resume_needs(digits_endpoints, tmp_path, runtime):
    from robust_mc.pipelines.pair import load_pair

    paths = [save_checkpoint(c, tmp_path / f"e{i}.pt") for i, c in enumerate(digits_endpoints)]
    pair = load_pair(str(paths[0]), str(paths[1]))
    cfg = connect_config(**{"optim.epochs": 1, "path.points": 2})
    pipeline.run_connect(pair, cfg, tmp_path / "run", runtime, Reporter(quiet=True))
    run = CurveRun.read(tmp_path / "run" / "curve.pt")
    again = Pair(*run.checkpoints())
    assert run.position is not None and run.position.epoch == 1 and run.optimizer is not None
    assert run.curve.kind == "bezier" and torch.isfinite(run.curve.bends).all()
    assert again.a.arch == pair.a.arch
