"""`robust-mc layers a.pt b.pt`: which layer groups carry the (robust) barrier between two
endpoints, measured and predicted to second order, aligned and/or unaligned."""

from __future__ import annotations

from pathlib import Path

from robust_mc.config import LayersRunConfig, to_dict
from robust_mc.data import as_float, load_data
from robust_mc.evaluation.layers import GroupResult, layer_report, rank_agreement
from robust_mc.pipelines.alignment import align_models
from robust_mc.pipelines.pair import Pair
from robust_mc.run.files import atomic_write_json, ensure_out_dir
from robust_mc.run.progress import Reporter
from robust_mc.run.provenance import run_record
from robust_mc.run.runtime import Runtime


def run_layers(pair: Pair, cfg: LayersRunConfig, runtime: Runtime, reporter: Reporter,
               out: Path, argv: list[str] | None = None) -> dict[str, list[GroupResult]]:
    """The layer report per variant of b (``aligned``, ``unaligned`` or both), also written
    to ``out/layers.json`` with the rank agreement of prediction and measurement."""
    data = load_data(cfg.data)
    pair.check_data(data)
    out = ensure_out_dir(out)  # only once the inputs are known to be good
    for line in pair.describe():
        reporter.print(line)
    model_a, model_b = pair.models()
    runtime.settle(model_a, as_float(data.train.images[:1]))
    runtime.prepare(model_b)
    reporter.print(f"[bold]layers[/] {pair.a.path} -> {pair.b.path}; {runtime.summary()}")
    variants = {}
    if cfg.aligned or cfg.layers.compare_align:
        aligned = align_models(model_a, model_b, data.train, cfg.align, cfg.attack, runtime)
        if (note := aligned.spec.left_alone(model_a)) is not None:
            reporter.print(note)
        variants["aligned"] = aligned.model_b
    if not cfg.aligned or cfg.layers.compare_align:
        variants["unaligned"] = model_b
    on_device = data.to(runtime.device)
    reports: dict[str, list[GroupResult]] = {}
    for label, b in variants.items():
        reporter.print(f"[bold]layers[/] ({label}): {cfg.layers.groups}, {cfg.layers.points} "
                       f"points, {cfg.layers.samples} training images")
        reports[label] = layer_report(model_a, b, on_device, cfg.layers, cfg.path, cfg.attack,
                                      runtime, reporter)
    atomic_write_json(out / "layers.json", {**layers_json(reports), "config": to_dict(cfg),
                                            "record": run_record(argv)})
    return reports


def layers_json(reports: dict[str, list[GroupResult]]) -> dict[str, dict]:
    return {label: {"groups": [r.as_dict() for r in rows],
                    "rank_correlation": rank_agreement(rows)}
            for label, rows in reports.items()}
