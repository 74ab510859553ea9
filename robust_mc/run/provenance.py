"""What every run records about itself: configuration, command line, versions, time."""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata


def version() -> str:
    try:
        return metadata.version("robust-mc")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def run_record(argv: list[str] | None = None) -> dict:
    import torch  # here, not at import: `import robust_mc` stays light

    return {
        "robust_mc": version(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "argv": list(sys.argv if argv is None else argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
