"""``hea-screen [--elements ... | --spec FILE]``: rank a candidate space at a stated condition."""

from __future__ import annotations

import argparse
import logging
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
    duration,
    ingot_mass,
    join_signed_values,
    model_options,
    model_ref,
    number,
    positive_int,
    run_header,
    setup_logging,
    stage_options,
    workers,
)
from hea_screen.cli.tables import ranked_table, render
from hea_screen.errors import UserInputError
from hea_screen.output import check_output_path, check_target, check_writable_dir, write_table
from hea_screen.planning.lab_sheet import screen_html, write_html
from hea_screen.screening.engine import LARGE_SPACE, estimate, guard_size, screen
from hea_screen.screening.model_ref import check_inputs, check_ranking, inspect_model
from hea_screen.screening.ranking import OBJECTIVES, RISKS, Ranking
from hea_screen.screening.space import MAX_INDEXABLE, SampledSpace
from hea_screen.screening.spec import (
    DEFAULTS,
    ScreenSpec,
    build_space,
    load_spec,
    parse_bounds,
    parse_elements,
    parse_weights,
)

log = logging.getLogger("hea_screen")


def screen_parser() -> argparse.ArgumentParser:
    p = Parser(
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
        "--min-elements", type=positive_int, metavar="N", help="default 3 (or palette size)"
    )
    s.add_argument("--max-elements", type=positive_int, metavar="N", help="default: palette size")
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
    s.add_argument("--sample", type=positive_int, metavar="N", help="screen a random sample")
    s.add_argument("--seed", type=int, metavar="N", help="seed of --sample (default 0)")
    condition_options(
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
        help="UTS,elongation weights >= 0 of weighted and pareto, e.g. 0.7,0.3 (default 0.5,0.5)",
    )
    r.add_argument(
        "--risk", choices=RISKS, help="mean, safe (mean - k*std) or explore (mean + k*std)"
    )
    r.add_argument("--kappa", type=number, metavar="K", help="k of --risk (default 1)")
    r.add_argument(
        "--top", type=positive_int, metavar="N", help="rows in the ranking (default 100)"
    )
    stage_options(r)
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE", help="write the ranking as .csv, .parquet or .json")
    o.add_argument(
        "--html",
        metavar="FILE",
        help="also write the lab sheet of the ranking: a self-contained HTML page (charts of "
        "strength vs ductility and of the top candidates' compositions, the top rows)",
    )
    o.add_argument(
        "--show", type=count, default=20, metavar="N", help="rows printed (default 20; 0: none)"
    )
    o.add_argument(
        "--ingot-mass", type=ingot_mass, metavar="G", help="ingot mass in g for weigh-outs (50)"
    )
    o.add_argument(
        "--partition-size", type=positive_int, metavar="N", help="candidates per partition"
    )
    o.add_argument(
        "--dry-run",
        action="store_true",
        help="report space size, partitions and an estimated time, then stop",
    )
    model_options(p)
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
        condition=condition_from_args(args, r.condition),
    )
    return replace(
        base,
        ranking=ranking,
        partition_size=args.partition_size or base.partition_size,
        ingot_mass_g=base.ingot_mass_g if args.ingot_mass is None else args.ingot_mass,
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


#: Options whose value may start with "-" (argparse would take ``-1,2`` for an option).


def run_screen(argv: Sequence[str]) -> int:
    args = screen_parser().parse_args(join_signed_values(argv))
    setup_logging(args.verbose)
    spec = spec_from_args(args)
    if args.out:
        check_output_path(args.out, "--out", {"--spec": args.spec})
    if args.html:
        check_target(args.html, "--html", {"--spec": args.spec, "--out": args.out})
        check_writable_dir(Path(args.html).resolve().parent, f"--html {args.html!r}")
    spec.space.check_nonempty()
    candidates = spec.candidates()
    info = inspect_model(args.model, args.model_sha256, args.device, args.precision)
    check_inputs(candidates, info)
    check_ranking(spec.ranking, info)
    model = replace(model_ref(args), sha256=info.sha256)
    header = run_header(spec.ranking, info)
    if args.dry_run:
        print(_describe_space(spec))
        print(header)
        n_workers = workers(args.workers, candidates.size)
        est = estimate(
            candidates,
            spec.ranking,
            model,
            info.reference,
            partition_size=spec.partition_size,
            workers=n_workers,
            exact=args.exact,
            shortlist=args.shortlist,
        )
        where = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
        print(
            f"partitions: {est.partitions:,} of up to {est.partition_size:,} candidates "
            f"(batch {model.batch_size}); "
            + (f"scheduler {where}" if where else f"{n_workers} local worker(s)")
        )
        print(
            f"probe: {est.probe_candidates} candidates at {est.rates[0]:,.0f}-"
            f"{est.rates[1]:,.0f} candidates/s (model load {est.load_seconds:.1f} s)"
        )
        low, high = (duration(x) for x in est.seconds)
        print(f"estimated time: {low} to {high}; assumes {est.assumes}")
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
        workers=workers(args.workers, candidates.size),
        scheduler=args.scheduler,
        progress=not args.quiet,
        exact=args.exact,
        shortlist=args.shortlist,
    )
    if args.out:
        write_table(outcome.table, args.out)
    if args.html:
        facts = [
            f"condition: {spec.ranking.condition}",
            f"ranking: {spec.ranking.objective} on {', '.join(spec.ranking.tasks)}, risk "
            f"{spec.ranking.risk}",
            _describe_space(spec).splitlines()[0],
            f"model: {info.path} (sha256 {info.sha256})",
        ]
        page = screen_html(outcome.table, spec.ranking.tasks, facts, outcome.merged.candidates)
        write_html(args.html, page)
    if args.show > 0:
        columns = ranked_table(outcome.table, spec.ranking.tasks, args.show)
        print(render(columns, whole="every column: --out FILE"))
    rate = outcome.merged.candidates / max(outcome.wall_seconds, 1e-9)
    shown = min(args.show, outcome.table.height)
    saved = (
        f"; written to {args.out}"
        if args.out
        else f"\nnot saved: add --out FILE (.csv, .parquet or .json) to keep all "
        f"{outcome.table.height:,} rows and every column"
    )
    print(
        f"ranked {outcome.table.height:,} of {outcome.merged.candidates:,} candidates "
        f"({spec.ranking.objective}, risk {spec.ranking.risk}) in "
        f"{duration(outcome.wall_seconds)} ({rate:,.0f}/s); shown {shown}{saved}"
        + (f"\nlab sheet: {args.html}" if args.html else ""),
        file=sys.stderr,
    )
    return 0
