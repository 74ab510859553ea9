from importlib import resources

import pytest

from robust_mc import cli
from robust_mc.config import (
    ConnectRunConfig,
    MergeRunConfig,
    SpawnRunConfig,
    TrainRunConfig,
    build_config,
    parse_pixel_value,
)
from robust_mc.errors import UserError
from robust_mc.pipelines.bench import load_bench_config, parse_method


@pytest.mark.parametrize("raw, value", [("8/255", 8 / 255), ("0.031", 0.031), (0, 0.0),
                                        ("0", 0.0), (0.5, 0.5), (" 2 / 255 ", 2 / 255)])
def test_pixel_values_parse(raw, value):
    assert parse_pixel_value(raw) == pytest.approx(value)


@pytest.mark.parametrize("raw, message", [("abc", "not a number"), ("8/0", "division by zero"),
                                          ("-0.1", "non-negative"), ("8", "8/255"),
                                          (True, "expected a number")])
def test_bad_pixel_values_name_the_fix(raw, message):
    with pytest.raises(UserError, match=message):
        parse_pixel_value(raw, "attack.eps")


def test_precedence_defaults_yaml_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("attack:\n  eps: 4/255\n  steps: 3\noptim:\n  epochs: 2\n")
    cfg = build_config(TrainRunConfig, str(path), {"attack.steps": "9"})
    assert cfg.attack.eps == pytest.approx(4 / 255)
    assert cfg.attack.steps == 9
    assert cfg.optim.epochs == 2
    assert cfg.optim.lr == 0.1


@pytest.mark.parametrize("yaml_text, message", [
    ("attack:\n  epss: 0.1\n", "unknown config key 'attack.epss'"),
    ("optim:\n  epochs: many\n", "optim.epochs: expected an integer"),
    ("optim:\n  epochs: 0\n", "optim.epochs: 0 is below the minimum 1"),
    ("optim:\n  schedule: linear\n", "optim.schedule"),
    ("attack:\n  eps: 8\n", "attack.eps.*8/255"),
    ("data: 3\n", "data: expected a mapping"),
    ("- a\n", "must be a mapping"),
])
def test_bad_config_names_the_key(tmp_path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UserError, match=message):
        build_config(TrainRunConfig, str(path))


def test_presets_resolve_by_name():
    cfg = build_config(TrainRunConfig, "cifar10-resnet20")
    assert cfg.model.arch == "resnet20" and cfg.attack.steps == 7
    with pytest.raises(UserError, match="presets"):
        build_config(TrainRunConfig, "no-such-preset")


PRESETS = resources.files("robust_mc.configs")


@pytest.mark.parametrize("name", sorted(p.name[:-5] for p in PRESETS.iterdir()
                                        if p.name.endswith(".yaml")))
def test_every_shipped_preset_builds_its_command_config(name):
    """Each preset is a valid configuration of the command it is for (bench-*: bench, spawn-*:
    spawn, merge-*: merge)."""
    if name.startswith("spawn-"):
        cfg = build_config(SpawnRunConfig, name)
        assert max(cfg.spawn.epochs) < cfg.train.optim.epochs
        return
    if name.startswith("bench-"):
        cfg = load_bench_config(name, {})
        assert cfg.bench.endpoint_seeds or cfg.bench.pairs
        for method in cfg.bench.methods:
            parse_method(method)
        return
    if name.startswith("merge-"):
        assert build_config(MergeRunConfig, name).merge.frame
        return
    cls = ConnectRunConfig if "connect" in name else TrainRunConfig
    build_config(cls, name)


def test_a_registered_curve_kind_is_offered_by_the_flag_and_accepted_by_the_config():
    from robust_mc.core import curves

    with curves.CURVES.scoped():
        @curves.register_curve("test-kind")
        def _kind(t, points):
            return curves.CURVES.get("bezier")(t, points)

        args = cli.build_parser().parse_args(["connect", "a.pt", "b.pt", "--curve", "test-kind"])
        cfg = build_config(ConnectRunConfig, None, {"curve.kind": args.__dict__["curve.kind"]})
        assert cfg.curve.kind == "test-kind"
    with pytest.raises(UserError, match="curve.kind: unknown curve kind 'test-kind'"):
        build_config(ConnectRunConfig, None, {"curve.kind": "test-kind"})


def test_every_setting_flag_shows_its_default_from_the_command_s_own_config(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["connect", "--help"])
    connect_help = capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    train_help = capsys.readouterr().out
    def described(text: str) -> str:  # the flag's help, however the terminal wraps it
        flat = " ".join(text.split())
        return flat.split("--attack-steps K PGD iterations; 0 trains on clean inputs")[1][:13]

    assert described(connect_help) == " (default: 5)"
    assert described(train_help) == " (default: 7)"
