"""The examples run as written and say what their docstrings promise, through the public API."""

from __future__ import annotations

import ast
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "connect_two_robust_networks.py"


def test_the_example_imports_only_public_names():
    """A page meant to be copied uses no private module or name of robust-mc."""
    tree = ast.parse(EXAMPLE.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("robust_mc"):
            assert not any(part.startswith("_") for part in node.module.split(".")), node.module
            assert not any(alias.name.startswith("_") for alias in node.names), node.module


def test_the_example_connects_two_robust_networks(capsys):
    """About ten seconds on a 2-core CPU: the aligned copy computes the same function (float32
    sums in another order differ by rounding only) and the trained curve's robust barrier is
    below the unaligned line's, as the method claims (0.00 against 0.28 here)."""
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    change = float(lines[0].rsplit(" ", 1)[1])
    assert change < 1e-4  # logits of order 10: float32 rounding, not a changed function
    barriers = {line[:16].strip(): float(line[16:].split()[0]) for line in lines[2:]}
    assert set(barriers) == {"line", "aligned line", "aligned curve"}
    assert barriers["aligned curve"] < barriers["line"]
