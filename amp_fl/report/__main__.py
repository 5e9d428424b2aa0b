"""``python -m amp_fl.report RUN [RUN ...] --out DIR``: see :mod:`amp_fl.report`.

A report folder that cannot be written (``--out`` names a file, a read-only place, a full disk)
ends in one ``error:`` line naming the path, exit 2, like every other bad input of the command.
"""

import sys

from amp_fl.report import main


def cli() -> int:
    try:
        return main()
    except OSError as exc:
        path = exc.filename if exc.filename is not None else "--out"
        print(f"error: --out: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
