"""Claims on shared work (bench cells): a worker that is gone, or a claim that names no worker
that can exist, never makes the others wait forever."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from robust_mc.run import claims


def aged(path, seconds: float):
    """Set the claim's last touch ``seconds`` ago."""
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def a_dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("text", [
    "",                                                         # killed between create and write
    '{"host": "',                                               # killed mid-write
    "not json at all",
    json.dumps({"host": socket.gethostname(), "pid": -1}),      # os.kill(-1, 0) reaches everyone
    json.dumps({"host": socket.gethostname(), "pid": 0}),
    json.dumps({"host": socket.gethostname(), "pid": 2**40}),
    json.dumps({"host": socket.gethostname(), "pid": "12"}),
    json.dumps([1, 2]),
])
def test_a_claim_naming_no_possible_worker_is_stale_after_a_heartbeat(tmp_path, text):
    path = tmp_path / ".cell.claim"
    path.write_text(text)
    assert not claims.is_stale(path)  # a worker may be writing it right now
    assert claims.is_stale(aged(path, claims.HEARTBEAT + 1))
    target = tmp_path / "cell"
    assert claims.wait_for(target, lambda: target.exists()) is False  # returns: claim it
    assert claims.try_claim(target) is not None


def test_a_live_worker_s_claim_holds_and_a_dead_one_s_does_not(tmp_path):
    path = tmp_path / ".cell.claim"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    assert not claims.is_stale(aged(path, claims.STALE_AFTER + 1))  # alive, however old
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": a_dead_pid()}))
    assert claims.is_stale(path)
    path.write_text(json.dumps({"host": "another-host", "pid": 1}))
    assert not claims.is_stale(aged(path, claims.STALE_AFTER - 60))
    assert claims.is_stale(aged(path, claims.STALE_AFTER + 1))
