"""Run robust-mc from a source checkout without installing it: ``python cli.py connect a.pt b.pt``.

The command line itself is ``robust_mc/cli.py``; an install puts it on the PATH as ``robust-mc``.
"""

import sys

from robust_mc.cli import main

if __name__ == "__main__":
    sys.exit(main())
