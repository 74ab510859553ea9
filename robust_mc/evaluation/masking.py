"""Gradient-masking checks on one model, in the spirit of AutoAttack's own ``checks.py``.

A model whose gradients vanish, saturate or lie (quantised inputs, huge logit scales, random
layers) makes gradient attacks look weak and the model look robust. Each check here measures
one symptom on the images being verified and says what it saw:

- ``falls with eps``: robust accuracy under PGD does not rise as eps grows;
- ``zero at large eps``: at a radius that reaches far from every image it is about zero;
- ``more steps``: more PGD steps and restarts never raise it;
- ``black-box``: Square, which uses no gradients, does not beat the gradient attacks;
- ``gradients``: the input gradient of the loss is non-zero and finite;
- ``softmax``: the softmax is not saturated (a CE gradient that rounds to zero);
- ``deterministic``: two passes give the same logits (no randomness to average over).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robust_mc.attacks import build_attack
from robust_mc.data import Split, batches
from robust_mc.evaluation.robustness import attack_outcomes
from robust_mc.run.runtime import Runtime

SWEEP = (0.5, 1.0, 2.0, 4.0)  # radii of the eps sweep, as multiples of eps
LARGE_EPS_LINF = 0.5  # every image reaches mid-grey: nothing should stay robust
LARGE_EPS_MAX_ACC = 5.0  # percent robust accuracy allowed at the large radius
SHARE_ALLOWED = 0.01  # of images with a vanished gradient or a saturated softmax
SATURATED = 1 - 2.0 ** -24  # float32 softmax maximum indistinguishable from 1
BASE_PGD = "pgd:steps=20"
STRONG_PGD = "pgd:steps=100,restarts=3"
WHITE_BOX = ("apgd-ce", "apgd-t")  # run with the probe's seed, beside the PGD checks


@dataclass(frozen=True)
class CheckResult:
    """One check at one point: its name, whether it passed, what it saw and, if it failed,
    what to do."""

    name: str
    passed: bool
    saw: str
    hint: str = ""

    def to_state(self) -> dict:
        return {"name": self.name, "passed": self.passed, "saw": self.saw, "hint": self.hint}

    @classmethod
    def from_state(cls, state: dict) -> CheckResult:
        return cls(state["name"], bool(state["passed"]), state["saw"], state.get("hint", ""))


@dataclass(frozen=True)
class Probe:
    """What the checks measure against: the model, the images, the threat model and how to
    run an attack on them reproducibly."""

    model: nn.Module
    images: Split
    eps: float
    norm: str
    num_classes: int
    runtime: Runtime
    batch_size: int
    seed: int

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def noise(self) -> float:
        """Accuracy points one image is worth (at least half a point): the tolerance of every
        comparison between two attacks on the same images."""
        return max(0.5, 100.0 / max(self.count, 1))

    def outcomes(self, spec: str, eps: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: classified correctly clean, and also under the attack ``spec`` (at
        ``eps``)."""
        attack = build_attack(spec, eps=self.eps if eps is None else eps, norm=self.norm,
                              num_classes=self.num_classes)
        return attack_outcomes(self.model, self.images, attack, self.runtime, self.batch_size,
                               self.seed)

    def robust_flags(self, spec: str, eps: float | None = None) -> torch.Tensor:
        """Per image: still classified correctly under the attack ``spec`` (at ``eps``)."""
        return self.outcomes(spec, eps)[1]

    def robust_acc(self, spec: str, eps: float | None = None) -> float:
        return percent(self.robust_flags(spec, eps))

    @property
    def large_eps(self) -> float:
        """L-inf 0.5 (any image reaches mid-grey), or the L2 ball holding that L-inf ball."""
        if self.norm == "linf":
            return LARGE_EPS_LINF
        return LARGE_EPS_LINF * math.sqrt(self.images.images[0].numel())


def percent(flags: torch.Tensor) -> float:
    return 100.0 * flags.double().mean().item() if flags.numel() else 0.0


def _percents(values: list[float]) -> str:
    return " -> ".join(f"{v:.1f}%" for v in values)


def eps_checks(probe: Probe, clean_acc: float) -> tuple[list[CheckResult], float]:
    """``falls with eps`` and ``zero at large eps``; also returns PGD's figure at eps."""
    radii = [f * probe.eps for f in SWEEP if f * probe.eps < probe.large_eps]
    accs = [probe.robust_acc(BASE_PGD, eps) for eps in radii]
    at_eps = accs[radii.index(probe.eps)] if probe.eps in radii else probe.robust_acc(BASE_PGD)
    large = probe.robust_acc(BASE_PGD, probe.large_eps)
    series = [clean_acc, *accs, large]
    rises = [(a, b) for a, b in zip(series, series[1:], strict=False) if b > a + probe.noise]
    shown = ", ".join(f"{e * 255:.3g}/255" for e in [0, *radii, probe.large_eps])
    falls = CheckResult(
        "falls with eps", not rises, f"{_percents(series)} at eps {shown}",
        "" if not rises else "robust accuracy rises with the radius: the attack does not "
        "converge; evaluate with --eval-attack apgd-ce or autoattack")
    zero = CheckResult(
        "zero at large eps", large <= LARGE_EPS_MAX_ACC,
        f"{large:.1f}% robust at eps {probe.large_eps * 255:.3g}/255 (at most "
        f"{LARGE_EPS_MAX_ACC:g}% expected)",
        "" if large <= LARGE_EPS_MAX_ACC else "PGD cannot move the inputs even far away: "
        "gradients are masked (non-differentiable or saturating layers); use --eval-attack "
        "autoattack, whose Square needs no gradients")
    return [falls, zero], at_eps


def steps_check(probe: Probe, base_acc: float) -> tuple[CheckResult, float]:
    """More steps and restarts never raise robust accuracy; returns the strong attack's
    figure."""
    strong = probe.robust_acc(STRONG_PGD)
    passed = strong <= base_acc + probe.noise
    return CheckResult(
        "more steps", passed, f"{BASE_PGD} {base_acc:.1f}%, {STRONG_PGD} {strong:.1f}%",
        "" if passed else "a stronger PGD found fewer adversarial examples: the loss surface "
        "is noisy or randomised; raise restarts or use --eval-attack autoattack"), strong


def black_box_check(probe: Probe, white_box: dict[str, torch.Tensor],
                    queries: int) -> CheckResult:
    """Square (no gradients) must not break images that every gradient attack left standing
    (as AutoAttack's own check: beyond noise, Square's extra successes mean masking)."""
    square = probe.robust_flags(f"square:queries={queries},seed={probe.seed}")
    survived = torch.stack(list(white_box.values())).all(0)
    extra = survived & ~square
    share = percent(extra)
    passed = share <= probe.noise
    return CheckResult(
        "black-box", passed, f"square ({queries} queries) {percent(square):.1f}%, gradient "
        f"attacks together {percent(survived):.1f}%: square alone broke {int(extra.sum())} "
        "more images",
        "" if passed else "a black-box attack breaks what the gradient attacks cannot: "
        "gradient masking; evaluate with --eval-attack autoattack")


def gradient_checks(probe: Probe) -> list[CheckResult]:
    """``gradients``, ``softmax`` and ``deterministic``, from one pass over the images."""
    model = probe.model
    was_training = model.training
    model.eval()
    zero = nonfinite = saturated = changed = 0
    margins: list[torch.Tensor] = []
    try:
        for x, y in batches(probe.images.to(probe.runtime.device), probe.batch_size):
            x = probe.runtime.images(x).float().requires_grad_(True)
            logits = model(x).float()
            loss = F.cross_entropy(logits, y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            flat = grad.flatten(1)
            finite = torch.isfinite(flat).all(1)
            nonfinite += int((~finite).sum())
            zero += int((finite & (flat == 0).all(1)).sum())
            with torch.no_grad():
                probs = logits.softmax(1)
                saturated += int((probs.max(1).values >= SATURATED).sum())
                top2 = logits.topk(min(2, logits.shape[1]), 1).values
                margins.append(top2[:, 0] - top2[:, -1])
                again = model(x.detach()).float()
                changed += int((again != logits).any(1).sum())
    finally:
        model.train(was_training)
    n = max(probe.count, 1)
    allowed = SHARE_ALLOWED * n
    margin = torch.cat(margins).median().item() if margins else float("nan")
    vanished = zero + nonfinite
    return [
        CheckResult("gradients", vanished <= allowed,
                    f"{zero} of {n} images with a zero input gradient, {nonfinite} non-finite",
                    "" if vanished <= allowed else "the loss has no usable input gradient: "
                    "gradient attacks cannot work here; use --eval-attack autoattack (its Square "
                    "needs no gradients) and look for non-differentiable layers"),
        CheckResult("softmax", saturated <= allowed,
                    f"{saturated} of {n} images with a saturated softmax; median logit margin "
                    f"{margin:.3g}",
                    "" if saturated <= allowed else "the logits are so large that cross-entropy "
                    "gradients vanish: use --eval-attack apgd-dlr (scale-invariant loss) or "
                    "autoattack"),
        CheckResult("deterministic", changed == 0,
                    f"{changed} of {n} images with different logits on a second pass",
                    "" if changed == 0 else "the model is randomised: average gradients over "
                    "draws (EOT) before trusting any attack"),
    ]


def masking_checks(probe: Probe, clean_acc: float, path_flags: dict[str, torch.Tensor],
                   square_queries: int) -> tuple[list[CheckResult], dict[str, float]]:
    """Every check, and the robust accuracies of the gradient attacks it ran (PGD-20, PGD-100
    with 3 restarts, APGD-CE, APGD-T) to show beside the path's own (``path_flags``: its
    per-image results)."""
    checks: list[CheckResult] = []
    eps_results, base = eps_checks(probe, clean_acc)
    checks += eps_results
    steps, strong = steps_check(probe, base)
    checks.append(steps)
    flags = {spec: probe.robust_flags(f"{spec}:seed={probe.seed}") for spec in WHITE_BOX}
    checks.append(black_box_check(probe, {**path_flags, **flags}, square_queries))
    checks += gradient_checks(probe)
    figures = {BASE_PGD: base, STRONG_PGD: strong,
               **{spec: percent(f) for spec, f in flags.items()}}
    return checks, figures
