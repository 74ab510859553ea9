"""The one CLI vocabulary: every command that takes a flag takes it with the same meaning.

Flags that set configuration use dotted ``dest`` names (``attack.eps``) and default to ``None``,
so only what the user typed overrides the YAML file and the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from robust_mc.config import (
    ConnectRunConfig,
    SettingInfo,
    TrainRunConfig,
    describe_setting,
)
from robust_mc.data import parse_normalization
from robust_mc.errors import UserError
from robust_mc.settings import parse_yaml
from robust_mc.store.checkpoint import LoadOptions
from robust_mc.store.resume import ResumePolicy

BOOL = argparse.BooleanOptionalAction


def add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML preset: a path or a name in configs/")


def add_settings(group: Any, config: type, flags: dict[str, str]) -> None:
    """One flag per ``{"--flag": "dotted.key"}`` (``"dotted.key:METAVAR"`` names its value),
    its help, default, choices and kind taken from the setting in the run config ``config``:
    a new curve kind, alignment method or objective appears here by being registered."""
    for flag, spec in flags.items():
        key, _, metavar = spec.partition(":")
        info = describe_setting(config, key)
        text = info.help.replace("%", "%%")
        if info.type is bool:
            group.add_argument(flag, dest=key, action=BOOL, default=None,
                               help=f"{text} (default: {'on' if info.default else 'off'})")
            continue
        if info.default is not None and info.default != []:
            shown = f"{info.default * 255:g}/255" if info.pixel else str(info.default)
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
        if info.choices and not info.exact:  # values with arguments: the settings check them
            group.add_argument(flag, dest=key, help=text,
                               metavar="{" + ",".join(info.choices) + "}")
            continue
        group.add_argument(flag, dest=key, help=text, choices=info.choices,
                           metavar=None if info.choices else metavar or _metavar(info))


def _metavar(info: SettingInfo) -> str:
    if info.pixel:
        return "EPS"
    return {int: "N", float: "X"}.get(info.type, "VALUE")


def add_data_flags(p: argparse.ArgumentParser, config: type) -> None:
    add_settings(p.add_argument_group("data"), config, {
        "--dataset": "data.dataset:NAME", "--data-dir": "data.data_dir:DIR",
        "--download": "data.download", "--val-size": "data.val_size",
        "--train-limit": "data.train_limit", "--test-limit": "data.test_limit"})


def add_model_flags(p: argparse.ArgumentParser) -> None:
    add_settings(p.add_argument_group("model"), TrainRunConfig, {
        "--arch": "model.arch:NAME|file.py:Class|hf:DIR", "--width": "model.width",
        "--model-kwargs": "model.kwargs:YAML"})


def add_attack_flags(p: argparse.ArgumentParser, config: type, what: str = "training") -> None:
    add_settings(p.add_argument_group(f"{what} attack"), config, {
        "--attack-method": "attack.method", "--eps": "attack.eps", "--norm": "attack.norm",
        "--attack-steps": "attack.steps:K", "--attack-step-size": "attack.step_size:ALPHA",
        "--attack-mode": "attack.mode"})


def add_optim_flags(p: argparse.ArgumentParser, config: type) -> None:
    add_settings(p.add_argument_group("optimisation"), config, {
        "--epochs": "optim.epochs", "--batch-size": "optim.batch_size",
        "--optimizer": "optim.optimizer", "--lr": "optim.lr:LR",
        "--weight-decay": "optim.weight_decay:WD", "--schedule": "optim.schedule",
        "--warmup-epochs": "optim.warmup_epochs:N", "--seed": "optim.seed"})


def add_fault_flags(p: argparse.ArgumentParser, config: type) -> None:
    g = p.add_argument_group("resuming and faults")
    g.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (rerunning into the same --out also "
                        "continues it); an error if there is none")
    g.add_argument("--fresh", action="store_true",
                   help="discard a run saved in --out and start over")
    add_settings(g, config, {"--save-every": "optim.save_every",
                             "--skip-nonfinite": "optim.skip_nonfinite",
                             "--deterministic": "speed.deterministic"})


def resume_policy(args: argparse.Namespace) -> ResumePolicy:
    """``--resume`` (a saved run must exist), ``--fresh`` (ignore one), or neither (continue
    one of the same settings)."""
    return ResumePolicy.from_flags(args.resume, args.fresh)


def add_align_flags(p: argparse.ArgumentParser, config: type) -> None:
    flags = {"--align-method": "align.method", "--align-maps": "align.maps",
             "--align-inputs": "align.inputs",
             "--align-samples": "align.samples", "--align-seed": "align.seed",
             "--align-tokens": "align.tokens", "--align-learn-steps": "align.learn_steps",
             "--align-learn-lr": "align.learn_lr",
             "--partial-alignment": "align.partial"}
    if "aligned" in {f.name for f in dataclasses.fields(config)}:
        flags["--align"] = "aligned"  # --align / --no-align
    add_settings(p.add_argument_group("alignment"), config, flags)


def add_curve_flags(p: argparse.ArgumentParser) -> None:
    add_settings(p.add_argument_group("curve"), ConnectRunConfig, {
        "--curve": "curve.kind", "--bends": "curve.bends", "--objective": "curve.objective",
        "--trades-beta": "curve.trades_beta", "--t-per-rank": "curve.t_per_rank"})


def add_pam_flags(p: argparse.ArgumentParser) -> None:
    add_settings(p.add_argument_group("PAM (permutation updates during curve training)"),
                 ConnectRunConfig, {"--pam": "pam.enabled", "--pam-outer": "pam.outer",
                                    "--pam-perm-epochs": "pam.perm_epochs",
                                    "--pam-lr": "pam.lr", "--pam-prox": "pam.prox"})


REPAIR_FLAGS = {"--repair": "path.repair", "--repair-inputs": "path.repair_inputs",
                "--repair-images": "path.repair_images"}


def add_path_flags(p: argparse.ArgumentParser) -> None:
    add_settings(p.add_argument_group("evaluation along the path"), ConnectRunConfig, {
        "--points": "path.points", "--eval-attack": "path.attack:SPEC",
        "--bn-data": "path.bn_data", "--bn-images": "path.bn_images",
        **REPAIR_FLAGS, "--eval-batch-size": "path.batch_size",
        "--val-limit": "path.val_limit",
        "--eval-test-limit": "path.test_limit", "--compare-line": "path.compare_line"})


def add_similarity_flags(p: argparse.ArgumentParser) -> None:
    add_settings(p.add_argument_group("activations along the path"), ConnectRunConfig,
                 {"--similarity": "path.similarity", **SIMILARITY_DETAILS})


VERIFY_DETAILS = {"--verify-images": "verify.images", "--verify-threshold": "verify.threshold",
                  "--verify-queries": "verify.square_queries", "--verify-seed": "verify.seed"}
SIMILARITY_DETAILS = {"--similarity-images": "path.similarity_images"}


def add_verify_flags(p: argparse.ArgumentParser, switch: bool = True) -> None:
    """AutoAttack and gradient-masking checks at a path's chosen points; ``switch`` offers
    ``--verify`` (connect, eval), which ``robust-mc verify`` does not need."""
    flags = {"--verify": "verify.enabled"} if switch else {}
    add_settings(p.add_argument_group("verification"), ConnectRunConfig,
                 {**flags, **VERIFY_DETAILS})


def check_switches(args: argparse.Namespace, cfg: ConnectRunConfig) -> None:
    """A flag that tunes --verify or --similarity takes effect only with its switch: without
    it, it is refused rather than ignored."""
    for switch, on, details in (("--verify", cfg.verify.enabled, VERIFY_DETAILS),
                                ("--similarity", cfg.path.similarity, SIMILARITY_DETAILS)):
        given = [flag for flag, key in details.items() if getattr(args, key, None) is not None]
        if given and not on:
            raise UserError(f"{given[0]} sets how {switch} measures; add {switch}")


def add_objective_flags(p: argparse.ArgumentParser) -> None:
    add_settings(p.add_argument_group("objective"), TrainRunConfig, {
        "--objective": "objective.name", "--beta": "objective.beta",
        "--ema": "objective.ema:DECAY", "--awp": "objective.awp:GAMMA",
        "--awp-warmup": "objective.awp_warmup"})


def add_eval_flags(p: argparse.ArgumentParser) -> None:
    add_settings(p.add_argument_group("evaluation"), TrainRunConfig,
                 {"--eval-attack": "eval.attack:SPEC"})


def add_speed_flags(p: argparse.ArgumentParser, config: type, compiles: bool = False) -> None:
    """Device, precision, layout and threads; ``--compile`` only where the command compiles
    every network it trains and attacks (``train``)."""
    flags = {"--device": "device:auto|cpu|cuda", "--precision": "speed.precision",
             "--channels-last": "speed.channels_last", "--threads": "speed.threads",
             "--reuse-memory": "speed.reuse_memory"}
    if compiles:
        flags["--compile"] = "speed.compile"
    add_settings(p.add_argument_group("speed"), config, flags)


def add_output_flags(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--out", "-o", metavar="PATH", help=out_help)
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def add_model_file_flags(p: argparse.ArgumentParser, foreign: bool = True) -> None:
    """How model files are read: the same flags, with the same meaning, on every command that
    reads one. ``foreign``: the command reads model files other tools wrote (not only runs,
    which record everything about their networks)."""
    g = p.add_argument_group("model files")
    g.add_argument("--arch", dest="load_arch", metavar="NAME|file.py:Class|hf:DIR",
                   help="architecture of a plain state_dict (hf:DIR: the transformers model "
                        "whose config.json is in DIR); for a file that records an import spec "
                        "(file.py:Class, module:Class), naming the same spec allows it. A "
                        "Hugging Face model directory is given as the model itself")
    if foreign:
        g.add_argument("--width", dest="load_width", type=float, metavar="X",
                       help="width multiplier of a plain state_dict's zoo architecture, as "
                            "train's --width (the default 1)")
        g.add_argument("--model-kwargs", metavar="YAML",
                       help="more arguments of a plain state_dict's architecture, e.g. "
                            "'{depth: 16, widen_factor: 1}'")
        g.add_argument("--normalization", metavar="NAME|MEAN,..:STD,..",
                       help="what a plain state_dict's model expects of its [0, 1] inputs: "
                            "none (the default), cifar10, cifar100, imagenet, or per-channel "
                            "values")
        g.add_argument("--model-dir", metavar="DIR",
                       help="where models given as robustbench:<dataset>/<threat>/<Name> keep "
                            "their weights (DIR/<dataset>/<threat>/<Name>.pt, RobustBench's "
                            "layout)")
    g.add_argument("--trust-code", action="store_true",
                   help="let files name any importable architecture (runs that code)")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of checkpoints (runs code from the file)")


def load_options(args: argparse.Namespace, **shape: Any) -> LoadOptions:
    """What the user said about model files, from :func:`add_model_file_flags`; ``shape``
    gives a foreign file's arguments where the command knows them (info's flags)."""
    kwargs = dict(shape.pop("arch_kwargs", None) or {})
    if getattr(args, "model_kwargs", None):
        kwargs.update(parse_mapping(args.model_kwargs, "--model-kwargs"))
    if getattr(args, "load_width", None) is not None:
        if not 0.01 <= args.load_width <= 64:
            raise UserError(f"--width {args.load_width:g}: give a multiplier from 0.01 to 64")
        kwargs["width"] = args.load_width
    if getattr(args, "normalization", None):
        shape["normalization"] = parse_normalization(args.normalization)
    return LoadOptions(arch=args.load_arch, trust_code=args.trust_code,
                       unpickle=args.trust_checkpoint, arch_kwargs=kwargs or None,
                       model_dir=getattr(args, "model_dir", None), **shape)


def parse_mapping(text: str, flag: str) -> dict:
    """A YAML (or JSON) mapping typed on the command line."""
    value = parse_yaml(text, f"{flag} (write e.g. '{{depth: 16}}')")
    if not isinstance(value, dict):
        raise UserError(f"{flag}: give a mapping of argument names to values, e.g. "
                        "'{depth: 16}'")
    return value


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration values the user typed, as dotted keys (top-level settings as they
    are)."""
    return {k: v for k, v in vars(args).items()
            if v is not None and ("." in k or k in ("device", "aligned"))}

