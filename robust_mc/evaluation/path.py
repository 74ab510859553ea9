"""Evaluation along a path: at each t, the network at t with recomputed batch-norm statistics,
measured clean and under the eval attack on the validation and the test split."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from robust_mc.attacks import Attack, build_attack
from robust_mc.attacks.training import AttackConfig
from robust_mc.core.curves import Curve
from robust_mc.core.fold import fold_batchnorm
from robust_mc.core.spec import drop_inference_caches
from robust_mc.data import Data, Split, batches
from robust_mc.evaluation.robustness import Clock, Metrics, evaluate_seeded
from robust_mc.evaluation.segment_repair import SegmentRepair, repair_inputs
from robust_mc.evaluation.settings import PathConfig
from robust_mc.models import Classifier
from robust_mc.run import distributed
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime


@dataclass
class PointResult:
    t: float
    val: Metrics
    test: Metrics
    seconds: dict[str, float] = field(default_factory=dict)  # bn, clean, attack

    def row(self, split: str) -> dict:
        return {"t": self.t, "split": split, **getattr(self, split).as_dict()}

    def as_dict(self) -> dict:
        return {"t": self.t, "val": self.val.as_dict(), "test": self.test.as_dict(),
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> PointResult:
        """The point :meth:`as_dict` wrote; ValueError for anything else."""
        t = d["t"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
            raise ValueError(f"t must be a number in [0, 1], not {t!r}")
        seconds = dict(d["seconds"])
        if not all(isinstance(v, (int, float)) for v in seconds.values()):
            raise ValueError("seconds must be numbers")
        return cls(float(t), Metrics.from_state(d["val"]), Metrics.from_state(d["test"]), seconds)


BN_BATCH_SIZE = 250  # fixed, so that the same weights always get the same statistics


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recompute_batchnorm(model: nn.Module, split: Split, *, images: int, data: str,
                        attack: AttackConfig, runtime: Runtime, seed: int = 0) -> None:
    """Reset every BN layer's running statistics and re-estimate them as an equal-weight average
    over batches of the first ``images`` training images, clean or adversarial (PGD against the
    network itself in train mode, running statistics untouched by the attack, random starts drawn
    from ``seed``): a deterministic function of the weights, so an endpoint whose statistics were
    made this way is reproduced exactly at its end of a path. The attack runs in the runtime's
    precision, the statistics pass in float32."""
    norms = batchnorm_layers(model)
    if not norms:  # LayerNorm and GroupNorm normalise each input themselves
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    generator = torch.Generator(runtime.device).manual_seed(seed)
    # the procedure's own mode: the statistics are the batch's
    pgd = build_attack(attack, mode="train")
    try:
        for x, y in batches(split.take(images).to(runtime.device), BN_BATCH_SIZE):
            x = runtime.images(x)
            if data == "adversarial":
                with runtime.autocast():
                    x = pgd(model, x, y, generator)
            with torch.no_grad():
                model(x)  # float32: the statistics define the network at t
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()


class PathNetworks:
    """The networks along one path, each built as ``path`` says: the curve's weights at t,
    batch-norm statistics recomputed (``reset``) or the endpoints' interpolated (``off``), and
    with ``repair`` every unit's statistics repaired to the interpolation of the endpoints'
    (:mod:`robust_mc.evaluation.segment_repair`). ``template`` is endpoint a (its architecture
    and buffers), ``endpoint_b`` the b the path ends at (its buffers, for ``off``). At t = 0 and
    1 the network is the endpoint and nothing is corrected."""

    def __init__(self, curve: Curve, template: Classifier, data: Data, path: PathConfig,
                 attack: AttackConfig, runtime: Runtime,
                 endpoint_b: Classifier | None = None) -> None:
        self.curve, self.template, self.data, self.path = curve, template, data, path
        self.attack, self.runtime, self.endpoint_b = attack, runtime, endpoint_b
        self.repair = SegmentRepair(lambda: (self._built(curve.weights_at(0.0), 0.0, None),
                                             self._built(curve.weights_at(1.0), 1.0, None)),
                                    repair_inputs(data.train, path, attack, runtime))

    def at(self, t: float, timings: dict | None = None) -> Classifier:
        """The network at ``t`` of the curve."""
        return self.network(self.curve.weights_at(t), t, timings, endpoint=t in (0, 1))

    def network(self, weights: dict[str, torch.Tensor], t: float, timings: dict | None = None,
                endpoint: bool = False) -> Classifier:
        """A network with ``weights`` that stands at ``t`` between the endpoints (a point of the
        path, or of the plane through it), its statistics as ``path`` says; an ``endpoint`` is
        not repaired."""
        model = self._built(weights, t, timings)
        if self.path.repair == "repair" and not endpoint:
            with Clock(self.runtime.device, timings)("repair"):
                self.repair(model, t)
        return model

    def _built(self, weights: dict[str, torch.Tensor], t: float,
               timings: dict | None) -> Classifier:
        if self.path.repair != "off" or not batchnorm_layers(self.template):
            return network_with(self.template, weights, self.data, self.path, self.attack,
                                self.runtime, timings)
        if self.endpoint_b is None:
            raise ValueError("repair off interpolates the endpoints' BN statistics: "
                             "give endpoint_b")
        model = _copy_with(self.template, weights)
        interpolate_batchnorm(model, self.template, self.endpoint_b, t)
        return model


def interpolate_batchnorm(model: nn.Module, a: nn.Module, b: nn.Module, t: float) -> None:
    """Every BN layer's running statistics set to the interpolation of ``a``'s and ``b``'s (no
    correction: what the endpoints recorded, mixed)."""
    buffers_a, buffers_b = dict(a.named_buffers()), dict(b.named_buffers())
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.copy_((1 - t) * buffers_a[name] + t * buffers_b[name])


def network_with(template: Classifier, weights: dict[str, torch.Tensor], data: Data,
                 path: PathConfig, attack: AttackConfig, runtime: Runtime,
                 timings: dict | None = None) -> Classifier:
    """A standalone copy of ``template`` with ``weights`` (name -> tensor, any point of the
    weight space) and BN statistics recomputed as ``path`` says."""
    model = _copy_with(template, weights)
    with Clock(runtime.device, timings)("bn"):
        recompute_batchnorm(model, data.train, images=path.bn_images, data=path.bn_data,
                            attack=attack, runtime=runtime, seed=path.seed)
    return model


def _copy_with(template: Classifier, weights: dict[str, torch.Tensor]) -> Classifier:
    model = copy.deepcopy(template)
    with torch.no_grad():
        for name, value in weights.items():
            model.get_parameter(name).copy_(value)
    drop_inference_caches(model)
    return model


def path_attack(path: PathConfig, attack: AttackConfig, num_classes: int) -> Attack:
    return build_attack(path.attack, eps=attack.eps, norm=attack.norm, num_classes=num_classes)


def evaluate_path(curve: Curve, template: Classifier, data: Data, path: PathConfig,
                  attack: AttackConfig, runtime: Runtime, reporter: Reporter, label: str,
                  keep_best: bool = True, done: list[PointResult] | None = None,
                  after_point: Callable[[list[PointResult]], None] | None = None,
                  endpoint_b: Classifier | None = None,
                  known: dict[float, PointResult] | None = None,
                  ) -> tuple[list[PointResult], Classifier | None]:
    """Evaluate ``path.points`` evenly spaced t; returns the results and, with ``keep_best``,
    the interior network with the highest validation robust accuracy. On several processes the
    t are shared out, each evaluated as one process would (the same seeds), and gathered.

    ``done`` holds the first points already evaluated (a resumed run); ``after_point`` sees the
    points so far after each new one (to save them, or to stop); ``known`` holds points whose
    network another path of the same run has already measured (its endpoints), taken as
    they are."""
    ts = torch.linspace(0, 1, path.points).tolist()
    val = data.val.take(path.val_limit)
    test = data.test.take(path.test_limit)
    eval_attack = path_attack(path, attack, data.info.num_classes)
    results: list[PointResult] = list(done or [])
    best: tuple[float, float, Classifier | None] | None = None  # (val robust acc, t, network)

    def consider(point: PointResult, model: Classifier | None) -> None:
        nonlocal best
        if keep_best and 0 < point.t < 1 and (best is None or point.val.robust_acc > best[0]):
            best = (point.val.robust_acc, point.t, model)

    for point in results:
        consider(point, None)
    along = PathNetworks(curve, template, data, path, attack, runtime, endpoint_b)
    networks: dict[float, Classifier] = {}  # those this process built: the best one is kept

    def evaluate_at(t: float) -> PointResult:
        if known and t in known:
            return known[t]
        timings: dict[str, float] = {}
        start = time.perf_counter()
        model = along.at(t, timings)
        folded = fold_batchnorm(model)  # one eval-mode copy for both splits
        val_metrics = evaluate_seeded(folded, val, eval_attack, runtime, path.batch_size,
                                      path.seed, timings, fold=False)
        test_metrics = evaluate_seeded(folded, test, eval_attack, runtime, path.batch_size,
                                       path.seed, timings, fold=False)
        timings["total"] = time.perf_counter() - start
        networks[t] = model
        return PointResult(t, val_metrics, test_metrics, timings)

    with reporter.task(f"evaluate {label}", len(ts)) as step:
        step.advance(len(results))

        def record(_: int, point: PointResult) -> None:
            results.append(point)
            consider(point, networks.pop(point.t, None))  # built here, or None
            step.advance(1, f"t={point.t:.2f} robust {point.test.robust_acc:.1f}%")
            if after_point is not None:
                after_point(results)

        # on several processes the t are shared out, each evaluated as one process would
        distributed.group().map(evaluate_at, ts[len(results):], record)
    if best is None:
        return results, None
    _, t_best, network = best
    if network is None:  # found among the points of an earlier, interrupted run
        network = along.at(t_best)
    return results, network
