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

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import polars as pl

from hea_screen.applicability import TrainingSet
from hea_screen.bundle_update import (
    Refit,
    check_against_model,
    default_version_path,
    movement,
    new_scores,
    recalibrate,
    refit_trees,
    write_version,
)
from hea_screen.conditions import TASKS_BY_NAME, Condition, Processing, TestType
from hea_screen.engine import (
    DEFAULT_BATCH,
    IN_PROCESS_SPACE,
    LARGE_SPACE,
    MIN_SHORTLIST,
    SHORTLIST_FACTOR,
    ModelRef,
    check_inputs,
    check_ranking,
    estimate,
    guard_size,
    inspect_model,
    screen,
)
from hea_screen.errors import UserInputError
from hea_screen.jobs import run_batch
from hea_screen.lab import lab_columns
from hea_screen.lab_sheet import write_lab_sheet
from hea_screen.measurements_store import MeasurementStore, read_results
from hea_screen.output import check_output_path, check_writable_dir, write_table
from hea_screen.planning import (
    ACQUISITIONS,
    PHASE_SCREENS,
    Objective,
    PlanOptions,
    measured_from_training,
    merge_measured,
    read_candidates,
    select,
    with_predictions,
)
from hea_screen.predict_file import ORDERS, parse_inputs, predict_rows, read_texts
from hea_screen.predictor import DEVICES, PRECISIONS
from hea_screen.ranking import OBJECTIVES, RISKS, Ranking
from hea_screen.space import MAX_INDEXABLE, SampledSpace
from hea_screen.spec import (
    DEFAULTS,
    ScreenSpec,
    build_space,
    load_spec,
    parse_bounds,
    parse_condition,
    parse_elements,
    parse_weights,
)
from hea_screen.task_bundle import load_task_bundle
from hea_screen.task_predictor import TaskPredictor

log = logging.getLogger("hea_screen")

EXIT_USAGE = 2
EXIT_FAILURE = 1

_YEAR = 365.25 * 86400


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as ``error: ...`` with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def _whole(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r}: need a whole number >= {low}")
        return value

    return parse


_positive_int = _whole(1)
_count = _whole(0)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{12,64}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a SHA-256: give 64 hex digits (or a prefix of at least 12)"
        )
    return text.lower()


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and machines")
    g.add_argument("--model", metavar="BUNDLE", help="model bundle directory (default: shipped)")
    g.add_argument(
        "--model-sha256",
        type=_sha256,
        metavar="HEX",
        help="refuse any bundle whose manifest.json has another SHA-256 (64 hex digits, or a "
        "prefix of at least 12); printed by every run",
    )
    g.add_argument("--device", choices=DEVICES, default="auto", help="default: auto")
    g.add_argument("--precision", choices=PRECISIONS, default="auto", help="default: auto")
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        default=DEFAULT_BATCH,
        help=f"candidates per model call (default {DEFAULT_BATCH})",
    )
    g.add_argument(
        "--workers",
        type=_positive_int,
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
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")


def _condition_options(group: argparse._ActionsContainer) -> None:
    """``--test``, ``--temperature``, ``--processing``: the condition of every command."""
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


def _condition(args: argparse.Namespace, base: Condition) -> Condition:
    """The condition the flags give, each flag left out taken from ``base``."""
    return parse_condition(
        args.test or base.test_type,
        base.temperature_c if args.temperature is None else args.temperature,
        args.processing or base.processing,
    )


def screen_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hea-screen",
        description="Rank high-entropy alloy candidates by predicted strength and ductility at a "
        "stated condition (default: tensile UTS and elongation at 25 °C, as-cast). "
        "Batch jobs: hea-screen batch SPEC --out DIR (see hea-screen batch --help); your own "
        "compositions: hea-screen predict FILE; the lab's next batch: hea-screen plan; "
        "measured results: hea-screen update (each with --help).",
    )
    s = p.add_argument_group("candidate space")
    s.add_argument("--elements", metavar="EL,EL,...", help="palette, e.g. Co,Cr,Fe,Ni,Mn")
    s.add_argument("--spec", metavar="YAML", help="take the space and ranking from a spec file")
    s.add_argument(
        "--min-elements", type=_positive_int, metavar="N", help="default 3 (or palette size)"
    )
    s.add_argument("--max-elements", type=_positive_int, metavar="N", help="default: palette size")
    s.add_argument("--step", metavar="X", help=f"fraction grid step (default {DEFAULTS['step']})")
    s.add_argument(
        "--min-fraction", metavar="X", help="lowest fraction of an element present (default 0)"
    )
    s.add_argument(
        "--max-fraction",
        metavar="X",
        help=f"highest fraction of any element (default {DEFAULTS['max_fraction']})",
    )
    s.add_argument(
        "--bounds",
        action="append",
        default=[],
        metavar="EL:LO-HI",
        help="per-element fraction bounds, e.g. Al:0-0.2 (repeatable or comma-separated); "
        "a low bound above 0 makes the element required",
    )
    s.add_argument("--require", metavar="EL,EL", help="elements present in every candidate")
    fam = s.add_mutually_exclusive_group()
    fam.add_argument("--equimolar-only", action="store_true")
    fam.add_argument("--non-equimolar-only", action="store_true")
    s.add_argument("--sample", type=_positive_int, metavar="N", help="screen a random sample")
    s.add_argument("--seed", type=int, metavar="N", help="seed of --sample (default 0)")
    _condition_options(
        p.add_argument_group(
            "condition (what the predicted values mean; a spec's condition: section)"
        )
    )
    r = p.add_argument_group("ranking")
    r.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="uts, ys, elongation (fracture strain in compression), hardness (HV), weighted "
        "(strength and ductility z-scores) or pareto (default weighted)",
    )
    r.add_argument(
        "--weights",
        metavar="W_UTS,W_EL",
        help="UTS,elongation weights >= 0 of weighted and pareto, e.g. 0.7,0.3 "
        "(default 0.5,0.5)",
    )
    r.add_argument(
        "--risk", choices=RISKS, help="mean, safe (mean - k*std) or explore (mean + k*std)"
    )
    r.add_argument("--kappa", type=_number, metavar="K", help="k of --risk (default 1)")
    r.add_argument(
        "--top", type=_positive_int, metavar="N", help="rows in the ranking (default 100)"
    )
    r.add_argument(
        "--exact",
        action="store_true",
        help="run every fold model on every candidate (default: fold 0 scores all, the full "
        f"ensemble re-scores the best {SHORTLIST_FACTOR} x --top, at least {MIN_SHORTLIST:,})",
    )
    r.add_argument(
        "--shortlist",
        type=_positive_int,
        metavar="N",
        help=f"candidates the full ensemble re-scores (default {SHORTLIST_FACTOR} x --top, at "
        f"least {MIN_SHORTLIST:,})",
    )
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE", help="write the ranking as .csv, .parquet or .json")
    o.add_argument(
        "--show", type=_count, default=20, metavar="N", help="rows printed (default 20; 0: none)"
    )
    o.add_argument(
        "--ingot-mass", type=_number, metavar="G", help="ingot mass in g for weigh-outs (50)"
    )
    o.add_argument(
        "--partition-size", type=_positive_int, metavar="N", help="candidates per partition"
    )
    o.add_argument(
        "--dry-run",
        action="store_true",
        help="report space size, partitions and an estimated time, then stop",
    )
    _model_options(p)
    return p


def batch_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hea-screen batch",
        description="Run or resume the batch job of a spec file; results and summary in DIR.",
    )
    p.add_argument("spec", metavar="SPEC", help="candidate spec, e.g. candidates/cantor.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="job directory")
    p.add_argument(
        "--max-partitions",
        type=_positive_int,
        metavar="N",
        help="stop after N partitions (the next run resumes)",
    )
    p.add_argument("--restart", action="store_true", help="discard a different earlier job")
    _model_options(p)
    return p


def predict_parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    p.add_argument(
        "--order", choices=ORDERS, default="input", help="input (default) or ranked"
    )
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
        "--show", type=_count, default=20, metavar="N", help="rows printed (default 20; 0: none)"
    )
    p.add_argument(
        "--ingot-mass", type=_number, default=50.0, metavar="G", help="ingot mass in g (50)"
    )
    c = p.add_argument_group("condition and ranking (as for a screen)")
    _condition_options(c)
    c.add_argument("--objective", choices=OBJECTIVES, default="weighted")
    c.add_argument("--weights", metavar="W_UTS,W_EL", help="default 0.5,0.5")
    c.add_argument("--risk", choices=RISKS, default="mean")
    c.add_argument("--kappa", type=_number, default=1.0, metavar="K")
    _model_options(p)
    return p


_SPACE_FLAGS = (
    "elements",
    "min_elements",
    "max_elements",
    "step",
    "min_fraction",
    "max_fraction",
    "require",
    "sample",
    "seed",
)


def spec_from_args(args: argparse.Namespace) -> ScreenSpec:
    """The :class:`ScreenSpec` described by the flags (or ``--spec`` plus ranking flags)."""
    if args.spec:
        given = [f for f in _SPACE_FLAGS if getattr(args, f) is not None]
        given += ["bounds"] * bool(args.bounds)
        given += ["equimolar_only"] * args.equimolar_only
        given += ["non_equimolar_only"] * args.non_equimolar_only
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise UserInputError(f"{flags} cannot be combined with --spec: edit the spec file")
        base = load_spec(args.spec)
    else:
        if not args.elements:
            raise UserInputError("give --elements (e.g. --elements Co,Cr,Fe,Ni,Mn) or --spec FILE")
        space = build_space(
            parse_elements(args.elements, "--elements"),
            min_elements=args.min_elements,
            max_elements=args.max_elements,
            step=args.step,
            min_fraction=args.min_fraction,
            max_fraction=args.max_fraction,
            bounds=parse_bounds(args.bounds),
            require=parse_elements(args.require, "--require") if args.require else (),
            equimolar=not args.non_equimolar_only,
            non_equimolar=not args.equimolar_only,
        )
        base = ScreenSpec(
            "screen", space, Ranking(), sample=args.sample, seed=args.seed or DEFAULTS["seed"]
        )
    r = base.ranking
    ranking = Ranking(
        objective=args.objective or r.objective,
        risk=args.risk or r.risk,
        kappa=r.kappa if args.kappa is None else args.kappa,
        weights=r.weights if args.weights is None else parse_weights(args.weights),
        top=args.top or r.top,
        condition=_condition(args, r.condition),
    )
    return replace(
        base,
        ranking=ranking,
        partition_size=args.partition_size or base.partition_size,
        ingot_mass_g=base.ingot_mass_g if args.ingot_mass is None else args.ingot_mass,
    )


def _model_ref(args: argparse.Namespace) -> ModelRef:
    return ModelRef(
        args.model, args.device, args.precision, args.batch_size, sha256=args.model_sha256
    )


def _describe_space(spec: ScreenSpec) -> str:
    space = spec.space
    lines = [
        f"space: {', '.join(space.elements)}; {space.min_elements}-{space.max_elements} elements;"
        f" step {float(space.step):g}; {space.describe_bounds()}"
    ]
    for seg in space.segments:
        if seg.size:
            lines.append(f"  {seg.k} elements, {seg.family}: {seg.size:,}")
    lines.append(f"candidates: {space.size:,}")
    if spec.sample is not None:
        lines.append(f"sample: {spec.candidates().size:,} (stratified, seed {spec.seed})")
    return "\n".join(lines)


def _display(table: pl.DataFrame, rows: int, ranking: Ranking) -> pl.DataFrame:
    """The printed table: score, each ranked task as its mean and calibrated 90 % interval,
    and the nearest measured alloy of that task's own training data."""
    columns = [
        "rank",
        "composition",
        pl.col("score").round(4),
        "pareto",
    ]
    for name in ranking.tasks:
        task = TASKS_BY_NAME[name]
        digits = 1 if task.unit == "%" else 0
        columns.append(
            pl.format(
                "{} [{}, {}]",
                *(pl.col(f"{name}_{s}").round(digits) for s in ("mean", "lo", "hi")),
            ).alias(f"{name} ({task.unit}, 90 % interval)")
        )
    for name in ranking.tasks:
        columns.append(
            pl.format(
                "{}: {} (d {})",
                pl.col(f"{name}_nearest_composition"),
                pl.col(f"{name}_nearest_measured").round(1),
                pl.col(f"{name}_nearest_distance").round(2),
            ).alias(f"nearest {name} datum")
        )
    return table.head(rows).select(columns)


#: Options whose value may start with "-" (argparse would take ``-1,2`` for an option).
_SIGNED_VALUES = ("--weights", "--temperature")


def _join_signed_values(argv: Sequence[str]) -> list[str]:
    """``--weights -1,2`` -> ``--weights=-1,2``, so the value reaches its own check."""
    out: list[str] = []
    items = iter(argv)
    for item in items:
        nxt = next(items, None) if item in _SIGNED_VALUES else None
        if nxt is not None and nxt.startswith("-") and nxt[1:2].isdigit():
            out.append(f"{item}={nxt}")
        else:
            out.extend(x for x in (item, nxt) if x is not None)
    return out


def run_screen(argv: Sequence[str]) -> int:
    args = screen_parser().parse_args(_join_signed_values(argv))
    _logging(args.verbose)
    spec = spec_from_args(args)
    if args.out:
        check_output_path(args.out)
    spec.space.check_nonempty()
    candidates = spec.candidates()
    info = inspect_model(args.model, args.model_sha256)
    check_inputs(candidates, info)
    check_ranking(spec.ranking, info)
    model = replace(_model_ref(args), sha256=info.sha256)
    header = (
        f"condition: {spec.ranking.condition}; ranking {spec.ranking.objective} on "
        f"{', '.join(spec.ranking.tasks)}\nmodel: {info.path} (sha256 {info.sha256})"
    )
    if args.dry_run:
        print(_describe_space(spec))
        print(header)
        est = estimate(
            candidates,
            spec.ranking,
            model,
            info.reference,
            partition_size=spec.partition_size,
            workers=_workers(args.workers, candidates.size),
        )
        where = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
        print(
            f"partitions: {est.partitions:,} of up to {est.partition_size:,} candidates "
            f"(batch {model.batch_size}); "
            + (
                f"scheduler {where}"
                if where
                else f"{_workers(args.workers, candidates.size)} local worker(s)"
            )
        )
        print(
            f"probe: {est.probe_candidates} candidates at {est.candidates_per_second:,.0f} "
            f"candidates/s (model load {est.load_seconds:.1f} s)"
        )
        print(f"estimated time: {_duration(est.estimated_seconds)} (this machine, all cores)")
        if isinstance(candidates, SampledSpace) or candidates.size <= LARGE_SPACE:
            return 0
        whole = "--yes (or --sample N)" if candidates.size < MAX_INDEXABLE else "--sample N"
        print(f"note: this space needs {whole} to run", file=sys.stderr)
        return 0
    if spec.sample is None:
        spec.space.check_indexable()
    guard_size(candidates, args.yes)
    log.info("%s", _describe_space(spec))
    print(header, file=sys.stderr)
    outcome = screen(
        candidates,
        spec.ranking,
        model,
        info.reference,
        ingot_mass_g=spec.ingot_mass_g,
        partition_size=spec.partition_size,
        workers=_workers(args.workers, candidates.size),
        scheduler=args.scheduler,
        progress=not args.quiet,
        exact=args.exact,
        shortlist=args.shortlist,
    )
    if args.out:
        write_table(outcome.table, args.out)
    if args.show > 0:
        with pl.Config(
            tbl_rows=args.show,
            tbl_cols=-1,
            fmt_str_lengths=100,
            tbl_width_chars=250,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
        ):
            print(_display(outcome.table, args.show, spec.ranking))
    rate = outcome.merged.candidates / max(outcome.wall_seconds, 1e-9)
    shown = min(args.show, outcome.table.height)
    print(
        f"ranked {outcome.table.height} of {outcome.merged.candidates:,} candidates "
        f"({spec.ranking.objective}, risk {spec.ranking.risk}) in "
        f"{_duration(outcome.wall_seconds)} ({rate:,.0f}/s); shown {shown}"
        + (f"; written to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0


def run_predict_command(argv: Sequence[str]) -> int:
    args = predict_parser().parse_args(_join_signed_values(argv))
    _logging(args.verbose)
    if args.out:
        check_output_path(args.out)
    bad_path = Path(args.bad_rows or Path(args.file).name + ".bad.csv")
    if args.skip_bad:
        check_output_path(bad_path)
    ranking = Ranking(
        objective=args.objective,
        risk=args.risk,
        kappa=args.kappa,
        weights=(0.5, 0.5) if args.weights is None else parse_weights(args.weights),
        condition=_condition(args, Condition()),
    )
    info = inspect_model(args.model, args.model_sha256)
    check_ranking(ranking, info)
    inputs = parse_inputs(read_texts(args.file, args.column))
    if inputs.bad.height and not args.skip_bad:
        row, text, reason = inputs.bad.row(0)
        raise UserInputError(
            f"{args.file}: row {row}: {text!r}: {reason} ({inputs.bad.height} bad row(s) in "
            "all; fix them or pass --skip-bad to write them to a side file and go on)"
        )
    if inputs.bad.height:
        write_table(inputs.bad, bad_path)
        print(f"skipped {inputs.bad.height} bad row(s): written to {bad_path}", file=sys.stderr)
    if not len(inputs.table):
        raise UserInputError(f"{args.file}: no composition to predict")
    print(
        f"condition: {ranking.condition}; ranking {ranking.objective} on "
        f"{', '.join(ranking.tasks)}\nmodel: {info.path} (sha256 {info.sha256})",
        file=sys.stderr,
    )
    model = replace(_model_ref(args), sha256=info.sha256)
    table = predict_rows(
        inputs,
        model,
        ranking,
        info.reference,
        order_by=args.order,
        ingot_mass_g=args.ingot_mass,
        model_sha256=info.sha256,
    )
    if args.out:
        write_table(table, args.out)
    if args.show > 0:
        shown = pl.concat(
            [table.select("row").head(args.show), _display(table, args.show, ranking)],
            how="horizontal",
        )
        with pl.Config(
            tbl_rows=args.show,
            tbl_cols=-1,
            fmt_str_lengths=100,
            tbl_width_chars=250,
            tbl_hide_dataframe_shape=True,
            tbl_hide_column_data_types=True,
        ):
            print(shown)
    print(
        f"predicted {table.height:,} row(s) of {args.file}"
        + (f"; written to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0


def run_batch_command(argv: Sequence[str]) -> int:
    args = batch_parser().parse_args(argv)
    _logging(args.verbose)
    spec = load_spec(args.spec)
    out = Path(args.out)
    existing = next(p for p in (out, *out.parents, Path(".")) if p.exists())
    if existing.is_dir():
        check_writable_dir(existing, f"--out {args.out!r}")

    def logged(pid: int, done: int, total: int) -> None:
        log.info("partition %d recorded (%d of %d done)", pid, done, total)

    summary = run_batch(
        spec,
        args.out,
        _model_ref(args),
        workers=args.workers or os.cpu_count() or 1,
        scheduler=args.scheduler,
        progress=not args.quiet,
        confirmed=args.yes,
        restart=args.restart,
        max_partitions=args.max_partitions,
        after_partition=logged,
        spec_path=args.spec,
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
PLAN_MAX_SPACE = 200_000


def plan_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hea-screen plan",
        description="Choose the next k alloys for the lab from a screen's output (or a spec): "
        "acquisition on the calibrated mean and uncertainty, batch diversity, constraints; "
        "writes the plan as CSV and a self-contained HTML report.",
    )
    p.add_argument(
        "candidates",
        nargs="?",
        metavar="FILE",
        help="hea-screen output or compositions (.csv, .parquet, .json)",
    )
    p.add_argument("--spec", metavar="YAML", help="plan over a spec's space instead")
    p.add_argument("-k", "--batch", type=_positive_int, default=8, help="picks (default 8)")
    p.add_argument(
        "--objective",
        choices=[o for o in OBJECTIVES if o != "pareto"],
        help="what to improve (default: the spec's, else weighted)",
    )
    p.add_argument("--weights", metavar="W_UTS,W_EL", help="weights of weighted (0.5,0.5)")
    _condition_options(p)
    p.add_argument("--acquisition", choices=ACQUISITIONS, default="ei", help="default ei")
    p.add_argument("--beta", type=_number, default=2.0, help="UCB's beta (default 2)")
    p.add_argument(
        "--min-distance",
        type=_number,
        default=0.05,
        metavar="D",
        help="least L1 distance in atomic fractions to a measured alloy and between picks "
        "(default 0.05)",
    )
    p.add_argument(
        "--diversity", type=_number, default=0.3, metavar="L", help="penalty length (0.3)"
    )
    p.add_argument(
        "--phase",
        choices=PHASE_SCREENS,
        default="solid-solution",
        help="phase screen: solid-solution (Omega >= 1.1, delta <= 6.6 %%), fcc or bcc (and "
        "that VEC class), any (default solid-solution)",
    )
    p.add_argument(
        "--bounds", action="append", default=[], metavar="EL:LO-HI", help="e.g. Al:0-0.2"
    )
    p.add_argument("--store", metavar="DIR", help="measurement store (hea-screen update)")
    p.add_argument("--ingot-mass", type=_number, default=50.0, metavar="G", help="grams (50)")
    p.add_argument("--out", required=True, metavar="CSV", help="the plan as CSV")
    p.add_argument("--html", metavar="FILE", help="the HTML report")
    p.add_argument("--model", metavar="BUNDLE", help="model bundle directory (default: shipped)")
    p.add_argument("--model-sha256", type=_sha256, metavar="HEX", help="pin the bundle")
    return p


def _plan_inputs(args: argparse.Namespace) -> tuple[pl.DataFrame, Ranking]:
    """Candidates (a file, or a spec's space) and the ranking the plan is about."""
    if (args.candidates is None) == (args.spec is None):
        raise UserInputError("give a candidates FILE (a hea-screen output) or --spec YAML")
    base = load_spec(args.spec).ranking if args.spec else Ranking()
    ranking = Ranking(
        objective=args.objective or (base.objective if base.objective != "pareto" else "weighted"),
        weights=base.weights if args.weights is None else parse_weights(args.weights),
        condition=_condition(args, base.condition),
    )
    if args.candidates is not None:
        return read_candidates(args.candidates), ranking
    candidates = load_spec(args.spec).candidates()
    if candidates.size > PLAN_MAX_SPACE:
        raise UserInputError(
            f"the spec's space has {candidates.size:,} candidates; plan enumerates up to "
            f"{PLAN_MAX_SPACE:,}: screen it first (hea-screen --spec ... --top N --out FILE)"
        )
    texts = candidates.table(0, candidates.size).canonical_texts()
    return pl.DataFrame({"composition": texts}), ranking


def run_plan(argv: Sequence[str]) -> int:
    args = plan_parser().parse_args(_join_signed_values(argv))
    check_output_path(args.out)
    if args.html:
        check_writable_dir(Path(args.html).resolve().parent, f"--html {args.html!r}")
    bounds = {el: (float(lo), float(hi)) for el, (lo, hi) in parse_bounds(args.bounds).items()}
    options = PlanOptions(
        args.batch,
        args.acquisition,
        args.beta,
        args.min_distance,
        args.diversity,
        args.phase,
        bounds,
    )
    frame, ranking = _plan_inputs(args)
    info = inspect_model(args.model, args.model_sha256)
    check_ranking(ranking, info)
    bundle = load_task_bundle(info.path, info.sha256)
    objective = Objective.of(ranking, info.reference)
    measured = measured_from_training(TrainingSet.from_json(bundle.training_set_text()))
    if args.store:
        measured = merge_measured(measured, MeasurementStore(args.store).measured())
    frame = with_predictions(frame, info.path, info.sha256, ranking.condition, ranking.tasks)
    plan = select(frame, objective, measured, options, bundle.interval)
    plan = lab_columns(plan, args.ingot_mass)
    strength, ductility = ranking.strength, ranking.ductility
    header = [
        f"condition: {ranking.condition}; objective {objective.name} "
        f"({', '.join(objective.tasks)}); acquisition {options.acquisition}",
        f"constraints: phase {options.phase}; bounds {args.bounds or 'none'}; minimum L1 "
        f"distance {options.min_distance:g}; {len(measured.compositions)} measured alloys",
        f"model: {info.path} (sha256 {info.sha256}); ingot {args.ingot_mass:g} g",
    ]
    write_lab_sheet(
        plan,
        frame,
        args.out,
        args.html,
        (strength.name, ductility.name),
        header,
        (strength.label, ductility.label),
    )
    print("\n".join(header), file=sys.stderr)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
        print(plan.select("pick", "composition", "reason", "acquisition", "objective_mean",
                          "objective_sigma", "distance_to_measured"))
    print(
        f"planned {plan.height} of {frame.height:,} candidates; written to {args.out}"
        + (f" and {args.html}" if args.html else ""),
        file=sys.stderr,
    )
    return 0


def update_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="hea-screen update",
        description="Add the lab's measurements to the measurement store and write a new "
        "bundle version beside the old one: recalibrated intervals, refitted tree members "
        "(with the train extra), and how the new data move the next plan's predictions.",
    )
    p.add_argument(
        "--measured",
        required=True,
        metavar="CSV",
        help="results: composition, test_type, temperature_c, processing and any of uts_mpa, "
        "ys_mpa, elongation_pct, hardness_hv",
    )
    p.add_argument(
        "--store", default="measurements", metavar="DIR", help="store (default ./measurements)"
    )
    p.add_argument("--model", metavar="BUNDLE", help="bundle to update (default: shipped)")
    p.add_argument("--model-sha256", type=_sha256, metavar="HEX", help="pin that bundle")
    p.add_argument("--out", metavar="DIR", help="new bundle (default: BUNDLE.vN beside it)")
    p.add_argument("--plan", metavar="FILE", help="plan (or candidates) to report movement on")
    p.add_argument("--no-refit", action="store_true", help="recalibrate only")
    return p


def run_update(argv: Sequence[str]) -> int:
    args = update_parser().parse_args(argv)
    records = read_results(args.measured)
    store = MeasurementStore(args.store)
    store.check_new(records)
    info = inspect_model(args.model, args.model_sha256)
    out = Path(args.out) if args.out else default_version_path(info.path)
    if out.exists():
        raise UserInputError(f"--out {str(out)!r} exists: a new bundle never overwrites one")
    check_writable_dir(out.resolve().parent, f"--out {str(out)!r}")
    old = TaskPredictor(info.path, sha256=info.sha256)
    check_against_model(records, old)
    plan = read_candidates(args.plan)["composition"] if args.plan else None
    calibration = recalibrate(old.bundle, new_scores(records, old))
    tasks = sorted(calibration)
    everything = pl.concat([store.records(), records], how="vertical_relaxed")
    refit = Refit(skipped=dict.fromkeys(tasks, "--no-refit"))
    if not args.no_refit:
        refit = refit_trees(old.bundle, everything, tasks)
        refit.calibrate(calibration, old.bundle.interval)
    update = {
        "store": str(Path(args.store).resolve()),
        "imports": [*(e["sha256"] for e in store.imports()), store.check_new(records)],
        "refitted": refit.done,
        "not_refitted": refit.skipped,
    }
    sha = write_version(old.bundle, out, calibration, refit.files, everything, update)
    entry = store.add(records, str(args.measured))
    print(f"stored {entry['rows']} measurements in {args.store} (sha256 {entry['sha256'][:12]})")
    for task, cal in calibration.items():
        print(
            f"{task}: {cal.new_rows} new; old 90 % interval held {cal.covered_before:.0%} of "
            f"them; conformal factor {cal.old:.3g} -> {cal.new:.3g}"
        )
    for task, what in refit.done.items():
        print(f"{task}: {what}")
    for task, why in refit.skipped.items():
        print(f"{task}: members kept: {why}")
    print(f"new bundle {out} (sha256 {sha}; parent {info.sha256})")
    new = TaskPredictor(out, sha256=sha)
    shown = records["composition"].unique(maintain_order=True) if plan is None else plan
    moved = movement(old, new, shown, Ranking().condition, list(Ranking().tasks))
    with pl.Config(tbl_rows=20, tbl_cols=-1, fmt_str_lengths=40, tbl_width_chars=200):
        print(f"predictions at {Ranking().condition}, before -> after:")
        print(moved.head(20))
    return 0


def _os_error(exc: OSError) -> str:
    """A system error (disk full, permission, ...) in one line, for ``error: ...``."""
    where = f" ({exc.filename})" if exc.filename else ""
    return (
        f"{exc.strerror or exc}{where}; the run stopped (a batch job keeps its finished "
        "partitions and resumes when run again)"
    )


def _workers(given: int | None, candidates: int) -> int:
    """``--workers``, or by default one per core above :data:`IN_PROCESS_SPACE` candidates
    and 1 (this process, no cluster start) up to it."""
    if given is not None:
        return given
    return 1 if candidates <= IN_PROCESS_SPACE else os.cpu_count() or 1


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 10 * _YEAR:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / _YEAR:.3g} years"


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # importing distributed (when a cluster starts) sets its own logger to INFO; the
    # engine keeps that chatter for --verbose (quiet_distributed)


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
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
