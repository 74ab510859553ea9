"""The one CLI vocabulary: every command that takes a flag takes it with the same meaning.

Flags that set configuration use dotted ``dest`` names (``attack.eps``) and default to ``None``,
so only what the user typed overrides the YAML file and the defaults.
"""

from __future__ import annotations

import argparse
from typing import Any

from robust_mc.run.checkpoint import LoadOptions
from robust_mc.run.resume import ResumePolicy

BOOL = argparse.BooleanOptionalAction


def add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML preset: a path or a name in configs/")


def add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", dest="data.dataset", metavar="NAME",
                   help="cifar10, cifar100, imagefolder:PATH, digits or synthetic")
    g.add_argument("--data-dir", dest="data.data_dir", metavar="DIR",
                   help="where cifar10/cifar100 live")
    g.add_argument("--download", dest="data.download", action="store_const", const=True,
                   help="let torchvision download cifar10/cifar100 into --data-dir")
    g.add_argument("--val-size", dest="data.val_size", metavar="N",
                   help="validation images carved from train (default 10%%, at most 5000)")
    g.add_argument("--train-limit", dest="data.train_limit", metavar="N",
                   help="use only the first N training images")
    g.add_argument("--test-limit", dest="data.test_limit", metavar="N",
                   help="use only the first N test images")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--arch", dest="model.arch", metavar="NAME|file.py:Class",
                   help="architecture: a zoo name, path/file.py:Class or module:Class")
    g.add_argument("--width", dest="model.width", metavar="X", help="width multiplier")


def add_attack_flags(p: argparse.ArgumentParser, what: str = "training") -> None:
    g = p.add_argument_group(f"{what} attack (PGD)")
    g.add_argument("--eps", dest="attack.eps", metavar="EPS",
                   help="radius in [0,1] pixel units: 8/255 or 0.031")
    g.add_argument("--norm", dest="attack.norm", choices=["linf", "l2"])
    g.add_argument("--attack-steps", dest="attack.steps", metavar="K", help="PGD iterations")
    g.add_argument("--attack-step-size", dest="attack.step_size", metavar="ALPHA",
                   help="PGD step in pixel units (default eps/4)")
    g.add_argument("--attack-mode", dest="attack.mode", choices=["train", "eval"],
                   help="network mode while attacking in training (train: batch statistics)")


def add_optim_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", dest="optim.epochs", metavar="N")
    g.add_argument("--batch-size", dest="optim.batch_size", metavar="N")
    g.add_argument("--lr", dest="optim.lr", metavar="LR")
    g.add_argument("--weight-decay", dest="optim.weight_decay", metavar="WD")
    g.add_argument("--schedule", dest="optim.schedule", choices=["piecewise", "cosine", "constant"])
    g.add_argument("--seed", dest="optim.seed", metavar="N", help="seed of the run")


def add_fault_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("resuming and faults")
    g.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (rerunning into the same --out also "
                        "continues it); an error if there is none")
    g.add_argument("--fresh", action="store_true",
                   help="discard a run saved in --out and start over")
    g.add_argument("--save-every", dest="optim.save_every", metavar="N",
                   help="epochs between saved states (default 1; also at the end and on Ctrl-C)")
    g.add_argument("--skip-nonfinite", dest="optim.skip_nonfinite", metavar="N",
                   help="skip up to N batches whose loss is NaN or inf instead of stopping")
    g.add_argument("--deterministic", dest="speed.deterministic", action="store_const",
                   const=True, help="torch's deterministic algorithms and every seed set")


def resume_policy(args: argparse.Namespace) -> ResumePolicy:
    """``--resume`` (a saved run must exist), ``--fresh`` (ignore one), or neither (continue
    one of the same settings)."""
    return ResumePolicy.from_flags(args.resume, args.fresh)


def add_align_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("alignment")
    g.add_argument("--align-method", dest="align.method", choices=["corr", "weights"],
                   help="corr: activation correlation (Tatro et al.); weights: weight matching")
    g.add_argument("--align-inputs", dest="align.inputs", choices=["clean", "adversarial"],
                   help="activations on clean images or on each model's own PGD examples")
    g.add_argument("--align-samples", dest="align.samples", metavar="N",
                   help="training images used for alignment (default 5000)")


def add_curve_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("curve")
    g.add_argument("--curve", dest="curve.kind", choices=["line", "bezier", "polychain"])
    g.add_argument("--bends", dest="curve.bends", metavar="N", help="trainable control points")
    g.add_argument("--objective", dest="curve.objective",
                   choices=["adversarial", "trades", "clean"])


def add_pam_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("PAM (permutation updates during curve training)")
    g.add_argument("--pam", dest="pam.enabled", action="store_const", const=True,
                   help="alternate curve training with permutation updates of b, starting from "
                        "the alignment (or from b as given with --no-align)")
    g.add_argument("--pam-outer", dest="pam.outer", metavar="N",
                   help="permutation updates, evenly spaced (default 2)")
    g.add_argument("--pam-perm-epochs", dest="pam.perm_epochs", metavar="N",
                   help="epochs of each permutation update (default 1)")
    g.add_argument("--pam-lr", dest="pam.lr", metavar="LR",
                   help="proximal gradient step on the relaxed permutations (default 3000)")
    g.add_argument("--pam-prox", dest="pam.prox", metavar="W",
                   help="weight of the proximal term (default 0.01)")


def add_path_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation along the path")
    g.add_argument("--points", dest="path.points", metavar="N",
                   help="values of t, endpoints included (default 11)")
    g.add_argument("--eval-attack", dest="path.attack", metavar="SPEC",
                   help="e.g. pgd:steps=20 (alpha eps/4), apgd-ce, autoattack")
    g.add_argument("--bn-data", dest="path.bn_data", choices=["clean", "adversarial"],
                   help="images for recomputing batch-norm statistics at each t")
    g.add_argument("--bn-images", dest="path.bn_images", metavar="N",
                   help="training images for the BN statistics (default 2000)")
    g.add_argument("--eval-batch-size", dest="path.batch_size", metavar="N")
    g.add_argument("--val-limit", dest="path.val_limit", metavar="N",
                   help="evaluate only N validation images")
    g.add_argument("--eval-test-limit", dest="path.test_limit", metavar="N",
                   help="evaluate only N test images")
    g.add_argument("--compare-line", dest="path.compare_line", action="store_const", const=True,
                   help="also evaluate the straight lines between the endpoints")


def add_no_align_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-align", dest="aligned", action="store_const", const=False,
                   help="use the endpoints as given, without aligning b to a")


def add_eval_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-attack", dest="eval.attack", metavar="SPEC",
                   help="e.g. pgd:steps=20,alpha=2/255, apgd-ce, autoattack, none")


def add_speed_flags(p: argparse.ArgumentParser, compiles: bool = False) -> None:
    """Device, precision, layout and threads; ``--compile`` only where the command compiles
    every network it trains and attacks (``train``)."""
    g = p.add_argument_group("speed")
    g.add_argument("--device", dest="device", metavar="auto|cpu|cuda")
    g.add_argument("--precision", dest="speed.precision", choices=["auto", "float32", "bfloat16"],
                   help="autocast dtype (auto: bfloat16 on CUDA GPUs that support it)")
    g.add_argument("--channels-last", dest="speed.channels_last", action=BOOL, default=None,
                   help="NHWC memory layout")
    if compiles:
        g.add_argument("--compile", dest="speed.compile", action=BOOL, default=None,
                       help="torch.compile the network for its training passes")
    g.add_argument("--threads", dest="speed.threads", metavar="N", help="CPU threads")
    g.add_argument("--reuse-memory", dest="speed.reuse_memory", action=BOOL, default=None,
                   help="keep freed CPU memory for the next tensors (default on; glibc)")


def add_output_flags(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--out", "-o", metavar="PATH", help=out_help)
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def add_model_file_flags(p: argparse.ArgumentParser) -> None:
    """How model files are read: the same flags, with the same meaning, on every command that
    reads one."""
    g = p.add_argument_group("model files")
    g.add_argument("--arch", dest="load_arch", metavar="NAME|file.py:Class",
                   help="architecture of a plain state_dict; for a file that records an import "
                        "spec (file.py:Class, module:Class), naming the same spec allows it")
    g.add_argument("--trust-code", action="store_true",
                   help="let files name any importable architecture (runs that code)")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of checkpoints (runs code from the file)")


def load_options(args: argparse.Namespace, **shape: Any) -> LoadOptions:
    """What the user said about model files, from :func:`add_model_file_flags`."""
    return LoadOptions(arch=args.load_arch, trust_code=args.trust_code,
                       unpickle=args.trust_checkpoint, **shape)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration values the user typed, as dotted keys."""
    values = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    for key in ("device", "aligned"):  # top-level settings
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return values
