"""Curves in weight space between two endpoints, over any architecture (Garipov et al. 2018).

A curve holds its control points as flat parameter vectors: the endpoints fixed, the bends
trainable. ``curve.weights_at(t)`` gives a name -> tensor dict for the module's parameters at t,
which ``torch.func.functional_call`` runs on the user's own module: the architecture is never
re-implemented. Batch-norm running statistics are not on the curve; they are recomputed at each t.

Kinds: ``line`` (no bends, no training), ``bezier`` (a Bezier curve of degree bends + 1; quadratic
with one bend) and ``polychain`` (straight segments through the bends at evenly spaced t).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from robust_mc.registry import Registry

# coefficients(t, points) -> (points,): the weights of the control points at t
CurveFactory = Callable[[float | torch.Tensor, int], torch.Tensor]
CURVES = Registry[CurveFactory]("curve kind")
list_curves = CURVES.names


def register_curve(name: str, *, bends: bool = True) -> Callable[[CurveFactory], CurveFactory]:
    """Register ``coefficients(t, points)`` as a curve kind; ``bends=False``: a kind with no
    bends, nothing to train (the line)."""
    return CURVES.register(name, bends=bends)


def has_bends(kind: str) -> bool:
    """Whether a curve of ``kind`` has bends, which connect trains (every kind but the line)."""
    return bool(CURVES.entry(kind).meta["bends"])


@register_curve("line", bends=False)
def _line(t, points: int) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.stack([1 - t, t])


@register_curve("bezier")
def _bezier(t, points: int) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    n = points - 1
    return torch.stack([math.comb(n, k) * t ** k * (1 - t) ** (n - k) for k in range(points)])


@register_curve("polychain")
def _polychain(t, points: int) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    knots = torch.linspace(0, 1, points, dtype=torch.float64)
    spacing = 1.0 / (points - 1)
    return (1 - (t - knots).abs() / spacing).clamp_min(0)  # hat functions on the knots


def flatten_params(params: dict[str, torch.Tensor], names: list[str], detach: bool = True
                   ) -> torch.Tensor:
    """(P,) float32 vector of ``params`` in the order of ``names``."""
    return torch.cat([(params[n].detach() if detach else params[n]).reshape(-1).float()
                      for n in names])


class Curve(nn.Module):
    """A curve between two points of the same parameter space.

    ``names``/``shapes`` describe the parameters (as ``module.named_parameters()`` lists them);
    ``start``/``end`` are (P,) flat vectors; ``bends`` (K, P) start on the line between them and
    are the only trainable tensor. ``kind`` is a registered curve kind (``list_curves()``:
    line, bezier, polychain). ``weights_at(t)`` gives ``{name: tensor}`` at t in [0, 1],
    differentiable in the bends; t = 0 and t = 1 are the endpoints exactly.

    Example::

        curve = Curve.between("bezier", a, a.state_dict(), b.state_dict(), bends=1)
        logits = torch.func.functional_call(a, curve.weights_at(0.5), (x,))
    """

    start: torch.Tensor
    end: torch.Tensor

    def __init__(self, kind: str, names: list[str], shapes: list[tuple[int, ...]],
                 start: torch.Tensor, end: torch.Tensor, bends: int = 1) -> None:
        super().__init__()
        if kind not in CURVES:
            raise ValueError(f"unknown curve kind {kind!r}; choose one of {list_curves()}")
        if not has_bends(kind):
            bends = 0
        elif bends < 1:
            raise ValueError(f"a {kind} curve needs at least one bend")
        self.kind = kind
        self.names = list(names)
        self.shapes = [tuple(s) for s in shapes]
        self.register_buffer("start", start.detach().clone().float())
        self.register_buffer("end", end.detach().clone().float())
        fractions = torch.arange(1, bends + 1, dtype=torch.float32) / (bends + 1)
        line = torch.lerp(self.start[None], self.end[None], fractions[:, None].to(start.device))
        self.bends = nn.Parameter(line)  # (K, P)

    @classmethod
    def between(cls, kind: str, module: nn.Module, a: dict[str, torch.Tensor],
                b: dict[str, torch.Tensor], bends: int = 1) -> Curve:
        """A curve between two state dicts of ``module``'s architecture (parameters only)."""
        names = [n for n, _ in module.named_parameters()]
        shapes = [tuple(p.shape) for _, p in module.named_parameters()]
        return cls(kind, names, shapes, flatten_params(a, names), flatten_params(b, names), bends)

    @property
    def num_bends(self) -> int:
        return int(self.bends.shape[0])

    def coefficients(self, t: float | torch.Tensor) -> torch.Tensor:
        """(K + 2,) weights of [start, bends..., end] at t."""
        return CURVES.get(self.kind)(t, self.num_bends + 2).to(self.start)

    def flat_at(self, t: float | torch.Tensor) -> torch.Tensor:
        """(P,) parameters at t; differentiable in the bends."""
        c = self.coefficients(t)
        out = c[0] * self.start + c[-1] * self.end
        if self.num_bends:
            out = out + c[1:-1] @ self.bends
        return out

    def weights_at(self, t: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """Name -> tensor views of the parameters at t, for ``functional_call``."""
        return self.unflatten(self.flat_at(t))

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name -> tensor views of a (P,) vector laid out as the curve's parameters."""
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = math.prod(shape)
            out[name] = flat[offset:offset + size].view(shape)
            offset += size
        return out

    def state(self) -> dict:
        """Everything needed to rebuild the curve, as tensors and plain values."""
        return {"kind": self.kind, "names": self.names, "shapes": [list(s) for s in self.shapes],
                "start": self.start.cpu(), "end": self.end.cpu(),
                "bends": self.bends.detach().cpu()}

    @classmethod
    def from_state(cls, state: dict) -> Curve:
        """The curve :meth:`state` describes; ValueError naming what does not fit (names and
        shapes that do not lay out the vectors, bends of another length, values that are not
        finite)."""
        names, shapes = state["names"], state["shapes"]
        if not (isinstance(names, list) and isinstance(shapes, list)
                and len(names) == len(shapes) == len(set(names))
                and all(isinstance(n, str) for n in names)
                and all(isinstance(s, (list, tuple)) and all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s)
                        for s in shapes)):
            raise ValueError("names and shapes must be equally long lists of distinct names "
                             "and lists of sizes")
        size = sum(math.prod(s) for s in shapes)
        vectors = {"start": state["start"], "end": state["end"]}
        for key, vector in vectors.items():
            if not (isinstance(vector, torch.Tensor) and vector.shape == (size,)):
                raise ValueError(f"{key} must be a vector of the {size} parameters the shapes "
                                 "lay out")
        bends = state["bends"]
        if not (isinstance(bends, torch.Tensor) and bends.dim() == 2 and bends.shape[1] == size):
            raise ValueError(f"bends must be a (K, {size}) matrix")
        if not all(bool(torch.isfinite(v).all()) for v in (*vectors.values(), bends)):
            raise ValueError("start, end and bends must be finite")
        curve = cls(state["kind"], names, [tuple(s) for s in shapes],
                    state["start"], state["end"], max(int(bends.shape[0]), 1))
        if has_bends(state["kind"]):
            with torch.no_grad():
                curve.bends.copy_(state["bends"])
        return curve
