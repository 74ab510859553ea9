"""The activation statistics of two networks of one architecture, from one paired pass: for each
space of the permutation spec, the cross-correlation of every pair of units (float64 sums; a conv
channel counts every position of every image as a sample, a transformer's tokens are subsampled;
spaces tied by residual connections pool all their taps), which units never varied, and for the
spaces that take rotations the whole second moments. What ``corr`` alignment, rotations and the
activation similarity read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.fx
from torch import nn

from robust_mc.attacks import TrainingAttack
from robust_mc.core.fold import fold_batchnorm_graph
from robust_mc.core.permutation import PermutationSpec, trace_graph
from robust_mc.run.runtime import Runtime


class _PairRunner:
    """Runs two eval-mode models of one architecture node by node in lockstep, handing the outputs
    of each tap node to ``on_tap`` the moment both exist: nothing is stored, and later in-place
    operations cannot change what was measured. Batch norm is folded into the convolution before
    it (the same function, one pass fewer) unless that convolution's own output is a tap; a tap
    on a folded BN reads its convolution."""

    def __init__(self, model_a: nn.Module, model_b: nn.Module, taps: set[str]) -> None:
        graphs: list[torch.fx.GraphModule] = []
        aliases: dict[str, str] = {}  # the same for both: one architecture
        for model in (model_a, model_b):
            folded = fold_batchnorm_graph(model, keep=taps)
            # untraceable: tracing again raises the error that names the operation
            gm, aliases = folded if folded is not None else (trace_graph(model), {})
            graphs.append(gm)
        self.networks: list[nn.Module] = list(graphs)
        self.graph = graphs[0].graph
        # both interpreters walk model A's graph; each fetches modules from its own model
        self.interpreters = [torch.fx.Interpreter(gm) for gm in graphs]
        self.taps: dict[str, list[str]] = {}  # node run -> the tap names it gives
        for tap in sorted(taps):
            self.taps.setdefault(aliases.get(tap, tap), []).append(tap)

    def run(self, x_a: torch.Tensor, x_b: torch.Tensor,
            on_tap: Callable[[str, torch.Tensor, torch.Tensor], None]) -> None:
        envs: list[dict] = [{}, {}]
        for interp, x in zip(self.interpreters, (x_a, x_b), strict=True):
            interp.env = {}
            interp.args_iter = iter([x])
        last_uses = self.interpreters[0].user_to_last_uses
        for node in self.graph.nodes:
            if node.op == "output":
                break
            outs = []
            for interp, env in zip(self.interpreters, envs, strict=True):
                interp.env = env
                env[node] = interp.run_node(node)
                outs.append(env[node])
            if node.name in self.taps:
                for tap in self.taps[node.name]:
                    on_tap(tap, outs[0], outs[1])
            for env in envs:
                for dead in last_uses.get(node, []):
                    env.pop(dead, None)


TOKENS = 8  # tokens per image that enter a transformer's statistics by default (align.tokens)
# ... or more, where the images are few: a correlation estimated from this many samples has a
# standard error below 0.005 (on the digits' 1,294 images every token is kept)
TOKEN_SAMPLES = 40_000


def tokens_per_image(tokens: int, images: int) -> int:
    """The tokens per image the statistics take: ``tokens`` (0: all), raised so that the
    images give at least :data:`TOKEN_SAMPLES` samples."""
    if tokens <= 0 or images <= 0:
        return tokens
    return max(tokens, -(-TOKEN_SAMPLES // images))


def _token_subset(t: torch.Tensor, axis: int, tokens: int, batch: int) -> torch.Tensor:
    """A token-shaped activation (units on the last of three or more axes: (B, N, C),
    (B, H, W, C)) with at most about ``tokens`` positions per image, evenly spaced and starting
    one position later each ``batch`` (over the batches every position is seen); any other
    activation (convolution maps, vectors) or ``tokens`` 0 as it is. The cross products of every
    token cost as much as the forward pass itself in a ViT (an MLP's units squared per token)."""
    if tokens <= 0 or t.dim() < 3 or axis != t.dim() - 1:
        return t
    flat = t.reshape(t.shape[0], -1, t.shape[-1])  # units stay on the last axis
    stride = -(-flat.shape[1] // tokens)
    return flat[:, batch % stride::stride] if stride > 1 else t


def _as_samples(t: torch.Tensor, axis: int) -> torch.Tensor:
    """(N, ..., C at ``axis``, ...) -> (samples, C) in the pass's precision: every position (or
    token) of every image is a sample. A view where the layout allows it (channels-last), else
    one copy."""
    t = t.detach()
    if axis != t.dim() - 1:
        t = t.movedim(axis, -1)
    return t.reshape(-1, t.shape[-1])


# samples per product: a chunk of both networks' activations, in float32, stays in the core's
# cache while its sums, squares and cross products are taken (a whole batch of a wide map is
# tens of MiB: reading it once per reduction, the statistics cost more than the convolutions)
CHUNK = 8192


class UnitMoments:
    """Running float64 sums for the cross-correlation of A's and B's units of one space: sums,
    sums of squares and cross products. Each batch's are reduced in float32, a cache-sized chunk
    of samples at a time (the cross products by one (units, units) product per chunk), and
    accumulated in float64."""

    def __init__(self, units: int, rotation: str | None = None) -> None:
        self.units = units
        self.rotation = rotation  # the space takes a rotation: "heads" or "stream"
        self.count = 0.0
        self.sums: torch.Tensor | None = None  # (2, units): A, B
        self.squares: torch.Tensor | None = None  # (2, units)
        self.cross: torch.Tensor | None = None  # (units, units)
        self.b_cross: torch.Tensor | None = None  # (units, units) B with itself: rotations
        self.normed_cross: torch.Tensor | None = None  # stream: LayerNorm-normalised samples

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:  # (samples, units) each
        """One batch's samples, of any float dtype: reduced chunk by chunk in float32
        (:data:`CHUNK`), accumulated over batches in float64."""
        units, device = a.shape[1], a.device
        sums = torch.zeros(2, units, device=device)
        squares = torch.zeros(2, units, device=device)
        cross = torch.zeros(units, units, device=device)
        b_cross = torch.zeros_like(cross) if self.rotation is not None else None
        normed = torch.zeros_like(cross) if self.rotation == "stream" else None
        for start in range(0, a.shape[0], CHUNK):
            x, y = a[start:start + CHUNK].float(), b[start:start + CHUNK].float()
            sums[0] += x.sum(0)
            sums[1] += y.sum(0)
            squares[0] += (x * x).sum(0)
            squares[1] += (y * y).sum(0)
            cross.addmm_(x.T, y)
            if b_cross is not None:
                b_cross.addmm_(y.T, y)
            if normed is not None:
                normed.addmm_(_layer_normalised(x).T, _layer_normalised(y))
        self.sums = _accumulate(self.sums, sums)
        self.squares = _accumulate(self.squares, squares)
        self.cross = _accumulate(self.cross, cross)
        if b_cross is not None:
            self.b_cross = _accumulate(self.b_cross, b_cross)
        if normed is not None:
            self.normed_cross = _accumulate(self.normed_cross, normed)
        self.count += a.shape[0]

    def rotation_cross(self) -> torch.Tensor:
        """What a rotation of this space is solved on: sum a b^T, of LayerNorm-normalised
        samples for a stream."""
        out = self.normed_cross if self.rotation == "stream" else self.cross
        assert out is not None
        return out

    def corr_after(self, transform: torch.Tensor) -> torch.Tensor:
        """(units,) correlation of each unit of A with the same unit of ``transform`` @ B
        (``transform``: the composite of the permutation and the rotation)."""
        assert self.sums is not None and self.squares is not None and self.cross is not None
        assert self.b_cross is not None
        mean = self.sums / self.count
        t = transform.double().to(mean.device)
        cov = (self.cross / self.count - mean[0][:, None] * mean[1][None, :]) @ t.T
        cov_b = self.b_cross / self.count - mean[1][:, None] * mean[1][None, :]
        std_a = (self.squares[0] / self.count - mean[0] ** 2).clamp_min(0).sqrt()
        std_b = torch.einsum("ij,jk,ik->i", t, cov_b, t).clamp_min(0).sqrt()
        denom = std_a * std_b
        diag = torch.diagonal(cov)
        return torch.where(denom > 1e-12, diag / denom.clamp_min(1e-12), torch.zeros_like(diag))

    def silent(self) -> torch.Tensor:
        """(2, units) bool: units of A and of B that never varied (dead, or constant on the
        data): their correlations carry no signal."""
        assert self.sums is not None and self.squares is not None
        mean = self.sums / self.count
        var = (self.squares / self.count - mean ** 2).clamp_min(0)
        return var.sqrt() <= 1e-6 * (mean.abs() + 1)

    def correlation(self) -> torch.Tensor:
        """(units_a, units_b) Pearson correlation; units that never vary correlate 0."""
        assert self.sums is not None and self.squares is not None and self.cross is not None
        mean = self.sums / self.count
        std = (self.squares / self.count - mean ** 2).clamp_min(0).sqrt()
        cov = self.cross / self.count - mean[0][:, None] * mean[1][None, :]
        denom = std[0][:, None] * std[1][None, :]
        return torch.where(denom > 1e-12, cov / denom.clamp_min(1e-12), torch.zeros_like(cov))


def _accumulate(total: torch.Tensor | None, batch: torch.Tensor) -> torch.Tensor:
    batch = batch.double()
    return batch if total is None else total + batch


def _layer_normalised(x: torch.Tensor) -> torch.Tensor:
    """(samples, units): each sample centred over its units and scaled to unit RMS, as a
    LayerNorm reads it."""
    x = x - x.mean(1, keepdim=True)
    return x / x.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)


@dataclass
class UnitStatistics:
    """Per space: the (units, units) correlations of A's and B's units, and which units of A
    and of B never varied on the data (``silent``, (2, units) bool)."""

    corr: dict[str, torch.Tensor]
    silent: dict[str, torch.Tensor]
    samples: int
    moments: dict[str, UnitMoments] = field(default_factory=dict)  # spaces that take rotations


def unit_statistics(model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec,
                    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], runtime: Runtime,
                    attack: TrainingAttack | None = None, generator: torch.Generator | None = None,
                    rotations: dict[str, str] | None = None, tokens: int = 0
                    ) -> UnitStatistics:
    """Correlations and silent units per space, from one forward pass of each model over
    ``batches``. With ``attack``, each model sees its own adversarial examples of the batch,
    with the same random start for both, drawn from ``generator``. ``rotations``: the spaces
    that take a rotation (``"heads"`` or ``"stream"``), whose moments are kept whole.
    ``tokens`` > 0: at most about that many tokens per image of a token-shaped activation
    (:func:`_token_subset`).
    """
    rotations = rotations or {}
    runner = _PairRunner(model_a, model_b, spec.tap_nodes)
    moments = {space.name: UnitMoments(space.size, rotations.get(space.name))
               for space in spec if space.taps}
    by_tap: dict[str, list[tuple[UnitMoments, int, slice]]] = {}
    for space in spec:  # tied spaces pool the samples of all their taps
        for tap in space.taps:
            by_tap.setdefault(tap.node, []).append(
                (moments[space.name], tap.axis, slice(tap.offset, tap.offset + space.size)))

    done = 0  # batches

    def on_tap(node: str, a: torch.Tensor, b: torch.Tensor) -> None:
        samples: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for moment, axis, cols in by_tap[node]:
            if axis not in samples:
                a_kept, b_kept = (_token_subset(t, axis, tokens, done) for t in (a, b))
                kept_axis = axis if a_kept.dim() == a.dim() else a_kept.dim() - 1
                samples[axis] = (_as_samples(a_kept, kept_axis), _as_samples(b_kept, kept_axis))
            sa, sb = samples[axis]
            moment.add(sa[:, cols], sb[:, cols])

    samples = 0
    for model in (model_a, model_b):
        model.eval()
    # an eval-mode attack runs on the folded networks (the same function); one in train mode needs
    # the batch norm layers themselves
    train_mode = attack is not None and attack.mode == "train"
    targets = [model_a, model_b] if train_mode else runner.networks
    for x, y in batches:
        x, y = runtime.images(x.to(runtime.device)), y.to(runtime.device)
        inputs = [x, x]
        if attack is not None:  # the same random start for both: equal functions, equal inputs
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with runtime.autocast():
                inputs = [attack(model, x, y, torch.Generator(x.device).manual_seed(seed))
                          for model in targets]
        with torch.no_grad(), runtime.autocast():
            runner.run(inputs[0], inputs[1], on_tap)
        samples += x.shape[0]
        done += 1
    return UnitStatistics({name: m.correlation().cpu() for name, m in moments.items()},
                          {name: m.silent().cpu() for name, m in moments.items()}, samples,
                          {name: m for name, m in moments.items() if m.rotation is not None})
