"""Reference-strength verification of chosen points of a path.

At each point (the endpoints, the best t, the t of the worst robust loss) the same test images
are attacked by the path's own attack, by standard AutoAttack from its reference implementation
(``pyautoattack``, when installed) and by robust-mc's torchattacks-built AutoAttack, and the
gradient-masking checks of :mod:`robust_mc.evaluation.masking` run. A point is flagged when its
path-attack figure exceeds AutoAttack's by more than the threshold, or when a check fails.
Everything is measured in float32, whatever precision the run's attacks used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from robust_mc.attacks.reference import INSTALL_HINT, ReferenceAutoAttack, reference_version
from robust_mc.data import Split
from robust_mc.evaluation.masking import CheckResult, Probe, masking_checks, percent
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.evaluation.settings import VerifyConfig
from robust_mc.run.runtime import Runtime, SpeedConfig
from robust_mc.settings import to_dict

TORCHATTACKS_AUTOATTACK = "autoattack"


@dataclass
class PointVerification:
    """One verified point: its robust accuracies under each attack (percent, on ``images``
    test images), the checks, and whether it is flagged."""

    t: float
    roles: list[str]  # a, b, best, worst
    images: int
    clean_acc: float
    path_attack: str
    path_robust_acc: float
    autoattack: float | None  # the reference's standard AutoAttack; None if not installed
    autoattack_torchattacks: float
    pgd: dict[str, float] = field(default_factory=dict)  # the checks' own PGD figures
    checks: list[CheckResult] = field(default_factory=list)
    reference_warnings: list[str] = field(default_factory=list)
    threshold: float = 1.5
    seconds: float = 0.0

    @property
    def autoattack_figure(self) -> float:
        """AutoAttack's robust accuracy: the reference's, else the torchattacks one."""
        return self.autoattack_torchattacks if self.autoattack is None else self.autoattack

    @property
    def gap(self) -> float:
        """How far the path's attack overstates robust accuracy (points)."""
        return self.path_robust_acc - self.autoattack_figure

    @property
    def strongest_attack(self) -> str:
        """The single gradient attack of the checks with the lowest robust accuracy."""
        return min(self.pgd.items(), key=lambda kv: kv[1])[0] if self.pgd else "apgd-ce"

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def flagged(self) -> bool:
        return abs(self.gap) > self.threshold or bool(self.failed)

    @property
    def hints(self) -> list[str]:
        hints = []
        if self.gap > self.threshold:
            hints.append(f"{self.path_attack} overstates robust accuracy by {self.gap:.1f} "
                         f"points: evaluate the path with --eval-attack {self.strongest_attack} "
                         "(the strongest single attack here) or autoattack")
        elif self.gap < -self.threshold:
            hints.append(f"AutoAttack found {-self.gap:.1f} points more robust accuracy than "
                         f"{self.path_attack}: the images or seeds differ; compare on more "
                         "--verify-images")
        return hints + [c.hint for c in self.failed if c.hint]

    def to_state(self) -> dict:
        return {"t": self.t, "roles": self.roles, "images": self.images,
                "clean_acc": self.clean_acc, "path_attack": self.path_attack,
                "path_robust_acc": self.path_robust_acc, "autoattack": self.autoattack,
                "autoattack_torchattacks": self.autoattack_torchattacks, "pgd": self.pgd,
                "gap": self.gap, "checks": [c.to_state() for c in self.checks],
                "reference_warnings": self.reference_warnings, "threshold": self.threshold,
                "flagged": self.flagged, "hints": self.hints, "seconds": self.seconds}

    @classmethod
    def from_state(cls, state: dict) -> PointVerification:
        """The point :meth:`to_state` wrote; ValueError for a field of another type or range
        (accuracies are percentages, t is in [0, 1])."""
        def number(key: str, lo: float = -math.inf, hi: float = math.inf) -> bool:
            value = state[key]
            return (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and lo <= value <= hi)

        accuracies = ["clean_acc", "path_robust_acc", "autoattack_torchattacks"]
        if state.get("autoattack") is not None:
            accuracies.append("autoattack")
        if not (number("t", 0, 1) and all(number(k, 0, 100) for k in accuracies)
                and number("images", 0) and isinstance(state["path_attack"], str)
                and isinstance(state["roles"], list)
                and all(isinstance(r, str) for r in state["roles"])):
            raise ValueError("a verified point holds t in [0, 1], accuracies in percent, its "
                             "image count, the path's attack and its roles")
        return cls(state["t"], list(state["roles"]), state["images"], state["clean_acc"],
                   state["path_attack"], state["path_robust_acc"], state["autoattack"],
                   state["autoattack_torchattacks"], dict(state.get("pgd") or {}),
                   [CheckResult.from_state(c) for c in state.get("checks") or []],
                   list(state.get("reference_warnings") or []), state.get("threshold", 1.5),
                   state.get("seconds", 0.0))


@dataclass
class Verification:
    """summary.json's ``verification`` section: every verified point, with the settings and the
    reference implementation it ran with."""

    points: list[PointVerification]
    settings: dict
    reference: str | None  # e.g. "pyautoattack 0.2.0"; None: not installed
    eps: float

    @property
    def flagged(self) -> list[PointVerification]:
        return [p for p in self.points if p.flagged]

    def to_state(self) -> dict:
        return {"reference": self.reference or f"not installed ({INSTALL_HINT})",
                "eps": self.eps, "settings": self.settings,
                "points": [p.to_state() for p in self.points],
                "flagged": [p.t for p in self.flagged]}

    @classmethod
    def from_state(cls, state: dict | None) -> Verification | None:
        if not state:
            return None
        reference = state.get("reference")
        installed = reference if reference and not reference.startswith("not installed") \
            else None
        return cls([PointVerification.from_state(p) for p in state["points"]],
                   dict(state.get("settings") or {}), installed, state.get("eps", 0.0))


def points_to_verify(ts: Sequence[float], robust_losses: Sequence[float],
                     best_t: float | None) -> dict[float, list[str]]:
    """t -> roles: the endpoints, the best t and the t of the worst robust loss, each once."""
    chosen: dict[float, list[str]] = {}
    worst = ts[max(range(len(ts)), key=lambda i: robust_losses[i])]
    for t, role in ((ts[0], "a"), (ts[-1], "b"), (best_t, "best"), (worst, "worst")):
        if t is not None:
            chosen.setdefault(t, []).append(role)
    return dict(sorted(chosen.items()))


def verify_point(model: nn.Module, t: float, roles: list[str], images: Split, *,
                 path_attack: str, eps: float, norm: str, num_classes: int,
                 settings: VerifyConfig, runtime: Runtime, batch_size: int) -> PointVerification:
    """Every attack and check on ``model`` over ``images`` (float32, seeded)."""
    start = time.perf_counter()
    # float32, the default layout: reference conditions
    exact = Runtime(runtime.device, SpeedConfig(precision="float32"))
    probe = Probe(model, images, eps, norm, num_classes, exact, batch_size, settings.seed)
    clean_ok, path_flags = probe.outcomes(path_attack)  # the path's attack, once
    clean_acc = percent(clean_ok)
    reference: float | None = None
    warnings: list[str] = []
    if reference_version() is not None:
        ref = ReferenceAutoAttack(eps, norm, settings.seed, batch_size)
        reference = evaluate_seeded(model, images, ref, exact, len(images),
                                    settings.seed).robust_acc
        warnings = ref.warnings
    ta = probe.robust_acc(f"{TORCHATTACKS_AUTOATTACK}:seed={settings.seed}")
    checks, pgd = masking_checks(probe, clean_acc, {path_attack: path_flags},
                                 settings.square_queries)
    return PointVerification(t, roles, len(images), clean_acc, path_attack,
                             percent(path_flags), reference, ta, pgd, checks, warnings,
                             settings.threshold, time.perf_counter() - start)


def verification_settings(settings: VerifyConfig) -> dict:
    return {k: v for k, v in to_dict(settings).items() if k != "enabled"}
