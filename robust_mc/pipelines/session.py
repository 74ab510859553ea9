"""What one connect (or eval) run holds fixed from start to end, held once and passed whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robust_mc.config import ConnectRunConfig
from robust_mc.data import Data
from robust_mc.pipelines.pair import Pair
from robust_mc.report.progress import Reporter
from robust_mc.run.interrupt import StopSignals
from robust_mc.run.runtime import Runtime


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

    @property
    def digests(self) -> dict[str, str]:
        """The endpoints' weight digests: a saved run continues only between the same ones."""
        return self.pair.digests

    def resume_hint(self) -> str:
        return f"state saved in {self.out}; rerun the same command to continue"

