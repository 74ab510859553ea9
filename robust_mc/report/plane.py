"""What `robust-mc plane` leaves: plane.csv (one row per grid point) and contour PNGs of clean
and robust loss over the plane, the curve and the straight line drawn over them."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from robust_mc.report.plot import figure
from robust_mc.run.files import atomic_write_text
from robust_mc.store.plane_grid import PlaneResult

FIELDS = ("clean_loss", "clean_acc", "robust_loss", "robust_acc")


def write_plane_csv(out: Path, result: PlaneResult) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["x", "y", *FIELDS])
    points = [(x, y) for y in result.ys for x in result.xs]
    for (x, y), metrics in zip(points, result.grid, strict=True):
        writer.writerow([x, y, *(getattr(metrics, f) for f in FIELDS)])
    return atomic_write_text(out / "plane.csv", buffer.getvalue())


def plot_plane(out: Path, result: PlaneResult, title: str) -> list[str]:
    """plane-clean.png and plane-robust.png (test loss, log-spaced levels); the names written
    (none without matplotlib)."""
    written = []
    size = len(result.xs)
    for kind in ("clean", "robust"):
        name = f"plane-{kind}.png"
        with figure(out / name, size=(6.5, 5)) as (fig, ax):
            if fig is None:
                return []
            losses = [getattr(m, f"{kind}_loss") for m in result.grid]
            rows = [[math.log10(max(v, 1e-6)) for v in losses[i * size:(i + 1) * size]]
                    for i in range(len(result.ys))]
            filled = ax.contourf(result.xs, result.ys, rows, levels=20, cmap="viridis")
            fig.colorbar(filled, ax=ax, label=f"log10 {kind} loss (test)")
            ax.plot(*zip(*result.curve, strict=True), color="white", lw=2, label="curve")
            a, b = result.anchors["a"], result.anchors["b"]
            ax.plot([a[0], b[0]], [a[1], b[1]], "--", color="orange", lw=1.5, label="line")
            for label, (x, y, _) in result.anchors.items():
                ax.plot(x, y, "o", color="red" if label != "bend" else "white",
                        markeredgecolor="black")
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5),
                            color="white")
            ax.set_title(f"{title}: {kind} loss")
            ax.legend(loc="upper right", fontsize=8)
        written.append(name)
    return written
