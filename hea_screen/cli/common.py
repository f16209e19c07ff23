"""What every ``hea-screen`` subcommand shares: the parser class, argument types, the model
and condition flags, the printed table, messages and logging."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from hea_screen.compositions.weighing import check_ingot_mass
from hea_screen.conditions import Condition, Processing, TestType
from hea_screen.errors import UserInputError
from hea_screen.inference.runtime import DEVICES, PRECISIONS
from hea_screen.inference.versions import models_dir, resolve_model
from hea_screen.screening.engine import IN_PROCESS_SPACE
from hea_screen.screening.model_ref import DEFAULT_BATCH, ModelInfo, ModelRef
from hea_screen.screening.partition import MIN_SHORTLIST, SHORTLIST_FACTOR
from hea_screen.screening.ranking import MAX_COUNT, Ranking
from hea_screen.screening.spec import parse_condition

log = logging.getLogger("hea_screen")

EXIT_USAGE = 2
EXIT_FAILURE = 1
YEAR = 365.25 * 86400


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as ``error: ...`` with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def whole(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to :data:`MAX_COUNT`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= MAX_COUNT:
            raise argparse.ArgumentTypeError(
                f"{text[:20]!r}: need a whole number from {low} to {MAX_COUNT:,}"
            )
        return value

    return parse


positive_int = whole(1)


count = whole(0)


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def ingot_mass(text: str) -> float:
    """An argparse type: an ingot mass in grams (:func:`check_ingot_mass`), checked before
    any work."""
    try:
        return check_ingot_mass(number(text))
    except UserInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{12,64}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a SHA-256: give 64 hex digits (or a prefix of at least 12)"
        )
    return text.lower()


#: ``--model``: a bundle directory, or the name of a version ``hea-screen update`` wrote.
MODEL_FLAG: dict[str, object] = {
    "metavar": "BUNDLE",
    "type": resolve_model,
    "help": "model bundle directory, default / transformer for a shipped bundle, or the name "
    f"of a version written by hea-screen update (in {models_dir()}); default: default",
}


def model_options(p: argparse.ArgumentParser, cluster: bool = True) -> None:
    """The model and machine flags; ``cluster``: also ``--workers``, ``--scheduler`` and
    ``--yes`` (the commands that run a space on Dask)."""
    g = p.add_argument_group("model and machines")
    g.add_argument("--model", **MODEL_FLAG)  # type: ignore[arg-type]
    g.add_argument(
        "--model-sha256",
        type=sha256,
        metavar="HEX",
        help="refuse any bundle whose manifest.json has another SHA-256 (64 hex digits, or a "
        "prefix of at least 12); printed by every run",
    )
    g.add_argument("--device", choices=DEVICES, default="auto", help="default: auto")
    g.add_argument("--precision", choices=PRECISIONS, default="auto", help="default: auto")
    g.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        default=DEFAULT_BATCH,
        help=f"candidates per model call (default {DEFAULT_BATCH})",
    )
    if cluster:
        cluster_options(g)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")


def cluster_options(g: argparse._ActionsContainer) -> None:
    """``--workers``, ``--scheduler``, ``--yes``: where a space runs."""
    g.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="local Dask worker processes (default: one per core for spaces above "
        f"{IN_PROCESS_SPACE:,} candidates; smaller ones run in this process)",
    )
    g.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (or DASK_SCHEDULER_ADDRESS)",
    )
    g.add_argument("--yes", action="store_true", help="confirm a space above 1,000,000 candidates")


def stage_options(group: argparse._ActionsContainer) -> None:
    """``--exact`` and ``--shortlist``: the two-stage rule of a screen and a batch job."""
    group.add_argument(
        "--exact",
        action="store_true",
        help="run every fold model on every candidate (default: fold 0 scores all, the full "
        f"ensemble re-scores the best {SHORTLIST_FACTOR} x --top, at least {MIN_SHORTLIST:,})",
    )
    group.add_argument(
        "--shortlist",
        type=positive_int,
        metavar="N",
        help=f"candidates the full ensemble re-scores (default {SHORTLIST_FACTOR} x --top, at "
        f"least {MIN_SHORTLIST:,})",
    )


def condition_options(group: argparse._ActionsContainer) -> None:
    """``--test``, ``--temperature``, ``--processing``, ``--grain-size``: the condition of
    every command."""
    group.add_argument(
        "--test",
        choices=[t.value for t in TestType],
        help="test type of the predicted strength and ductility (default tension)",
    )
    group.add_argument("--temperature", metavar="C", help="test temperature in °C (default 25)")
    group.add_argument(
        "--processing",
        metavar="ROUTE",
        help=f"processing route: {', '.join(r.value.lower() for r in Processing)} (default cast)",
    )
    group.add_argument(
        "--grain-size",
        metavar="UM",
        help="mean grain size in µm (default: not stated; finer grains predict higher strength)",
    )


def condition_from_args(args: argparse.Namespace, base: Condition) -> Condition:
    """The condition the flags give, each flag left out taken from ``base``."""
    return parse_condition(
        args.test or base.test_type,
        base.temperature_c if args.temperature is None else args.temperature,
        args.processing or base.processing,
        base.grain_size_um if args.grain_size is None else args.grain_size,
    )


def model_ref(args: argparse.Namespace) -> ModelRef:
    return ModelRef(
        args.model, args.device, args.precision, args.batch_size, sha256=args.model_sha256
    )


SIGNED_VALUES = ("--weights", "--temperature", "--grain-size")


def join_signed_values(argv: Sequence[str]) -> list[str]:
    """``--weights -1,2`` -> ``--weights=-1,2``, so the value reaches its own check."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        nxt = next(items, None) if item in SIGNED_VALUES else None
        if nxt is not None and nxt.startswith("-") and nxt[1:2].isdigit():
            out.append(f"{item}={nxt}")
        else:
            out.extend(x for x in (item, nxt) if x is not None)
    return out


def os_error(exc: OSError, batch: bool = False) -> str:
    """A system error (disk full, permission, ...) in one line, for ``error: ...``; every
    output is written atomically, so none is left half-written."""
    where = f" ({exc.filename})" if exc.filename else ""
    then = (
        "the run stopped (a batch job keeps its finished partitions and resumes when run again)"
        if batch
        else "the run stopped; no output was left half-written"
    )
    return f"{exc.strerror or exc}{where}; {then}"


def workers(given: int | None, candidates: int) -> int:
    """``--workers``, or by default one per core above :data:`IN_PROCESS_SPACE` candidates
    and 1 (this process, no cluster start) up to it."""
    if given is not None:
        return given
    return 1 if candidates <= IN_PROCESS_SPACE else os.cpu_count() or 1


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 10 * YEAR:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / YEAR:.3g} years"


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # importing distributed (when a cluster starts) sets its own logger to INFO; the
    # engine keeps that chatter for --verbose (quiet_distributed)


def run_header(ranking: Ranking, info: ModelInfo) -> str:
    """The two lines every ranking command starts with: its condition and its model."""
    return (
        f"condition: {ranking.condition}; ranking {ranking.objective} on "
        f"{', '.join(ranking.tasks)}\nmodel: {info.path} (sha256 {info.sha256})"
    )
