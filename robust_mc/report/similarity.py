"""Heatmaps of the activations along each path, layers x t: the activation similarity (four
panels: clean / adversarial inputs, against endpoint a / b) and the variance collapse (two panels:
clean / adversarial inputs), one PNG of each per path."""

from __future__ import annotations

import math
from pathlib import Path

from robust_mc.evaluation.similarity import LayerSimilarity, LayerVariance
from robust_mc.report.plot import figure


def file_name(label: str, kind: str = "similarity") -> str:
    return f"{kind}-" + label.replace(" (", "-").replace(")", "").replace(" ", "-") + ".png"


def _heatmap(fig, ax, tables: dict[float, dict[str, float]], title: str, scale: str,
             value_range: tuple[float, float], cmap: str) -> None:
    """One panel: layers x t of ``tables`` (t -> layer -> value; NaN shown as 0)."""
    ts = sorted(tables)
    layers = list(tables[ts[0]]) if ts else []
    values = [[0.0 if math.isnan(v := tables[t][layer]) else v for t in ts] for layer in layers]
    image = ax.imshow(values, vmin=value_range[0], vmax=value_range[1], aspect="auto", cmap=cmap)
    ax.set_xticks(range(len(ts)), [f"{t:.2f}" for t in ts], fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("t")
    fig.colorbar(image, ax=ax, label=scale)


def plot_similarity(out: Path, similarity: dict[str, list[LayerSimilarity]]) -> list[str]:
    """similarity-<path>.png per path; the names written (none without matplotlib)."""
    written = []
    for label, rows in similarity.items():
        layers = len(rows[0].layers) if rows else 0
        name = file_name(label)
        with figure(out / name, 2, 2, size=(10, 1.5 + 0.35 * layers * 2)) as (fig, axes):
            if fig is None:
                return []
            for ax, (inputs, end) in zip(axes.flat, [(i, e) for i in ("clean", "adversarial")
                                                     for e in ("a", "b")], strict=True):
                _heatmap(fig, ax, {r.t: r.layers for r in rows
                                   if r.inputs == inputs and r.reference == end},
                         f"{inputs} inputs, against {end}", "matched correlation", (0, 1),
                         "magma")
            fig.suptitle(label)
        written.append(name)
    return written


def plot_variance(out: Path, variance: dict[str, list[LayerVariance]]) -> list[str]:
    """variance-<path>.png per path: each repair site's std ratio to the interpolated
    endpoints' (1: no collapse), clean and adversarial inputs; the names written."""
    written = []
    for label, rows in variance.items():
        layers = len(rows[0].layers) if rows else 0
        name = file_name(label, "variance")
        with figure(out / name, 1, 2, size=(10, 1.5 + 0.35 * layers)) as (fig, axes):
            if fig is None:
                return []
            for ax, inputs in zip(axes.flat, ("clean", "adversarial"), strict=True):
                _heatmap(fig, ax, {r.t: r.layers for r in rows if r.inputs == inputs},
                         f"{inputs} inputs", "std at t / interpolated std", (0, 2), "RdBu")
            fig.suptitle(f"{label}: variance collapse")
        written.append(name)
    return written
