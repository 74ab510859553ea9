"""`robust-mc eval RUN --similarity`: for every path of the run (the curve, and the straight
lines with ``--compare-line``), the network at each t against the two ends of that path, layer
by layer, on clean and on adversarial inputs (see ``evaluation/similarity.py``)."""

from __future__ import annotations

from collections.abc import Callable

from robust_mc.attacks import build_attack
from robust_mc.core.curves import Curve
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.core.repair import repair_sites
from robust_mc.data import as_float
from robust_mc.evaluation.path import PathNetworks, PointResult
from robust_mc.evaluation.segment_repair import OwnInputs, SegmentRepair
from robust_mc.evaluation.similarity import (
    BATCH,
    Activations,
    LayerSimilarity,
    LayerVariance,
    matched_correlation,
)
from robust_mc.models import Classifier
from robust_mc.pipelines.pair import Endpoints, make_curve
from robust_mc.pipelines.session import ConnectSession
from robust_mc.run import distributed
from robust_mc.store.records import PathLabel


def similarity_along(session: ConnectSession, curve: Curve, endpoints: Endpoints,
                     paths: dict[PathLabel, list[PointResult]]) -> Activations:
    """For each path, per t and inputs (clean, adversarial): the matched-unit correlation of
    every layer with each end, and each repair site's variance collapse."""
    cfg, data, runtime = session.cfg, session.data, session.runtime
    images = data.test.take(cfg.path.similarity_images)
    probe = runtime.images(as_float(images.images[:2])).to(runtime.device)
    spec = trace_permutation_spec(endpoints.a, probe,
                                  partial=True)  # unit similarity wherever units are followed
    sites = repair_sites(endpoints.a, spec, probe)
    attack = build_attack(cfg.attack, mode="eval")
    kinds = {"clean": None, "adversarial": attack}
    out = Activations()
    for label, points in paths.items():
        b = endpoints.b if label.aligned else endpoints.b_original
        along = curve if not label.is_line or label == PathLabel(cfg.curve.kind, cfg.aligned) \
            else make_curve("line", endpoints, 0, runtime, b)

        at = PathNetworks(along, endpoints.a, data, cfg.path, cfg.attack, runtime, b).at
        ends = {"a": at(0.0), "b": at(1.0)}
        # each inputs' collapse against the ends' moments, measured once per path
        spreads = {inputs: SegmentRepair(_given(ends["a"], ends["b"]),
                                         OwnInputs(images, runtime, by, cfg.path.seed, BATCH),
                                         sites)
                   for inputs, by in kinds.items()}

        def measure(t: float, at=at, ends=ends, spreads=spreads
                    ) -> tuple[list[LayerSimilarity], list[LayerVariance]]:
            model = at(t)
            return ([LayerSimilarity(t, inputs, end, matched_correlation(
                        model, reference, spec, images, runtime, by, cfg.path.seed))
                     for inputs, by in kinds.items() for end, reference in ends.items()],
                    [LayerVariance(t, inputs, spread.collapse(model, t))
                     for inputs, spread in spreads.items()])

        with session.reporter.task(f"similarity {label}", len(points)) as step:
            rows = distributed.group().map(measure, [p.t for p in points],
                                           lambda _i, _r: step.advance(1))
        out.similarity[str(label)] = [row for per_t in rows for row in per_t[0]]
        out.variance[str(label)] = [row for per_t in rows for row in per_t[1]]
    return out


def _given(a: Classifier, b: Classifier) -> Callable[[], tuple[Classifier, Classifier]]:
    return lambda: (a, b)
