"""``hea-screen predict FILE``: score a user's own compositions at a stated condition."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from hea_screen.cli.common import (
    Parser,
    condition_from_args,
    condition_options,
    count,
    ingot_mass,
    join_signed_values,
    model_options,
    model_ref,
    number,
    run_header,
    setup_logging,
)
from hea_screen.cli.tables import ranked_table, render
from hea_screen.conditions import Condition
from hea_screen.errors import UserInputError, bad_row_message
from hea_screen.output import check_output_path, write_table
from hea_screen.screening.model_ref import check_ranking, inspect_model
from hea_screen.screening.predict_file import ORDERS, check_file, predict_file
from hea_screen.screening.ranking import OBJECTIVES, RISKS, Ranking
from hea_screen.screening.spec import (
    parse_weights,
)


def predict_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="hea-screen predict",
        description="Predict and rank your own compositions at a stated condition: the "
        "columns of a screen, one row per input row.",
    )
    p.add_argument(
        "file",
        metavar="FILE",
        help="CSV or Parquet table, or a text file with one composition per line",
    )
    p.add_argument(
        "--column", metavar="NAME", help="column of a table (default: composition, or the only one)"
    )
    p.add_argument("--out", metavar="FILE", help="write the rows as .csv, .parquet or .json")
    p.add_argument("--order", choices=ORDERS, default="input", help="input (default) or ranked")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="write bad rows (row, text, reason) to --bad-rows and go on (default: stop at "
        "the first, before any model runs)",
    )
    p.add_argument(
        "--bad-rows",
        metavar="FILE",
        help="where --skip-bad writes bad rows (default: FILE's name + .bad.csv, here)",
    )
    p.add_argument(
        "--show", type=count, default=20, metavar="N", help="rows printed (default 20; 0: none)"
    )
    p.add_argument(
        "--ingot-mass", type=ingot_mass, default=50.0, metavar="G", help="ingot mass in g (50)"
    )
    c = p.add_argument_group("condition and ranking (as for a screen)")
    condition_options(c)
    c.add_argument("--objective", choices=OBJECTIVES, default="weighted")
    c.add_argument("--weights", metavar="W_UTS,W_EL", help="default 0.5,0.5")
    c.add_argument("--risk", choices=RISKS, default="mean")
    c.add_argument("--kappa", type=number, default=1.0, metavar="K")
    model_options(p, cluster=False)
    return p


def no_wider_than(path: str) -> int:
    """Permissions for a side file that copies rows of ``path``: the usual ones (umask), but
    never readable by anyone who cannot read ``path`` itself."""
    umask = os.umask(0)
    os.umask(umask)
    return os.stat(path).st_mode & 0o666 & ~umask


def run_predict_command(argv: Sequence[str]) -> int:
    args = predict_parser().parse_args(join_signed_values(argv))
    setup_logging(args.verbose)
    if args.out:
        check_output_path(args.out, "--out", {"FILE": args.file})
    bad_path = Path(args.bad_rows or Path(args.file).name + ".bad.csv")
    if args.skip_bad:
        check_output_path(bad_path, "--bad-rows", {"FILE": args.file, "--out": args.out})
    ranking = Ranking(
        objective=args.objective,
        risk=args.risk,
        kappa=args.kappa,
        weights=(0.5, 0.5) if args.weights is None else parse_weights(args.weights),
        condition=condition_from_args(args, Condition()),
    )
    info = inspect_model(args.model, args.model_sha256, args.device, args.precision)
    check_ranking(ranking, info)
    checked = check_file(args.file, args.column)
    if checked.bad.height and not args.skip_bad:
        raise UserInputError(
            f"{args.file}: {bad_row_message(*checked.bad.row(0))} ({checked.bad.height} bad "
            "row(s) in all; fix them or pass --skip-bad to write them to a side file and go on)"
        )
    if checked.bad.height:
        write_table(checked.bad, bad_path, mode=no_wider_than(args.file))
        print(f"skipped {checked.bad.height} bad row(s): written to {bad_path}", file=sys.stderr)
    if not checked.good:
        raise UserInputError(f"{args.file}: no composition to predict")
    print(run_header(ranking, info), file=sys.stderr)
    model = replace(model_ref(args), sha256=info.sha256)
    result = predict_file(
        checked,
        model,
        ranking,
        info.reference,
        out=args.out,
        order_by=args.order,
        head=args.show,
        ingot_mass_g=args.ingot_mass,
        model_sha256=info.sha256,
        progress=not args.quiet,
    )
    table = result.head
    if args.show > 0:
        ids = table.columns[: table.columns.index("rank")][:3]
        columns = ranked_table(table, ranking.tasks, args.show, ids=ids)
        print(render(columns, whole="every column: --out FILE"))
    print(
        f"predicted {result.rows:,} row(s) of {args.file}"
        + (f"; written to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0
