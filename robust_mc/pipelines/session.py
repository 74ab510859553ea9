"""What one connect (or eval) run holds fixed from start to end, held once and passed whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robust_mc.config import ConnectRunConfig
from robust_mc.core.curves import Curve
from robust_mc.data import Data, as_float, load_data
from robust_mc.pipelines.pair import Endpoints, Pair, endpoints_from_run
from robust_mc.run.files import ensure_out_dir
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.progress import Reporter
from robust_mc.run.runtime import Runtime
from robust_mc.store.model_building import build_model
from robust_mc.store.records import CurveRun


@dataclass
class ConnectSession:
    """One run's endpoint files, resolved settings, output directory, runtime, reporter, stop
    signal and data (on the run's device)."""

    pair: Pair
    cfg: ConnectRunConfig
    out: Path
    runtime: Runtime
    reporter: Reporter
    data: Data
    stop: StopSignals = field(default_factory=StopSignals)
    notes: tuple[str, ...] = ()  # where settings came from, shown when the run starts

    @property
    def digests(self) -> dict[str, str]:
        """The endpoints' weight digests: a saved run continues only between the same ones."""
        return self.pair.digests

    def resume_hint(self) -> str:
        return f"state saved in {self.out}; rerun the same command to continue"


@dataclass
class SavedRun:
    """A finished (or trained) curve run opened for more measuring: its session, the
    endpoints as connected (b aligned, and b as given) and the curve, all on the run's device."""

    session: ConnectSession
    endpoints: Endpoints
    curve: Curve


def open_saved_run(run: CurveRun, cfg: ConnectRunConfig, out: Path, runtime: Runtime,
                   reporter: Reporter) -> SavedRun:
    """The one way eval, verify, plane and ensemble open a saved run: the pair checked against
    the data (loaded once), ``out`` created once the inputs are known to be good."""
    pair = Pair(*run.checkpoints())
    data = load_data(cfg.data)
    pair.check_data(data)
    out = ensure_out_dir(out)
    session = ConnectSession(pair, cfg, out, runtime, reporter, data.to(runtime.device))
    runtime.settle(build_model(pair.a), as_float(data.train.images[:1]))  # before preparing any
    endpoints = endpoints_from_run(run, runtime, data.train.images[:2].float())
    return SavedRun(session, endpoints, run.curve.to(runtime.device))
