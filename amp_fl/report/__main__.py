"""``python -m amp_fl.report RUN [RUN ...] --out DIR``: see :mod:`amp_fl.report`."""

import sys

from amp_fl.report import main

if __name__ == "__main__":
    sys.exit(main())
