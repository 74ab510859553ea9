"""Where the barrier lives: layer-wise barriers, measured and predicted to second order.

Measured: for each group of parameters (a module's, with a batch norm going with the convolution
it follows; or whole blocks), interpolate only that group linearly from endpoint a to endpoint b
while everything else stays at a, recompute BN statistics as ``connect`` does, and measure clean
and robust loss along t.

Predicted (cf. Singh et al. 2024, "Landscaping Linear Mode Connectivity"): with delta = theta_b -
theta_a restricted to the group, a second-order Taylor expansion of the loss L around each end of
the group's segment (a, and a with the group taken from b; for the whole network, the endpoints
themselves) gives the value at the midpoint m = theta_a + delta / 2:

    from a:  L(m) ~ L_a + 1/2 g_a.delta + 1/8 delta' H_a delta
    from b:  L(m) ~ L_b - 1/2 g_b.delta + 1/8 delta' H_b delta

Averaging the two and subtracting the chord (L_a + L_b) / 2 gives the midpoint barrier

    B = 1/4 (g_a - g_b).delta + 1/16 delta' (H_a + H_b) delta,

exact when L is quadratic along the segment (then g_b = g_a + H delta and B = -1/8 delta' H delta).
It is compared with the measured midpoint gap L(m) - (L_a + L_b) / 2. Hessians enter only through
Hessian-vector products (double backward), never formed. The derivative loss is the training loss
with batch norm in train mode (batch statistics: a function of the parameters alone); for the
robust loss the adversarial examples of each endpoint are computed once and held fixed while
differentiating.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx
from torch import nn
from torch.func import functional_call

from robust_mc.attacks import build_attack
from robust_mc.attacks.training import AttackConfig
from robust_mc.core.curves import Curve
from robust_mc.core.permutation import trace_graph
from robust_mc.data import Data, as_float, batches
from robust_mc.evaluation.path import PathNetworks
from robust_mc.evaluation.robustness import evaluate_seeded
from robust_mc.evaluation.settings import LayersConfig, PathConfig
from robust_mc.models import Classifier
from robust_mc.run import distributed
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params, str], torch.Tensor]  # (parameters, "a"|"b") -> scalar loss


# --- groups -------------------------------------------------------------------------------------

def parameter_groups(model: nn.Module, mode: str = "modules") -> dict[str, list[str]]:
    """Group parameter names: ``modules`` (each conv/linear with the BN right after it, other
    parameterised modules alone) or ``blocks`` (modules merged by their block: the first indexed
    child under a container, e.g. ``net.layers.3``)."""
    owner: dict[str, str] = {}  # module name -> the module whose group it joins
    try:
        gm = trace_graph(model)
        modules = dict(gm.named_modules())
        for node in gm.graph.nodes:
            if node.op != "call_module" or not isinstance(
                    modules.get(node.target), nn.modules.batchnorm._BatchNorm):
                continue
            source = node.args[0]
            if isinstance(source, torch.fx.Node) and source.op == "call_module" and isinstance(
                    modules.get(source.target), (nn.Conv1d, nn.Conv2d, nn.Linear)):
                owner[str(node.target)] = str(source.target)
    except Exception:  # untraceable models still get one group per module
        owner = {}
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        module = name.rpartition(".")[0]
        key = owner.get(module, module)
        if mode == "blocks":
            key = _block_of(model, key)
        groups.setdefault(key, []).append(name)
    return groups


def _block_of(model: nn.Module, module_name: str) -> str:
    parts = module_name.split(".")
    node = model
    for i, part in enumerate(parts):
        child = getattr(node, part, None)
        if child is None:
            break
        if isinstance(node, (nn.Sequential, nn.ModuleList)) and i > 0:
            return ".".join(parts[: i + 1])
        node = child
    return module_name


# --- interpolation and measurement ---------------------------------------------------------------

def interpolated(state_a: Params, state_b: Params, names: Sequence[str], t: float) -> Params:
    """Endpoint a's state with the ``names`` parameters moved a fraction t towards b."""
    out = dict(state_a)
    for name in names:
        out[name] = torch.lerp(state_a[name].float(), state_b[name].float(), t).to(
            state_a[name].dtype)
    return out


@dataclass
class GroupResult:
    name: str
    parameters: int
    ts: list[float]
    clean: list[float]  # measured loss along t
    robust: list[float]
    predicted_clean: float = float("nan")
    predicted_robust: float = float("nan")
    extra: dict = field(default_factory=dict)

    def measured(self, kind: str) -> float:
        """Barrier as connect reports it: max over t above the chord."""
        from robust_mc.evaluation.barriers import barrier

        return barrier(self.ts, getattr(self, kind))[0]

    def midpoint(self, kind: str) -> float:
        """L(midpoint) - (L(0) + L(1)) / 2: the quantity the prediction estimates."""
        values = getattr(self, kind)
        mid = min(range(len(self.ts)), key=lambda i: abs(self.ts[i] - 0.5))
        return values[mid] - (values[0] + values[-1]) / 2

    def as_dict(self) -> dict:
        return {"group": self.name, "parameters": self.parameters, "t": self.ts,
                "clean_loss": self.clean, "robust_loss": self.robust,
                "measured_clean_barrier": self.measured("clean"),
                "measured_robust_barrier": self.measured("robust"),
                "measured_clean_midpoint": self.midpoint("clean"),
                "measured_robust_midpoint": self.midpoint("robust"),
                "predicted_clean_barrier": self.predicted_clean,
                "predicted_robust_barrier": self.predicted_robust, **self.extra}


# --- the second-order prediction ----------------------------------------------------------------

def _twice_differentiable_attention() -> contextlib.AbstractContextManager:
    """``scaled_dot_product_attention`` by its plain formula: the fused CPU kernels have no
    second derivative (a transformer's Hessian-vector products need one)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: one kernel, differentiable twice
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def gradient_and_hvp(loss_fn: LossFn, params: Params, names: Sequence[str], vector: Params,
                     which: str) -> tuple[Params, Params]:
    """Gradient of the loss in the ``names`` parameters, and the Hessian-vector product H v,
    by double backward (H is never formed)."""
    leaves = {n: params[n].detach().clone().requires_grad_(True) for n in names}
    with _twice_differentiable_attention():
        loss = loss_fn({**params, **leaves}, which)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
    dot = torch.stack([(g * vector[n]).sum() for g, n in zip(grads, names, strict=True)]).sum()
    hv = torch.autograd.grad(dot, list(leaves.values()))
    return ({n: g.detach() for n, g in zip(names, grads, strict=True)},
            {n: h.detach() for n, h in zip(names, hv, strict=True)})


def predicted_barrier(loss_fn: LossFn, params_a: Params, params_b: Params,
                      names: Sequence[str]) -> float:
    """B = 1/4 (g_a - g_b).delta + 1/16 delta' (H_a + H_b) delta for the ``names`` group."""
    delta = {n: (params_b[n] - params_a[n]).detach() for n in names}
    g_a, h_a = gradient_and_hvp(loss_fn, params_a, names, delta, "a")
    g_b, h_b = gradient_and_hvp(loss_fn, params_b, names, delta, "b")
    first = sum(((g_a[n] - g_b[n]) * delta[n]).sum() for n in names)
    second = sum(((h_a[n] + h_b[n]) * delta[n]).sum() for n in names)
    return float(first / 4 + second / 16)


def functional_loss(model: nn.Module, batches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]
                    ) -> LossFn:
    """Mean cross-entropy over fixed batches (per endpoint: clean, or its own adversarial
    examples), BN in train mode with batch statistics, as a function of the parameters."""
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def loss(params: Params, which: str) -> torch.Tensor:
        model.train()
        terms, count = [], 0
        for x, y in batches[which]:
            state = {**{k: v.clone() for k, v in buffers.items()}, **params}
            logits = functional_call(model, state, (x,))
            terms.append(torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
            count += y.shape[0]
        return torch.stack(terms).sum() / count

    return loss


# --- the report for two endpoints ---------------------------------------------------------------

def layer_report(model_a: Classifier, model_b: Classifier, data: Data, layers: LayersConfig,
                 path: PathConfig, a: AttackConfig, runtime: Runtime, reporter: Reporter
                 ) -> list[GroupResult]:
    """Measured and predicted clean/robust barriers per group, and for the whole network:
    ``layers`` chooses the groups and images, ``path`` the networks' statistics along each
    group's segment (as along a path: ``repair`` off, reset or repair, the segment's ends as the
    anchors) and the seed, ``a`` the attack of the robust loss."""
    attack = build_attack(a)
    samples = data.train.take(layers.samples).to(runtime.device)
    template = copy.deepcopy(model_a)
    state_a = {k: v.detach() for k, v in model_a.state_dict().items()}
    state_b = {k: v.detach() for k, v in model_b.state_dict().items()}
    ts = torch.linspace(0, 1, layers.points if layers.points % 2 else
                        layers.points + 1).tolist()
    clean_batches = [(runtime.images(as_float(x)), y)
                     for x, y in batches(samples, layers.batch_size)]

    def adversarial(model: nn.Module) -> list:  # held fixed while differentiating
        generator = torch.Generator(runtime.device).manual_seed(path.seed)
        return [(attack(model, x, y, generator), y) for x, y in clean_batches]

    adversarial_a = adversarial(model_a)
    params_a = {n: p.detach() for n, p in model_a.named_parameters()}
    groups = parameter_groups(model_a, layers.groups)
    groups["(whole network)"] = list(params_a)

    def group_result(item: tuple[str, list[str]]) -> GroupResult:
        name, names = item
        segment = GroupSegment(template, state_a, state_b, names, data, path, a, runtime)
        clean, robust = [], []
        for t in ts:
            network = segment.at(t)
            m = evaluate_seeded(network, samples, attack, runtime, layers.batch_size,
                                path.seed)
            clean.append(m.clean_loss)
            robust.append(m.robust_loss)
        far = network  # ts ends at 1: the segment's far end
        result = GroupResult(name.removeprefix("net."),
                             sum(params_a[n].numel() for n in names), ts, clean, robust)
        for kind, fixed in (("clean", (clean_batches, clean_batches)),
                            ("robust", (adversarial_a, adversarial(far)))):
            loss = functional_loss(template, {"a": fixed[0], "b": fixed[1]})
            setattr(result, f"predicted_{kind}",
                    predicted_barrier(loss, params_a, segment.far, names))
        return result

    with reporter.task("layer-wise barriers", len(groups)) as step:
        # on several processes the groups are shared out and gathered
        return distributed.group().map(group_result, list(groups.items()),
                                       lambda _, result: step.advance(1, result.name))


class GroupSegment:
    """The segment from endpoint a to a with one group of parameters taken from b (its far
    end): at t, the group moved a fraction t of the way, every other parameter exactly a's, the
    statistics as along a path (:class:`~robust_mc.evaluation.path.PathNetworks`, the segment's
    ends as its endpoints; ``off`` interpolates the group's batch-norm statistics)."""

    def __init__(self, template: Classifier, state_a: Params, state_b: Params,
                 names: Sequence[str], data: Data, path: PathConfig, attack: AttackConfig,
                 runtime: Runtime) -> None:
        self.state_a, self.state_b, self.names = state_a, state_b, names
        moved = set(names)
        self.far = {n: (state_b if n in moved else state_a)[n]
                    for n, _ in template.named_parameters()}  # the far end's parameters
        far_network = copy.deepcopy(template)
        owners = {n.rpartition(".")[0] for n in names}
        far_network.load_state_dict({**state_a, **{k: v for k, v in state_b.items()
                                                   if k.rpartition(".")[0] in owners}})
        line = Curve.between("line", template, state_a, self.far)
        self.along = PathNetworks(line, template, data, path, attack, runtime, far_network)

    def at(self, t: float) -> Classifier:
        weights = interpolated(self.state_a, self.state_b, self.names, t)
        return self.along.network({n: weights[n] for n in self.along.curve.names}, t,
                                  endpoint=t in (0, 1))


def rank_agreement(results: list[GroupResult]) -> dict[str, float]:
    """Spearman rank correlation over groups (whole network excluded) of prediction vs the
    measured midpoint gap, clean and robust."""
    from scipy.stats import spearmanr

    rows = [r for r in results if not r.name.startswith("(")]
    out = {}
    for kind in ("clean", "robust"):
        measured = [r.midpoint(kind) for r in rows]
        predicted = [getattr(r, f"predicted_{kind}") for r in rows]
        varied = len(rows) > 2 and len(set(measured)) > 1 and len(set(predicted)) > 1
        out[kind] = float(spearmanr(measured, predicted).statistic) if varied else float("nan")
    return out
