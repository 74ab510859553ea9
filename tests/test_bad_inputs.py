"""Every command, every kind of bad input: one clear line on stderr naming the problem (and the
fix where there is one), exit code 2, no traceback, and no output written."""

from __future__ import annotations

import copy
import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from robust_mc import cli
from robust_mc.store.checkpoint import save_checkpoint


class RunsCode:
    """A payload that would create a file if unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_endpoint, tiny_endpoint_files) -> dict[str, Path]:
    """Good endpoints, and every kind of bad file, made once."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {"a": tiny_endpoint_files["a"], "b": tiny_endpoint_files["b"],
             "mlp": save_checkpoint(tiny_endpoint(**{"model.arch": "mlp"}),
                                    root / "mlp.pt"),
             "wide": save_checkpoint(tiny_endpoint(**{"model.width": 0.5}),
                                     root / "wide.pt"),
             "clean": save_checkpoint(tiny_endpoint(**{"attack.steps": 0}),
                                      root / "clean.pt")}
    paths["empty"] = root / "empty.pt"
    paths["empty"].write_bytes(b"")
    paths["corrupt"] = root / "corrupt.pt"
    paths["corrupt"].write_bytes(bytes(range(256)) * 3)
    whole = paths["a"].read_bytes()
    paths["truncated"] = root / "truncated.pt"
    paths["truncated"].write_bytes(whole[: len(whole) // 2])
    paths["text"] = root / "notes.pt"
    paths["text"].write_text("these are not weights\n")
    native = torch.load(paths["a"], weights_only=True)
    for name, (edit, _) in MALFORMED.items():
        bad = copy.deepcopy(native)
        edit(bad)
        paths[name] = root / f"{name}.pt"
        torch.save(bad, paths[name])
    paths["marker"] = root / "PAYLOAD_RAN"
    paths["pickle"] = root / "payload.pt"
    with open(paths["pickle"], "wb") as handle:
        pickle.dump({"state_dict": RunsCode(paths["marker"])}, handle)
    paths["file"] = root / "a-file"
    paths["file"].write_text("keep me\n")
    paths["nodata"] = root / "nodata"
    paths["nodata"].mkdir()
    paths["unknown_key"] = root / "unknown.yaml"
    paths["unknown_key"].write_text("optim:\n  lrr: 0.1\n")
    paths["bench_empty"] = root / "bench-empty.yaml"
    paths["bench_empty"].write_text("data: {dataset: digits}\nbench: {methods: [line]}\n")
    paths["bench_ok"] = root / "bench-ok.yaml"
    paths["bench_ok"].write_text(f"data: {{dataset: digits}}\nbench: {{pairs: [[{paths['a']}, "
                                 f"{paths['b']}]], methods: [line]}}\n")
    paths["compile_yaml"] = root / "compile.yaml"
    paths["compile_yaml"].write_text("speed:\n  compile: true\n")
    paths["statedir"] = root / "statedir"
    (paths["statedir"] / "a.state.pt").mkdir(parents=True)  # where a training state belongs
    for end in "ab":  # plain state dicts of a one-channel network
        paths[f"plain_{end}"] = root / f"plain_{end}.pt"
        torch.save(torch.load(paths[end], weights_only=True)["state_dict"], paths[f"plain_{end}"])
    paths["bad_yaml"] = root / "bad.yaml"
    paths["bad_yaml"].write_text("optim: [unclosed\n")
    return paths


def _set(*keys_and_value):
    """An edit of a native checkpoint dict: set the nested key to the value (None deletes)."""
    *keys, last, value = keys_and_value

    def edit(obj: dict) -> None:
        for key in keys:
            obj = obj[key]
        if value is None:
            del obj[last]
        else:
            obj[last] = value
    return edit


# malformed native checkpoints: (edit of a good one's dict, what the one line must say)
MALFORMED = {
    "no_arch": (_set("arch", None), "'arch' must name the architecture"),
    "int_arch": (_set("arch", 3), "'arch' must name the architecture"),
    "no_arch_kwargs": (_set("arch_kwargs", None), "'arch_kwargs' must be a mapping"),
    "list_arch_kwargs": (_set("arch_kwargs", [1]), "'arch_kwargs' must be a mapping"),
    "no_num_classes": (_set("arch_kwargs", "num_classes", None),
                       "arch_kwargs lacks 'num_classes'"),
    "str_in_channels": (_set("arch_kwargs", "in_channels", "1"),
                        "arch_kwargs 'in_channels' must be an integer from 1 to 64"),
    "str_width": (_set("arch_kwargs", "width", "wide"), "arch_kwargs 'width'"),
    "no_state_dict": (_set("state_dict", None), "'state_dict' must map parameter names"),
    "list_state_dict": (_set("state_dict", [1, 2]), "'state_dict' must map parameter names"),
    "str_weights": (_set("state_dict", {"fc.weight": "zeros"}), "'state_dict' must map"),
    "no_normalization": (_set("normalization", None), "'normalization' must hold"),
    "str_normalization": (_set("normalization", "imagenet"), "'normalization' must hold"),
    "no_mean": (_set("normalization", "mean", None), "normalization 'mean' must be"),
    "str_std": (_set("normalization", "std", "0.5"), "normalization 'std' must be"),
    "zero_std": (_set("normalization", "std", [0.0]), "'std' must be positive"),
    "no_meta": (_set("meta", None), "meta must be a mapping"),
    "list_meta": (_set("meta", [1]), "meta must be a mapping"),
    "list_meta_config": (_set("meta", "config", [1]), "meta.config must be a mapping"),
    "int_meta_dataset": (_set("meta", "dataset", 7), "meta.dataset must be a string, not int"),
    "no_members": (_set("format", "robust-mc-ensemble/1"), "'members' must be a non-empty"),
    # values of the right type that no machine can build, or no training leaves
    "huge_width": (_set("arch_kwargs", "width", 1e308), "'width' must be a number in (0, 64]"),
    "wide_1000": (_set("arch_kwargs", "width", 1000), "'width' must be a number in (0, 64]"),
    "negative_in_channels": (_set("arch_kwargs", "in_channels", -3), "from 1 to 64"),
    "nan_weights": (lambda obj: obj["state_dict"][next(iter(obj["state_dict"]))].fill_(math.nan),
                    "non-finite values in"),
}

PAIR = ["{a}", "{b}"]
# (command line, what the one line must say); {name} are files above, {out} a fresh output path
MATRIX = [
    # missing, empty, corrupt, truncated, non-checkpoint files and a code-running pickle
    (["info", "{missing}"], "not found"),
    (["info", "{empty}"], "is empty"),
    (["info", "{corrupt}"], "not a PyTorch checkpoint"),
    (["info", "{truncated}"], "truncated or corrupt"),
    (["info", "{text}"], "not a PyTorch checkpoint"),
    (["info", "{pickle}"], "--trust-checkpoint"),
    (["connect", "{a}", "{missing}"], "not found"),
    (["connect", "{a}", "{empty}"], "is empty"),
    (["connect", "{a}", "{truncated}"], "truncated or corrupt"),
    (["connect", "{pickle}", "{b}"], "--trust-checkpoint"),
    (["align", "{a}", "{corrupt}"], "not a PyTorch checkpoint"),
    (["align", "{pickle}", "{b}"], "--trust-checkpoint"),
    (["layers", "{a}", "{truncated}"], "truncated or corrupt"),
    (["layers", "{text}", "{b}"], "not a PyTorch checkpoint"),
    (["eval", "{missing}"], "not found"),
    (["eval", "{corrupt}"], "not a PyTorch checkpoint"),
    (["ensemble", "{missing}"], "not found"),
    (["ensemble", "{a}"], "not a robust-mc curve"),
    (["ensemble", "{run}", "-k", "0"], "-k 0: choose between 1 and"),
    (["ensemble", "{run}", "-k", "1", "--out", "{file}"], "is a file"),
    (["ensemble", "{run}", "--eval-attack", "apgd-c"], "did you mean 'apgd-ce'?"),
    (["eval", "{nodata}"], "curve.pt not found"),
    (["ensemble", *PAIR, "-k", "3"], "-k 3: choose between 1 and the 2 networks given"),
    (["ensemble", "{a}", "{mlp}", "-k", "1"], "different architectures"),
    (["ensemble", *PAIR, "--points", "5"], "path.points sets how a path's networks"),
    (["ensemble", "{run}", "{a}", "-k", "4"], "-k 4: choose between 1 and the 3 networks"),
    (["ensemble", "{run}", "{mlp}"], "different architectures"),
    # endpoints that cannot be connected, data that does not fit them
    (["connect", "{a}", "{mlp}"], "different architectures (cnn vs mlp)"),
    (["connect", "{a}", "{wide}"], "differ in width (0.25 vs 0.5)"),
    (["align", "{a}", "{mlp}"], "different architectures"),
    (["layers", "{a}", "{wide}"], "differ in width"),
    (["connect", *PAIR, "--dataset", "synthetic"], "10 classes but synthetic has 4"),
    (["align", *PAIR, "--dataset", "synthetic"], "--dataset"),
    # members that cannot be merged, weights that are no average
    (["merge", "{a}"], "at least two models"),
    (["merge", "{a}", "{mlp}"], "different architectures (cnn vs mlp)"),
    (["merge", "{a}", "{b}", "{wide}"], "differ in width"),
    (["merge", "{a}", "{clean}"], "trained on clean images"),
    (["merge", *PAIR, "--merge-weights", "0.5,0.6"], "weights sum to 1.1, not 1"),
    (["merge", *PAIR, "--merge-weights", "1"], "1 weights for 2 members"),
    (["merge", *PAIR, "--merge-weights", "1.5,-0.5"], "at least 0"),
    (["merge", *PAIR, "--merge-frame", "star"], "invalid choice: 'star'"),
    (["merge", *PAIR, "--out", "{file}/m.pt"], "is a file, not a directory"),
    (["merge", *PAIR, "--no-align", "--merge-frame", "pairwise"], "merge.frame would be"),
    (["merge", *PAIR, "--barrier-points", "1"], "measures no line"),
    (["merge", *PAIR, "--merge-select", "greedy", "--merge-weights", "0.5,0.5"],
     "chooses the weights"),
    (["merge", *PAIR, "--verify-images", "50"], "add --verify"),
    # map classes that the method or PAM cannot follow
    (["align", *PAIR, "--align-method", "weights", "--align-maps", "orthogonal"],
     "solved from activations"),
    (["connect", *PAIR, "--align-method", "weights", "--align-maps", "head-rotations"],
     "solved from activations"),
    (["connect", *PAIR, "--pam", "--align-maps", "orthogonal"], "--align-maps permutations"),
    (["connect", *PAIR, "--dataset", "imagefolder:{nodata}"], "no train/ sub-folder"),
    (["train", "--dataset", "imagefolder:{nodata}"], "no train/ sub-folder"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", "--arch", "resnet21"], "unknown architecture 'resnet21'"),
    # malformed or out-of-range values
    (["connect", *PAIR, "--eps", "abc"], "'abc' is not a number; write e.g. 8/255"),
    (["connect", *PAIR, "--eps", "8"], "did you mean 8/255?"),
    (["train", "--eps", "-1"], "non-negative"),
    (["train", "--eps", "8/0"], "division by zero"),
    (["layers", *PAIR, "--attack-step-size", "x"], "attack.step_size: 'x' is not a number"),
    (["train", "--attack-steps", "-2"], "attack.steps: -2 is below the minimum 0"),
    (["train", "--lr", "fast"], "optim.lr"),
    (["train", "--epochs", "0"], "optim.epochs: 0 is below the minimum 1"),
    (["train", "--device", "tpu"], "use auto, cpu or cuda"),
    (["connect", *PAIR, "--points", "1"], "path.points: 1 is below the minimum 2"),
    (["eval", "{run}", "--points", "1"], "path.points: 1 is below the minimum 2"),
    (["connect", *PAIR, "--bends", "0"], "curve.bends: 0 is below the minimum 1"),
    (["connect", *PAIR, "--curve", "circle"], "invalid choice: 'circle'"),
    (["layers", *PAIR, "--points", "2"], "layers.points"),
    # values that cannot fit the machine, refused before any work
    (["connect", *PAIR, "--points", "1000000000"], "path.points: 1000000000 is above the "
                                                   "maximum 1001"),
    (["plane", "{run}", "--grid", "100000"], "grid: 100000 is above the maximum 101"),
    (["train", "--threads", "100000"], "speed.threads: 100000 is above the maximum 1024"),
    (["train", "--seed", str(10**19)], "does not fit in 64 bits"),
    (["train", "--lr", "1e309"], "optim.lr: expected a finite number"),
    (["train", "--width", "1000"], "model.width: 1000.0 is above the maximum 64"),
    # configuration files
    (["train", "--config", "{unknown_key}"], "unknown config key 'optim.lrr'"),
    (["connect", *PAIR, "--config", "{unknown_key}"], "unknown config key 'optim.lrr'"),
    (["train", "--config", "{bad_yaml}"], "YAML"),
    (["train", "--config", "cifar10-resnet2"], "not found"),
    # attack spec typos
    (["connect", *PAIR, "--eval-attack", "pgdd"], "did you mean 'pgd'?"),
    (["connect", *PAIR, "--eval-attack", "pgd:stepz=3"], "did you mean 'steps'?"),
    (["connect", *PAIR, "--eval-attack", "pgd:steps=x"], "steps must be an integer"),
    (["train", "--eval-attack", "autoatack"], "did you mean 'autoattack'?"),
    (["eval", "{run}", "--eval-attack", "fgsm:eps=2"], "fgsm"),
    # outputs that cannot be written
    (["connect", *PAIR, "--out", "{file}"], "is a file"),
    (["layers", *PAIR, "--out", "{file}"], "is a file"),
    (["demo", "--out", "{file}"], "is a file"),
    (["eval", "{run}", "--out", "{file}"], "is a file"),
    (["train", "--out", "{file}/a.pt"], "is a file, not a directory"),
    (["align", *PAIR, "--out", "{file}/b.pt"], "is a file, not a directory"),
    (["train", "--out", "{nodata}"], "is a directory"),
    (["connect", *PAIR, "--out", "{unwritable}/run"], "not writable"),
    (["train", "--out", "{unwritable}/a.pt"], "not writable"),
    # bench grids
    (["bench"], "needs --config"),
    (["bench", "--config", "{bench_empty}"], "has no endpoints"),
    (["bench", "--config", "{bench_empty}", "--methods", "line+pam"], "use curve+pam"),
    (["bench", "--config", "{bench_empty}", "--seeds", "x"], "bench.seeds[0]"),
    (["bench", "--config", "{bench_ok}", "--out", "{file}"], "is a file"),
    (["bench", "--config", "{unknown_key}"], "unknown config key 'optim'"),
    (["bench", "--config", "{bench_ok}", "--save-every", "0"], "save_every: 0 is below"),
    # contradictory or impossible requests
    (["train", "--resume"], "no saved training state"),
    (["connect", *PAIR, "--resume"], "no saved run to continue"),
    (["train", "--resume", "--fresh"], "contradict"),
    # flags a command would ignore are not offered, nor accepted from its config
    (["connect", *PAIR, "--compile"], "unrecognized arguments: --compile"),
    (["eval", "{run}", "--compile"], "unrecognized arguments: --compile"),
    (["ensemble", "{run}", "--normalization", "cifar10"], "unrecognized arguments"),
    (["connect", *PAIR, "--config", "{compile_yaml}"], "only train compiles"),
    (["align", *PAIR, "--config", "{compile_yaml}"], "only train compiles"),
    # names the file system refuses, folders that cannot exist, a home folder that does not
    (["info", "{long}"], "longer than the file system allows"),
    (["connect", *PAIR, "--out", "{long}"], "longer than the file system allows"),
    (["train", "--config", "{long}"], "longer than the file system allows"),
    (["train", "--dataset", "imagefolder:{long}"], "longer than the file system allows"),
    (["train", "--out", "/proc/robust-mc-none/a.pt"], "no folder can be made in /proc"),
    (["train", "--out", "{statedir}/a.pt", "--resume"], "a folder where a file is expected"),
    (["train", "--dataset", "imagefolder:~robust-mc-no-such-user/x"], "has no home folder"),
    # architecture arguments outside what the factory builds, refused before it runs
    (["train", "--model-kwargs", "{{in_channels: -1}}"], "in_channels: -1 is outside [1, 1024]"),
    (["train", "--model-kwargs", "{{width: .nan}}"], "width: nan is not a finite number"),
    (["train", "--model-kwargs", "{{width: 1.0e+308}}"], "width: 1e+308 is outside"),
    (["train", "--model-kwargs", "{{num_classes: 0}}"], "contradicts the 10 classes"),
    (["train", "--model-kwargs", "{{depht: 3}}"], "takes no argument 'depht'"),
    (["train", "--model-kwargs", "{{width: " + "1" * 5000 + "}}"], "digits; no setting takes"),
    (["train", "--arch", "vit_cifar", "--model-kwargs", "{{heads: 0}}"], "heads: 0 is outside"),
    (["train", "--arch", "tinyten", "--model-kwargs", "{{norm: batchy}}"],
     "choose batch, layer, none"),
    (["connect", "{plain_a}", "{plain_b}", "--arch", "cnn", "--width", "0.25",
      "--normalization", "imagenet"], "normalization has 3 channels but the network takes 1"),
    # import specs that name nothing importable, sizes no machine holds
    *[(["train", "--arch", spec], "is not an import spec") for spec in (":", ":y", "..:x",
                                                                         ".x:Net")],
    (["train", "--arch", "a" * 300 + ".py:Net"], "longer than the file system allows"),
    (["connect", *PAIR, "--bends", "1000000"], "curve.bends: 1000000 is above the maximum 64"),
    (["plane", "{run}", "--margin", "1e308"], "margin: 1e+308 is above the maximum 10"),
    # malformed native checkpoints: every field missing or of the wrong type, every reader
    *[(["info", f"{{{name}}}"], message) for name, (_, message) in MALFORMED.items()],
    (["connect", "{a}", "{no_num_classes}"], "lacks 'num_classes'"),
    (["align", "{no_arch}", "{b}"], "'arch' must name"),
    (["layers", "{a}", "{str_normalization}"], "'normalization' must hold"),
    (["eval", "{list_meta}"], "meta must be a mapping"),
    (["eval", "{no_members}"], "'members' must be a non-empty"),
]
QUICK = {"train": ["--epochs", "1", "--device", "cpu"], "connect": ["--device", "cpu"]}


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    """A finished connect run, for the eval rows (never changed: a refusal writes nothing)."""
    return tiny_run


def name_of(case) -> str:
    argv, _ = case
    return " ".join(a.strip("{}") for a in argv)[:60]


@pytest.mark.parametrize("argv, message", MATRIX, ids=[name_of(c) for c in MATRIX])
def test_bad_input_gives_one_line_and_exit_2(argv, message, files, run_dir, tmp_path,
                                             monkeypatch, capsys):
    unwritable = tmp_path / "locked"
    unwritable.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == unwritable
                        else real_access(path, mode))
    out = tmp_path / "out"
    names = {k: str(v) for k, v in files.items()}
    names.update(missing=str(tmp_path / "missing.pt"), run=str(run_dir), out=str(out),
                 unwritable=str(unwritable), long=str(tmp_path / ("x" * 300 + ".pt")))
    args = [a.format(**names) for a in argv]
    if "--out" not in args and args[0] != "info":
        args += ["--out", str(out)]
    quick = QUICK.get(args[0], [])
    for flag, value in zip(quick[::2], quick[1::2], strict=True):
        if flag not in args:
            args += [flag, value]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.parent.rglob("*") if p.is_file()}
    run_files = sorted(p.name for p in run_dir.iterdir())
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err, err
    assert err.startswith("robust-mc "), err
    assert not out.exists() and not any(unwritable.iterdir())
    assert not files["marker"].exists(), "unpickling ran the payload"
    assert files["file"].read_text() == "keep me\n"
    assert sorted(p.name for p in run_dir.iterdir()) == run_files
    after = {p: p.stat().st_mtime_ns for p in tmp_path.parent.rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if p in before} == before


def test_debug_shows_the_traceback(files, capsys):
    with pytest.raises(Exception, match="not found"):
        cli.main(["info", str(files["a"]) + ".missing", "--debug"])
