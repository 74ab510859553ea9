"""`robust-mc eval RUN --similarity`: for every path of the run (the curve, and the straight
lines with ``--compare-line``), the network at each t against the two ends of that path, layer
by layer, on clean and on adversarial inputs (see ``evaluation/similarity.py``)."""

from __future__ import annotations

from robust_mc.attacks import build_attack
from robust_mc.core.curves import Curve
from robust_mc.core.permutation import trace_permutation_spec
from robust_mc.data import as_float
from robust_mc.evaluation.path import PathNetworks, PointResult
from robust_mc.evaluation.similarity import LayerSimilarity, matched_correlation
from robust_mc.models import Classifier
from robust_mc.pipelines.pair import Endpoints, make_curve
from robust_mc.pipelines.session import ConnectSession
from robust_mc.run import distributed
from robust_mc.store.records import PathLabel


def similarity_along(session: ConnectSession, curve: Curve, endpoints: Endpoints,
                     paths: dict[PathLabel, list[PointResult]]
                     ) -> dict[str, list[LayerSimilarity]]:
    """Path label -> per t, inputs and end: the matched-unit correlation of every layer."""
    cfg, data, runtime = session.cfg, session.data, session.runtime
    images = data.test.take(cfg.path.similarity_images)
    spec = trace_permutation_spec(endpoints.a, runtime.images(as_float(images.images[:2])),
                                  partial=True)  # unit similarity wherever units are followed
    attack = build_attack(cfg.attack, mode="eval")
    out: dict[str, list[LayerSimilarity]] = {}
    for label, points in paths.items():
        b = endpoints.b if label.aligned else endpoints.b_original
        along = curve if not label.is_line or label == PathLabel(cfg.curve.kind, cfg.aligned) \
            else make_curve("line", endpoints, 0, runtime, b)

        networks = PathNetworks(along, endpoints.a, data, cfg.path, cfg.attack, runtime, b)

        def at(t: float, networks: PathNetworks = networks) -> Classifier:
            return networks.at(t)

        ends = {"a": at(0.0), "b": at(1.0)}

        def measure(t: float, at=at, ends=ends) -> list[LayerSimilarity]:
            model = at(t)
            return [LayerSimilarity(t, inputs, end, matched_correlation(
                        model, reference, spec, images, runtime,
                        attack if inputs == "adversarial" else None, cfg.path.seed))
                    for inputs in ("clean", "adversarial") for end, reference in ends.items()]

        with session.reporter.task(f"similarity {label}", len(points)) as step:
            rows = distributed.group().map(measure, [p.t for p in points],
                                           lambda _i, _r: step.advance(1))
        out[str(label)] = [row for per_t in rows for row in per_t]
    return out
