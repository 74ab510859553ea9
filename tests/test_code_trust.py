"""A file never chooses code to run: an architecture recorded as an import spec is refused by
every command that reads models, before anything is imported, unless the user names the same
spec (``--arch``) or passes ``--trust-code``; whatever is allowed must build an ``nn.Module``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from robust_mc_testkit import QUICK_CONNECT
from torch import nn

from robust_mc import cli
from robust_mc.errors import UserError
from robust_mc.models import create_model
from robust_mc.models.trust import CodeTrust
from robust_mc.store.checkpoint import LoadOptions
from robust_mc.store.checkpoint_files import load_checkpoint
from robust_mc.store.model_building import build_model

QUICK = {
    "connect": QUICK_CONNECT,
    "align": ["--align-samples", "100"],
    "layers": ["--points", "3", "--samples", "100", "--groups", "blocks", "--attack-steps",
               "1"],
    "eval": ["--eval-attack", "none", "--eval-test-limit", "50", "--points", "2",
             "--bn-images", "100", "--val-limit", "50"],
    "ensemble": ["-k", "1", "--eval-attack", "none", "--eval-test-limit", "50", "--points", "2",
                 "--bn-images", "100", "--val-limit", "50"],
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_endpoint_files, tiny_run) -> dict[str, Path]:
    """Checkpoints and runs that name code: a process-starting callable, and a Python file
    that writes a marker when imported (and otherwise defines a working network)."""
    root = tmp_path_factory.mktemp("hostile")
    paths = {"marker": root / "IMPORTED", "popen_marker": root / "POPEN_RAN"}
    module = root / "user_net.py"
    module.write_text(f"import pathlib\npathlib.Path({str(paths['marker'])!r}).write_text('x')\n"
                      "from robust_mc.models.small import SmallCNN\n\n\n"
                      "class Net(SmallCNN):  # the tiny endpoints' network, its width fixed\n"
                      "    def __init__(self, num_classes=10, in_channels=1):\n"
                      "        super().__init__(num_classes, in_channels, width=0.25)\n")
    paths["spec"] = Path(f"{module}:Net")
    native = torch.load(tiny_endpoint_files["a"], weights_only=True)
    for name, arch, extra in (
            ("popen", "subprocess:Popen", {"args": ["touch", str(paths["popen_marker"])]}),
            ("system", "os:system", {"command": f"touch {paths['popen_marker']}"}),
            ("file_a", str(paths["spec"]), {"width": 1.0}),
            ("file_b", str(paths["spec"]), {"width": 1.0})):
        source = native if name != "file_b" else torch.load(tiny_endpoint_files["b"],
                                                            weights_only=True)
        paths[name] = root / f"{name}.pt"
        torch.save({**source, "arch": arch, "arch_kwargs": {**source["arch_kwargs"], **extra}},
                   paths[name])
    run = tiny_run
    for name, arch in (("popen_run", "subprocess:Popen"), ("file_run", str(paths["spec"]))):
        record = torch.load(run / "curve.pt", weights_only=True)
        (root / name).mkdir()
        torch.save({**record, "arch": arch,
                    "arch_kwargs": {**record["arch_kwargs"], "width": 1.0}},
                   root / name / "curve.pt")
        paths[name] = root / name
    for name, pair in (("popen_bench", ("popen", "popen")), ("file_bench", ("file_a", "file_b"))):
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(f"data: {{dataset: digits}}\nbench: {{pairs: [[{paths[pair[0]]}, "
                               f"{paths[pair[1]]}]], methods: [line]}}\n"
                               "connect: {path: {points: 2, attack: none, bn_images: 100}}\n")
    return paths


@pytest.fixture(autouse=True)
def forget_imported_user_modules():
    """Each test imports user files afresh, so that their import-time side effects show."""
    for name in [n for n in sys.modules if n.startswith("robust_mc_user_")]:
        del sys.modules[name]


# every command that reads models, given a file that names code
READERS = [
    ("info", ["{x}"]),
    ("align", ["{x}", "{x_b}"]),
    ("connect", ["{x}", "{x_b}"]),
    ("eval", ["{x}"]),
    ("layers", ["{x}", "{x_b}"]),
    ("eval", ["{x_run}"]),
    ("ensemble", ["{x_run}"]),
    ("bench", ["--config", "{x_bench}"]),
]


def command(name: str, args: list[str], kind: str, hostile: dict, out: Path) -> list[str]:
    second = "file_b" if kind == "file_a" else kind
    run = "file_run" if kind == "file_a" else "popen_run"
    bench = "file_bench" if kind == "file_a" else "popen_bench"
    values = {"x": hostile[kind], "x_b": hostile[second], "x_run": hostile[run],
              "x_bench": hostile[bench]}
    argv = [name, *(a.format(**values) for a in args)]
    if name != "info":
        argv += ["--out", str(out / ("b.pt" if name == "align" else "run")), "--device", "cpu"]
    return argv + QUICK.get(name, [])


@pytest.mark.parametrize("kind", ["popen", "system", "file_a"])
@pytest.mark.parametrize("name, args", READERS, ids=[f"{n}-{a[-1][1:-1]}" for n, a in READERS])
def test_a_file_that_names_code_is_refused_before_anything_runs(name, args, kind, hostile,
                                                                 tmp_path, capsys):
    if kind == "system" and "{x_run}" in args + ["--config"]:
        pytest.skip("one callable suffices for runs and benches")
    code = cli.main(command(name, args, kind, hostile, tmp_path))
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "a file never chooses code to run" in err and "--arch" in err, err
    assert not hostile["marker"].exists() and not hostile["popen_marker"].exists()
    assert not any(tmp_path.iterdir()), "nothing is written"


@pytest.mark.parametrize("consent", ["arch", "trust-code"])
@pytest.mark.parametrize("name, args", READERS, ids=[f"{n}-{a[-1][1:-1]}" for n, a in READERS])
def test_the_same_file_is_read_when_the_user_names_its_spec_or_trusts_code(
        name, args, consent, hostile, tmp_path, capsys):
    hostile["marker"].unlink(missing_ok=True)
    argv = command(name, args, "file_a", hostile, tmp_path)
    if name == "bench":  # the config the user passes names the spec, or trusts code
        config = tmp_path / "bench.yaml"
        extra = (f"arch: {hostile['spec']}, " if consent == "arch" else "trust_code: true, ")
        config.write_text(hostile["file_bench"].read_text().replace("bench: {",
                                                                    "bench: {" + extra))
        argv[argv.index("--config") + 1] = str(config)
    else:
        argv += ["--arch", str(hostile["spec"])] if consent == "arch" else ["--trust-code"]
    code = cli.main([*argv, "--json"] if name != "layers" else argv)
    err = capsys.readouterr().err
    assert code == 0, err
    assert hostile["marker"].exists(), "the user allowed the import"


@pytest.mark.parametrize("consent", [["--trust-code"], ["--arch", "subprocess:Popen"],
                                     ["--arch", "os:system"]])
def test_what_the_user_allows_must_still_build_a_network(consent, hostile, capsys):
    file = hostile["popen"] if "os:system" not in consent else hostile["system"]
    assert cli.main(["info", str(file), *consent]) == 2
    err = capsys.readouterr().err
    assert "not an nn.Module" in err and len(err.strip().splitlines()) == 1, err
    assert not hostile["popen_marker"].exists()


def test_a_different_arch_than_the_recorded_one_is_refused(hostile, tiny_endpoint_files):
    with pytest.raises(UserError, match="records architecture 'cnn', not --arch mlp"):
        load_checkpoint(tiny_endpoint_files["a"], LoadOptions(arch="mlp"))


def test_code_trust_allows_registered_names_and_what_the_user_named(tmp_path):
    spec = f"{tmp_path}/net.py:Net"
    trust = CodeTrust.from_user(arch=f"{tmp_path}/./net.py:Net")
    assert trust.allows("resnet20") and trust.allows(spec) and trust.user_named(spec)
    assert not trust.allows("subprocess:Popen") and not trust.allows(f"{tmp_path}/x.py:Net")
    assert CodeTrust.from_user(trust_code=True).allows("any.module:Thing")
    with pytest.raises(UserError, match="subprocess:Popen"):
        trust.check("subprocess:Popen", "x.pt")


def factory_returning_a_module() -> nn.Module:
    return nn.Linear(2, 2)


def factory_returning_text() -> str:
    return "not a network"


def test_a_factory_builds_only_when_the_user_named_it():
    kw = {"num_classes": 2, "in_channels": 1, "mean": [0.0], "std": [1.0]}
    spec = f"{__name__}:factory_returning_a_module"
    assert isinstance(create_model(spec, **kw).net, nn.Linear)
    with pytest.raises(UserError, match="runs only when you name it"):
        create_model(spec, factory_ok=False, **kw)
    with pytest.raises(UserError, match="returns str, not an nn.Module"):
        create_model(f"{__name__}:factory_returning_text", **kw)


def test_arguments_from_a_file_are_bound_before_the_call(tiny_endpoint_files, tmp_path):
    native = torch.load(tiny_endpoint_files["a"], weights_only=True)
    native["arch_kwargs"].update(depth=3, width=1.0)  # cnn takes **_: use a user class
    native["arch"] = "robust_mc.models.small:SmallCNN"
    torch.save(native, tmp_path / "c.pt")
    ckpt = load_checkpoint(tmp_path / "c.pt", LoadOptions(arch=native["arch"]))
    with pytest.raises(UserError, match="unexpected keyword argument 'depth'"):
        build_model(ckpt)


def test_unknown_fields_are_ignored(tiny_endpoint_files, tmp_path):
    native = torch.load(tiny_endpoint_files["a"], weights_only=True)
    torch.save({**native, "written_by": "another tool", "meta": {**native["meta"], "x": [1]}},
               tmp_path / "extra.pt")
    model = build_model(load_checkpoint(tmp_path / "extra.pt"))
    assert isinstance(model, nn.Module)
