"""Every kind of file robust-mc reads, mutated: a seeded, bounded set of damaged copies of real
files (endpoint and ensemble checkpoints, safetensors files, a connect run's curve.pt,
summary.json, path.json and progress files, a training state, YAML configs, bench claims and
the verified-points cache), each given to the commands that read it. Every one ends with exit
0 or 2, never a traceback or a hang, and a refusal changes nothing that was there before.

Beside the random mutations, each group of earlier findings is a named case here."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from robust_mc_testkit import QUICK_CONNECT, QUICK_EVAL, CleanOnlyVerification

from robust_mc import cli
from robust_mc.run import claims
from robust_mc.store.verified_points import VerifiedPoints

SEED = 20261202
CASE_SECONDS = 120  # a case still running then is a hang (each takes about a second)
FAST_EVAL = QUICK_EVAL
CONNECT = QUICK_CONNECT  # as the shared run was made: a continued copy reads every file
# values of every wrong kind a field could be given
BAD_VALUES: list[Any] = [None, "x", -1, 0, 10**19, 1e308, math.nan, math.inf, True, [], {},
                         [1, "x"], {"x": 1}, [[[[[[]]]]]], torch.zeros(3, 3),
                         torch.tensor([math.nan])]


class Hang(BaseException):
    """Raised in the main thread when a case runs past ``CASE_SECONDS``."""


def _alarm(signum, frame):
    raise Hang(f"still running after {CASE_SECONDS} s")


def paths_in(value: Any, prefix: tuple = (), depth: int = 0) -> Iterator[tuple]:
    """Every key path into nested dicts and lists, to depth 4."""
    if depth > 4:
        return
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else [])
    for key, item in items:
        yield (*prefix, key)
        yield from paths_in(item, (*prefix, key), depth + 1)


def mutated(value: Any, rng: random.Random, tensors: bool = True) -> Any:
    """A copy of ``value`` with one field replaced by a bad value or removed."""
    value = copy.deepcopy(value)
    path = rng.choice(list(paths_in(value)))
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    choices = BAD_VALUES if tensors else [v for v in BAD_VALUES
                                          if not isinstance(v, torch.Tensor)]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(rng.choice(choices))
    return value


def byte_damage(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["empty", "truncate", "flip", "garbage"])
    if kind == "empty":
        return b""
    if kind == "truncate":
        return data[: rng.randrange(max(len(data), 1))]
    if kind == "flip":
        damaged = bytearray(data)
        for _ in range(8):
            damaged[rng.randrange(len(damaged))] ^= 0xFF
        return bytes(damaged)
    return bytes(rng.randrange(256) for _ in range(64))


@pytest.fixture(scope="module")
def originals(tmp_path_factory, tiny_endpoint_files, tiny_run) -> dict[str, Path]:
    """Real files of every kind, made once (a second or two each); the run is shared, and only
    its copies are changed."""
    root = tmp_path_factory.mktemp("originals")
    files = {"a": tiny_endpoint_files["a"], "b": tiny_endpoint_files["b"]}
    run = tiny_run
    assert cli.main(["ensemble", str(run), "-k", "1", *FAST_EVAL, "--out",
                     str(root / "ens"), "--json"]) == 0
    assert cli.main(["export", str(files["a"]), "--format", "safetensors", "-o",
                     str(root / "a.safetensors")]) == 0
    files.update(run=run, ensemble=root / "ens" / "ensemble.pt",
                 safetensors=root / "a.safetensors")
    return files


@pytest.fixture(autouse=True)
def bounded_time():
    previous = signal.signal(signal.SIGALRM, _alarm)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def exits_cleanly(argv: list[str], capsys, folder: Path, case: str = "",
                  refused: bool = False) -> int:
    """Run the command; exit 0 or 2 (2 when ``refused``: a named finding), no traceback, one
    line when refused, and a refusal leaves ``folder``'s files as they were."""
    before = snapshot(folder)
    signal.alarm(CASE_SECONDS)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    assert code in ((2,) if refused else (0, 2)), (case, argv, err[-2000:])
    assert "Traceback" not in err, (case, argv, err[-2000:])
    if code == 2:
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("robust-mc ")]
        assert len(lines) == 1, (case, argv, err)
        assert snapshot(folder) == before, ("a refusal changed files", case, argv, err)
    return code


def torch_cases(source: Path, count: int, rng: random.Random) -> list[tuple[str, Any]]:
    """(name, content): structural mutations of a torch file, and byte damage."""
    native = torch.load(source, weights_only=True)
    cases: list[tuple[str, Any]] = [(f"field {i}", mutated(native, rng)) for i in range(count)]
    data = source.read_bytes()
    cases += [(f"bytes {i}", byte_damage(data, rng)) for i in range(3)]
    return cases


def write(path: Path, content: Any) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)


def check_torch_kind(source: Path, commands: list[Callable[[Path, Path], list[str]]],
                     count: int, tmp_path: Path, capsys, seed: int) -> None:
    rng = random.Random(SEED + seed)
    for i, (name, content) in enumerate(torch_cases(source, count, rng)):
        case = tmp_path / f"case{i}"
        case.mkdir()
        target = case / source.name
        write(target, content)
        for command in commands:
            exits_cleanly(command(target, case / "out"), capsys, case, name)


def test_endpoint_checkpoints(originals, tmp_path, capsys):
    check_torch_kind(originals["a"], [
        lambda f, out: ["info", str(f)],
        lambda f, out: ["eval", str(f), *FAST_EVAL, "--out", str(out)],
        lambda f, out: ["export", str(f), "--format", "state-dict", "-o", str(out / "x.pt")],
    ], 6, tmp_path, capsys, 1)


def test_ensemble_checkpoints(originals, tmp_path, capsys):
    check_torch_kind(originals["ensemble"], [
        lambda f, out: ["info", str(f)],
        lambda f, out: ["eval", str(f), *FAST_EVAL, "--out", str(out)],
    ], 6, tmp_path, capsys, 2)


def test_safetensors_files(originals, tmp_path, capsys):
    source = originals["safetensors"]
    data = source.read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_size])
    rng = random.Random(SEED + 3)
    variants = [byte_damage(data, rng) for _ in range(4)]
    for _ in range(6):  # headers that lie about their size, offsets, dtypes or metadata
        bad = mutated(header, rng, tensors=False)
        text = json.dumps(bad).encode()
        variants.append(len(text).to_bytes(8, "little") + text + data[8 + header_size:])
    variants.append((10**12).to_bytes(8, "little") + data[8:])
    variants.append((header_size + 5).to_bytes(8, "little") + data[8:])
    for i, content in enumerate(variants):
        case = tmp_path / f"case{i}"
        case.mkdir()
        target = case / "a.safetensors"
        target.write_bytes(content)
        exits_cleanly(["info", str(target)], capsys, case)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
    float8 = tmp_path / "float8" / "a.safetensors"
    float8.parent.mkdir()
    save_file({k: v.to(torch.float8_e4m3fn) if v.is_floating_point() else v
               for k, v in load_file(str(source)).items()}, str(float8), metadata=metadata)
    exits_cleanly(["info", str(float8)], capsys, float8.parent, "float8 weights", refused=True)


def run_copy(originals, tmp_path: Path, name: str) -> Path:
    run = tmp_path / name
    shutil.copytree(originals["run"], run)
    return run


@pytest.mark.slow  # 13 s on a 2-core CPU (16 cases, each an eval): CI runs it in its slow step
def test_curve_files(originals, tmp_path, capsys):
    native = torch.load(originals["run"] / "curve.pt", weights_only=True)
    rng = random.Random(SEED + 4)
    named = {  # earlier findings, each once
        "pam is text": {**native, "pam": "x"},
        "names disagree": {**native, "curve": {**native["curve"],
                                               "names": native["curve"]["names"][:-1]}},
        "shapes disagree": {**native, "curve": {**native["curve"], "shapes": [
            [s[0] + 1, *s[1:]] if s else [2] for s in native["curve"]["shapes"]]}},
        "bends not finite": {**native, "curve": {**native["curve"], "bends": torch.full_like(
            native["curve"]["bends"], math.nan)}},
        "not a permutation": {**native, "permutation": {
            k: [0] * len(v) for k, v in (native["permutation"] or {"x": [1, 2]}).items()}},
        "optimizer is text": {**native, "optimizer": "x"},
        "rng of the wrong type": {**native, "rng": [1, 2]},
        "optimizer of the wrong shape": {**native, "optimizer": {
            "state": {0: {"momentum_buffer": torch.zeros(3)}},
            "param_groups": [{**g} for g in (native["optimizer"] or {"param_groups": [
                {"params": [0], "lr": 0.1}]})["param_groups"]]}},
    }
    cases = [*named.items(), *((f"field {i}", mutated(native, rng)) for i in range(8))]
    READ_ON_RESUME = {"optimizer of the wrong shape"}  # eval does not use the optimizer
    for i, (name, content) in enumerate(cases):
        run = run_copy(originals, tmp_path, f"case{i}")
        torch.save(content, run / "curve.pt")
        exits_cleanly(["eval", str(run), *FAST_EVAL, "--out", str(tmp_path / f"out{i}")],
                      capsys, run, name, name in named and name not in READ_ON_RESUME)
        (run / "summary.json").unlink()  # continuing an unfinished run reads the rest
        exits_cleanly(["connect", str(originals["a"]), str(originals["b"]), *CONNECT,
                       "--out", str(run)], capsys, run, name, name in named)


def json_cases(source: Path, named: dict[str, Any], count: int, seed: int
               ) -> list[tuple[str, str]]:
    rng = random.Random(SEED + seed)
    state = json.loads(source.read_text())
    cases = [(name, json.dumps(value)) for name, value in named.items()]
    cases += [(f"field {i}", json.dumps(mutated(state, rng, tensors=False)))
              for i in range(count)]
    cases += [(name, text(source.read_text())) for name, text in DAMAGED.items()]
    return cases


DAMAGED = {"truncated": lambda text: text[:40], "not json": lambda text: "{{{",
           "not utf-8": lambda text: "\udcff"}


def test_summary_files(originals, tmp_path, capsys, monkeypatch):
    from robust_mc.pipelines import verification

    monkeypatch.setattr(verification, "verify_point", CleanOnlyVerification())
    state = json.loads((originals["run"] / "summary.json").read_text())
    named = {"format version 999": {**state, "format": "robust-mc-summary/999"},
             "best t 1e308": {**state, "best": {**(state.get("best") or {}), "t": 1e308}},
             "config a list": {**state, "config": [1]}, "files a string": {**state, "files": "ab"},
             "source a number": {**state, "source": 5}, "no barriers": {**state, "barriers": {}},
             "timings a list": {**state, "timings": [1]}}
    for i, (name, text) in enumerate(json_cases(originals["run"] / "summary.json", named, 2,
                                                5)):
        run = run_copy(originals, tmp_path, f"case{i}")
        (run / "summary.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        exits_cleanly(["verify", str(run), "--verify-images", "4", "--device", "cpu"],
                      capsys, run, name, name in named or name in DAMAGED)
        exits_cleanly(["connect", str(originals["a"]), str(originals["b"]), *CONNECT,
                       "--out", str(run)], capsys, run, name, name in named or name in DAMAGED)
    run = run_copy(originals, tmp_path, "directory")
    (run / "summary.json").unlink()
    (run / "summary.json").mkdir()  # checked before the run is evaluated again
    exits_cleanly(["connect", str(originals["a"]), str(originals["b"]), *CONNECT, "--out",
                   str(run)], capsys, run, "summary.json is a directory", refused=True)


def test_path_and_progress_files(originals, tmp_path, capsys, monkeypatch):
    from robust_mc.pipelines import verification

    monkeypatch.setattr(verification, "verify_point", CleanOnlyVerification())
    run = originals["run"]
    for i, (name, text) in enumerate(json_cases(run / "path.json", {}, 4, 6)):
        case = run_copy(originals, tmp_path, f"path{i}")
        (case / "path.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        exits_cleanly(["verify", str(case), "--verify-images", "4", "--device", "cpu"],
                      capsys, case, name, name in DAMAGED)

    # plane-progress.json: the progress of an interrupted plane, with more points than the
    # grid among the mutations
    plane = ["--grid", "2", "--plane-images", "10", "--bn-images", "50", "--eval-attack",
             "none", "--device", "cpu"]
    first = run_copy(originals, tmp_path, "plane")
    assert cli.main(["plane", str(first), *plane]) == 0
    progress = json.loads((first / "plane").joinpath("plane.json").read_text())
    capsys.readouterr()
    saved = {"config": progress.get("config", {}), "points": [
        {"clean_loss": 1.0, "clean_acc": 50.0, "robust_loss": 1.0, "robust_acc": 50.0,
         "count": 10}]}
    named = {"more points than the grid": {**saved, "points": saved["points"] * 50}}
    rng = random.Random(SEED + 7)
    cases = [*named.items(), *((f"field {i}", mutated(saved, rng, tensors=False))
                               for i in range(4))]
    for i, (name, value) in enumerate(cases):
        case = run_copy(originals, tmp_path, f"plane{i}")
        (case / "plane").mkdir()
        (case / "plane" / "plane-progress.json").write_text(json.dumps(value))
        exits_cleanly(["plane", str(case), *plane], capsys, case, name, name in named)

    # path-progress.json: the points an interrupted evaluation saved
    for i in range(4):
        case = run_copy(originals, tmp_path, f"progress{i}")
        (case / "summary.json").unlink()
        point = {"t": 0.0, "val": saved["points"][0], "test": saved["points"][0],
                 "seconds": {}}
        value = mutated({"config": {}, "paths": {"bezier (aligned)": [point]}}, rng,
                        tensors=False)
        (case / "path-progress.json").write_text(json.dumps(value))
        exits_cleanly(["connect", str(originals["a"]), str(originals["b"]), *CONNECT,
                       "--out", str(case)], capsys, case)


def test_training_states(tmp_path, capsys):
    from robust_mc_testkit import StopAfter

    from robust_mc.config import TrainRunConfig, build_config
    from robust_mc.errors import Interrupted
    from robust_mc.pipelines.endpoint_training import train_endpoint
    from robust_mc.run.progress import Reporter
    from robust_mc.run.runtime import Runtime

    settings = {"model.arch": "cnn", "model.width": 0.25, "optim.epochs": 3,
                "attack.steps": 1, "eval.attack": "none", "device": "cpu"}
    train = ["train", "--arch", "cnn", "--width", "0.25",
             "--epochs", "3", "--attack-steps", "1", "--eval-attack", "none", "--device", "cpu"]
    state_path = tmp_path / "o.state.pt"
    with pytest.raises(Interrupted):  # a state saved mid-run, as a signal leaves it
        train_endpoint(build_config(TrainRunConfig, None, settings), Runtime.for_device("cpu"),
                       Reporter(quiet=True), state_path=state_path, stop=StopAfter(15))
    assert state_path.is_file()
    cases = tmp_path / "cases"
    cases.mkdir()
    check_torch_kind(state_path, [
        lambda f, out: [*train, "--out", str(f.parent / "o.pt"), "--resume"],
    ], 8, cases, capsys, 8)
    state = torch.load(state_path, weights_only=True)
    state["position"]["epoch"] = 10**9  # past the run: nothing to train, nothing to divide by
    far = tmp_path / "far"
    far.mkdir()
    torch.save(state, far / "o.state.pt")
    exits_cleanly([*train, "--out", str(far / "o.pt"), "--resume"], capsys, far,
                  "epoch 10^9", refused=True)


def test_yaml_configs(tmp_path, capsys):
    config = {"data": {"dataset": "digits"}, "model": {"arch": "cnn", "width": 0.25},
              "attack": {"eps": 0.1, "steps": 1}, "optim": {"epochs": 1, "lr": 0.05,
                                                            "seed": 0},
              "eval": {"attack": "none"}, "device": "cpu"}
    rng = random.Random(SEED + 9)
    named = {  # earlier findings
        "not utf-8": b"\xff\xfe\x00d\x00a\x00t\x00a",
        "latin-1": "optim:\n  lr: 0.1 # caf\xe9\n".encode("latin-1"),
        "nested 5000 deep": ("a: " + "[" * 5000 + "]" * 5000).encode(),
        "recursive alias": b"optim: &a\n  x: *a\n",
        "alias bomb": b"\n".join([b"a0: &a0 [x, x, x, x, x, x, x, x]"] + [
            f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]".encode() for i in range(1, 9)]
            + [b"optim: {lr: *a8}"]),
        "lr 1e309": b"optim: {lr: 1e309}\n",
        "seed beyond 64 bits": f"optim: {{seed: {10**19}}}\n".encode(),
    }
    works = {"model null": b"model: null\ndevice: cpu\noptim: {epochs: 1}\n"
                           b"attack: {steps: 1}\neval: {attack: none}\n"}
    cases = [*named.items(), *works.items(), *(
        (f"field {i}", yaml.safe_dump(mutated(config, rng, False)).encode()) for i in range(10))]
    for i, (name, text) in enumerate(cases):
        case = tmp_path / f"case{i}"
        case.mkdir()
        (case / "c.yaml").write_bytes(text)
        code = exits_cleanly(["train", "--config", str(case / "c.yaml"), "--out",
                              str(case / "o.pt")], capsys, case, name, name in named)
        assert code == 0 or name not in works, name


def test_claim_files(tmp_path):
    rng = random.Random(SEED + 10)
    owner = {"host": "h", "pid": os.getpid(), "since": 0.0}
    texts = [json.dumps(mutated(owner, rng, tensors=False)) for _ in range(12)]
    texts += ["", "{", "\x00" * 10, json.dumps({"host": "h", "pid": -1}), "[" * 10000]
    for i, text in enumerate(texts):
        path = tmp_path / f".c{i}.claim"
        path.write_text(text)
        assert claims.is_stale(path) in (True, False)


def test_verified_points_cache(tmp_path):
    point = {"t": 0.5, "roles": ["best"], "images": 4, "clean_acc": 75.0,
             "path_attack": "pgd", "path_robust_acc": 50.0, "autoattack": None,
             "autoattack_torchattacks": 50.0, "pgd": {}, "checks": [],
             "reference_warnings": [], "threshold": 1.5, "seconds": 1.0}
    store = VerifiedPoints(tmp_path)
    rng = random.Random(SEED + 11)
    for i in range(20):
        text = json.dumps(mutated(point, rng, tensors=False)) if i else "{"
        (tmp_path / f"k{i}.json").write_text(text)
        found = store.get(f"k{i}", 0.5, ["best"])
        assert found is None or 0 <= found.clean_acc <= 100


def shared_reference_bomb(levels: int = 8) -> dict:
    """A small pickle that expands to 8^levels items when walked."""
    node: Any = ["x"] * 8
    for _ in range(levels):
        node = [node] * 8
    return {"bomb": node}


def test_a_fifo_where_a_file_is_expected_is_refused(originals, tmp_path, capsys):
    case = tmp_path / "case"
    case.mkdir()
    os.mkfifo(case / "fifo.pt")
    exits_cleanly(["info", str(case / "fifo.pt")], capsys, case, "checkpoint", refused=True)
    os.mkfifo(case / "o.state.pt")  # the training state a rerun continues
    exits_cleanly(["train", "--epochs", "1", "--device", "cpu", "--out", str(case / "o.pt"),
                   "--resume"], capsys, case, "training state", refused=True)
    run = run_copy(originals, tmp_path, "run")
    (run / "path.json").unlink()
    os.mkfifo(run / "path.json")
    exits_cleanly(["verify", str(run), "--device", "cpu"], capsys, run, "path.json",
                  refused=True)


def test_structures_that_expand_when_walked_are_refused(originals, tmp_path, capsys):
    native = torch.load(originals["run"] / "curve.pt", weights_only=True)
    run = run_copy(originals, tmp_path, "run")
    torch.save({**native, "config": {**native["config"], **shared_reference_bomb()}},
               run / "curve.pt")
    exits_cleanly(["eval", str(run), *FAST_EVAL, "--out", str(tmp_path / "out")], capsys, run,
                  "curve.pt", refused=True)
    ensemble = torch.load(originals["ensemble"], weights_only=True)
    case = tmp_path / "case"
    case.mkdir()
    torch.save({**ensemble, "meta": {**ensemble["meta"], "metrics": shared_reference_bomb()}},
               case / "e.pt")
    exits_cleanly(["info", str(case / "e.pt")], capsys, case, "ensemble", refused=True)
    for name, members_t in (("members_t text", ["x"]), ("metrics text", None)):
        meta = ({**ensemble["meta"], "members_t": members_t} if members_t else
                {**ensemble["meta"], "metrics": {"test": "x", "val": {"clean_acc": "y"}}})
        torch.save({**ensemble, "meta": meta}, case / f"{name}.pt")
        exits_cleanly(["info", str(case / f"{name}.pt")], capsys, case, name)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_a_spawn_snapshot_that_is_not_the_parent_s_state_is_refused(tmp_path, content):
    from robust_mc.config import TrainRunConfig, build_config
    from robust_mc.errors import UserError
    from robust_mc.pipelines.spawn import fork, snapshot_path

    snapshot = snapshot_path(tmp_path, 1)
    snapshot.parent.mkdir(parents=True)
    if content is None:
        torch.save({"format": "something else"}, snapshot)
    else:
        snapshot.write_bytes(content)
    child = build_config(TrainRunConfig, None, {"device": "cpu"})
    with pytest.raises(UserError, match="epoch1.state.pt"):
        fork(tmp_path, 1, child, tmp_path / "child.pt", torch.device("cpu"))
    assert not (tmp_path / "child.state.pt").exists()


def test_a_decompression_bomb_in_an_image_folder_is_refused(tmp_path, capsys, monkeypatch):
    """An image whose header claims more pixels than Pillow's bomb limit is refused in one line
    before it is decoded (the limit lowered here, so the test image stays small)."""
    from PIL import Image

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "images" / "train" / "a" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 > twice the limit
    exits_cleanly(["train", "--dataset", f"imagefolder:{tmp_path / 'images'}", "--epochs", "1",
                   "--device", "cpu", "--out", str(tmp_path / "out" / "a.pt")], capsys,
                  tmp_path / "images", "decompression bomb", refused=True)
