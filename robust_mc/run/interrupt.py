"""Clean interrupts: the first SIGINT (Ctrl-C), SIGTERM or SIGUSR1 (what clusters send before a
time limit, e.g. Slurm's ``--signal``) asks the run to stop after the current step, so that it
can save its state; a second one ends the process at once. Every file is written atomically, so
even that leaves no torn file behind. On several processes a signal that reaches any of them
stops all of them at the same step."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

from robust_mc.run import distributed

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """``with StopSignals() as stop:`` ... ``if stop.requested:`` save and raise Interrupted."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether to stop now; on several processes, whether any of them was signalled (every
        process asks at the same points of the run)."""
        g = distributed.group()
        if g.active:
            signum = g.maximum(self.signum or 0)
            if signum and self.signum is None:
                self.signum = signum
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            sys.stderr.write(f"\n{signal.Signals(signum).name} again: stopping now\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.signum = signum
        sys.stderr.write(f"\n{signal.Signals(signum).name}: finishing the current step and saving "
                         "(send it again to stop at once)\n")
        sys.stderr.flush()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.signum is not None:
            return  # the run is stopping: a second signal still ends the process at once
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

