"""The plane through a curve's two endpoints and its bend (Garipov et al. 2018, Fig. 1/5):
an orthonormal basis (e1 along b - a; e2 along the bend's component orthogonal to it), the
coordinates of any weight vector in it, and the weights at any point of it.

Example::

    plane = Plane.of(curve)
    x, y = plane.coordinates(curve.flat_at(0.5))
    weights = plane.weights_at(x, y)        # (P,) flat, as the curve lays out its parameters
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_mc.core.curves import Curve


@dataclass(frozen=True)
class Plane:
    origin: torch.Tensor  # (P,) endpoint a
    e1: torch.Tensor  # (P,) unit vector towards b
    e2: torch.Tensor  # (P,) unit vector towards the bend, orthogonal to e1

    @classmethod
    def of(cls, curve: Curve, bend: int = 0) -> Plane:
        """The plane of ``curve``'s endpoints and its ``bend``-th control point."""
        if curve.num_bends == 0:
            raise ValueError("a straight line spans no plane: give a curve with a bend")
        origin = curve.start.detach().double()
        along = curve.end.detach().double() - origin
        e1 = along / along.norm()
        towards = curve.bends[bend].detach().double() - origin
        orthogonal = towards - (towards @ e1) * e1
        if orthogonal.norm() <= 1e-12 * along.norm():
            raise ValueError("the bend lies on the line between the endpoints (an untrained "
                             "curve): the plane is undefined")
        return cls(origin, e1, orthogonal / orthogonal.norm())

    def coordinates(self, flat: torch.Tensor) -> tuple[float, float]:
        """(x, y) of the weight vector's projection onto the plane."""
        offset = flat.detach().to(self.origin.device, torch.float64) - self.origin
        return float(offset @ self.e1), float(offset @ self.e2)

    def weights_at(self, x: float, y: float) -> torch.Tensor:
        """(P,) float32 weights at plane point (x, y), on the plane's device."""
        return (self.origin + x * self.e1 + y * self.e2).float()

    def grid(self, anchors: list[tuple[float, float]], size: int, margin: float
             ) -> tuple[list[float], list[float]]:
        """``size`` evenly spaced x and y values covering ``anchors`` with ``margin`` (a
        fraction of their extent) on every side."""
        xs, ys = [a[0] for a in anchors], [a[1] for a in anchors]
        width, height = max(xs) - min(xs), max(ys) - min(ys)
        lo_x, hi_x = min(xs) - margin * width, max(xs) + margin * width
        lo_y, hi_y = min(ys) - margin * height, max(ys) + margin * height
        return (torch.linspace(lo_x, hi_x, size).tolist(),
                torch.linspace(lo_y, hi_y, size).tolist())


def position_between(point: tuple[float, float], a: tuple[float, float],
                     b: tuple[float, float], bend: tuple[float, float]) -> float:
    """The t a plane point stands for between the endpoints ``a`` and ``b``: with its
    barycentric weights (alpha, beta, gamma) over a, b and the ``bend`` (all plane coordinates),
    t = beta + gamma / 2, clipped to [0, 1]. On a one-bend Bezier curve or polychain this is the
    curve's own t (Bezier: beta = t^2, gamma = 2t(1 - t)), so the plane's networks get the
    statistics the path's get at the same weights."""
    to_b = (b[0] - a[0], b[1] - a[1])
    to_bend = (bend[0] - a[0], bend[1] - a[1])
    offset = (point[0] - a[0], point[1] - a[1])
    det = to_b[0] * to_bend[1] - to_b[1] * to_bend[0]
    if det == 0:
        raise ValueError("the endpoints and the bend are collinear: no plane")
    beta = (offset[0] * to_bend[1] - offset[1] * to_bend[0]) / det
    gamma = (to_b[0] * offset[1] - to_b[1] * offset[0]) / det
    return min(max(beta + gamma / 2, 0.0), 1.0)
