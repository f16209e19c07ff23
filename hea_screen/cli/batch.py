"""``hea-screen batch SPEC --out DIR``: a resumable batch job over a spec's space."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hea_screen.cli.common import (
    Parser,
    model_options,
    model_ref,
    positive_int,
    run_header,
    setup_logging,
    stage_options,
    workers,
)
from hea_screen.output import check_writable_dir
from hea_screen.screening.jobs import run_batch
from hea_screen.screening.model_ref import inspect_model
from hea_screen.screening.spec import (
    load_spec,
)

log = logging.getLogger("hea_screen")


def batch_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="hea-screen batch",
        description="Run or resume the batch job of a spec file; results and summary in DIR.",
    )
    p.add_argument("spec", metavar="SPEC", help="candidate spec, e.g. candidates/cantor.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="job directory")
    p.add_argument(
        "--max-partitions",
        type=positive_int,
        metavar="N",
        help="stop after N partitions (the next run resumes)",
    )
    p.add_argument("--restart", action="store_true", help="discard a different earlier job")
    stage_options(p.add_argument_group("two stages (as for a screen)"))
    model_options(p)
    return p


def run_batch_command(argv: Sequence[str]) -> int:
    args = batch_parser().parse_args(argv)
    setup_logging(args.verbose)
    spec = load_spec(args.spec)
    out = Path(args.out)
    existing = next(p for p in (out, *out.parents, Path(".")) if p.exists())
    if existing.is_dir():
        check_writable_dir(existing, f"--out {args.out!r}")

    def logged(pid: int, done: int, total: int) -> None:
        log.info("partition %d recorded (%d of %d done)", pid, done, total)

    info = inspect_model(args.model, args.model_sha256)
    print(run_header(spec.ranking, info), file=sys.stderr)
    summary = run_batch(
        spec,
        args.out,
        model_ref(args),
        workers=workers(args.workers, spec.candidates().size),
        scheduler=args.scheduler,
        progress=not args.quiet,
        confirmed=args.yes,
        restart=args.restart,
        max_partitions=args.max_partitions,
        after_partition=logged,
        spec_path=args.spec,
        exact=args.exact,
        shortlist=args.shortlist,
    )
    print(
        f"{summary['job']}: {summary['status']}; partitions {summary['partitions_done']}"
        f"/{summary['partitions_total']} ({summary['partitions_skipped']} resumed, "
        f"{summary['partitions_this_run']} this run); candidates {summary['candidates_done']:,}"
        f"/{summary['candidates_total']:,}; model sha256 {summary['model_sha256']}; "
        f"summary in {args.out}/summary.json"
    )
    return 0


#: Largest space ``plan --spec`` enumerates and predicts itself (beyond: screen it first).
