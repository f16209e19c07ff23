"""The ``hea-screen`` command: rank a candidate space, or run a resumable batch job.

::

    hea-screen --elements Co,Cr,Fe,Ni,Mn --top 100 [--out ranked.csv]
    hea-screen --spec candidates/cantor.yaml --dry-run
    hea-screen batch candidates/cantor.yaml --out runs/cantor
    hea-screen predict my_alloys.csv --column formula --out scored.csv

Bad input (unknown element, empty space, unreadable spec, ...) prints ``error: ...`` on
stderr and exits with status 2, without a traceback. See ``docs/screening.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hea_screen.cli.batch import run_batch_command
from hea_screen.cli.common import EXIT_FAILURE, EXIT_USAGE, os_error
from hea_screen.cli.plan import run_plan
from hea_screen.cli.predict import run_predict_command
from hea_screen.cli.screen import run_screen
from hea_screen.cli.update import run_update
from hea_screen.errors import UserInputError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hea-screen``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["batch"]:
            return run_batch_command(argv[1:])
        if argv[:1] == ["predict"]:
            return run_predict_command(argv[1:])
        if argv[:1] == ["plan"]:
            return run_plan(argv[1:])
        if argv[:1] == ["update"]:
            return run_update(argv[1:])
        return run_screen(argv)
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. the disk filled up while results were written
        print(f"error: {os_error(exc, batch=argv[:1] == ['batch'])}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
