"""``python -m robust_mc ...``: the ``robust-mc`` command, for launchers that run modules
(``torchrun -m robust_mc``)."""

import sys

from robust_mc.cli import main

if __name__ == "__main__":
    sys.exit(main())
