"""``hea-screen plan SCREEN``: the lab's next batch from a screen's ranked candidates."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from hea_screen.cli.common import (
    MODEL_FLAG,
    Parser,
    condition_from_args,
    condition_options,
    ingot_mass,
    join_signed_values,
    number,
    positive_int,
    sha256,
)
from hea_screen.cli.tables import plan_table, render
from hea_screen.compositions.phase_rules import RISKS
from hea_screen.compositions.weighing import lab_columns
from hea_screen.conditions import TASKS_BY_NAME
from hea_screen.errors import UserInputError
from hea_screen.inference.applicability import TrainingSet
from hea_screen.inference.bundle import load_task_bundle
from hea_screen.output import check_output_path, check_target, check_writable_dir
from hea_screen.planning.acquisition import (
    ACQUISITIONS,
    PHASE_SCREENS,
    Measured,
    Objective,
    PlanOptions,
    measured_from_training,
    merge_measured,
    read_candidates,
    select,
    with_predictions,
)
from hea_screen.planning.lab_sheet import write_lab_sheet
from hea_screen.planning.store import MeasurementStore
from hea_screen.screening.columns import at_pct, quantity, task_name
from hea_screen.screening.model_ref import check_ranking, inspect_model
from hea_screen.screening.ranking import OBJECTIVES, Ranking
from hea_screen.screening.spec import (
    load_spec,
    parse_bounds,
    parse_weights,
)

PLAN_MAX_SPACE = 200_000


def plan_parser() -> argparse.ArgumentParser:
    p = Parser(
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
    p.add_argument("-k", "--batch", type=positive_int, default=8, help="picks (default 8)")
    p.add_argument(
        "--objective",
        choices=[o for o in OBJECTIVES if o != "pareto"],
        help="what to improve (default: the spec's, else weighted)",
    )
    p.add_argument("--weights", metavar="W_UTS,W_EL", help="weights of weighted (0.5,0.5)")
    condition_options(p)
    p.add_argument("--acquisition", choices=ACQUISITIONS, default="ei", help="default ei")
    p.add_argument("--beta", type=number, default=2.0, help="UCB's beta (default 2)")
    p.add_argument(
        "--min-distance",
        type=number,
        default=0.05,
        metavar="D",
        help="least L1 distance in atomic fractions to a measured alloy and between picks "
        "(default 0.05)",
    )
    p.add_argument(
        "--diversity", type=number, default=0.3, metavar="L", help="penalty length (0.3)"
    )
    p.add_argument(
        "--phase",
        choices=PHASE_SCREENS,
        default="solid-solution",
        help="phase screen: solid-solution (Omega >= 1.1, delta <= 6.6 %%), fcc or bcc (and "
        "that VEC class), any (default solid-solution)",
    )
    p.add_argument(
        "--exclude-flags",
        default="",
        metavar="RISKS",
        help=f"drop candidates raising these risk flags, comma separated: {', '.join(RISKS)} "
        "(BCC refractory tensile brittleness, sigma phase, Laves phase; see the flags' "
        "references in docs/planning.md)",
    )
    p.add_argument(
        "--bounds", action="append", default=[], metavar="EL:LO-HI", help="e.g. Al:0-0.2"
    )
    p.add_argument("--store", metavar="DIR", help="measurement store (hea-screen update)")
    p.add_argument("--ingot-mass", type=ingot_mass, default=50.0, metavar="G", help="grams (50)")
    p.add_argument("--out", required=True, metavar="CSV", help="the plan as CSV")
    p.add_argument(
        "--html", metavar="FILE", help="the lab sheet: a self-contained HTML page (prints on A4)"
    )
    p.add_argument("--model", **MODEL_FLAG)  # type: ignore[arg-type]
    p.add_argument("--model-sha256", type=sha256, metavar="HEX", help="pin the bundle")
    return p


def _plan_inputs(args: argparse.Namespace) -> tuple[pl.DataFrame, Ranking]:
    """Candidates (a file, or a spec's space) and the ranking the plan is about."""
    if (args.candidates is None) == (args.spec is None):
        raise UserInputError("give a candidates FILE (a hea-screen output) or --spec YAML")
    base = load_spec(args.spec).ranking if args.spec else Ranking()
    ranking = Ranking(
        objective=args.objective or (base.objective if base.objective != "pareto" else "weighted"),
        weights=base.weights if args.weights is None else parse_weights(args.weights),
        condition=condition_from_args(args, base.condition),
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


def objective_text(objective: Objective) -> str:
    """``tensile UTS (MPa) [uts_tension_mpa]`` or ``weighted z-scores: 0.5 × tensile UTS +
    0.5 × tensile elongation at fracture [...]``."""
    names = ", ".join(objective.tasks)
    if objective.name != "weighted":
        return f"{TASKS_BY_NAME[objective.name].label} [{names}]"
    terms = " + ".join(
        f"{w:g} × {task_name(TASKS_BY_NAME[t])}" for t, w in objective.weights.items()
    )
    return f"weighted z-scores: {terms} [{names}]"


def incumbents(measured: Measured, objective: Objective) -> str:
    """``tensile UTS 1,500 MPa (Co25 Cr25 ...), ...``: the best measured value per task."""
    parts = []
    for name in objective.tasks:
        task, best = TASKS_BY_NAME[name], measured.best(name)
        value = "none" if best is None else f"{quantity(best.value, task.unit)} {task.unit}"
        where = "" if best is None else f" ({at_pct(best.composition)})"
        parts.append(f"{task_name(task)} {value}{where}")
    return (
        "; ".join(parts) + " (the bundle's training alloys, any temperature and route of "
        "this test type, and the store's values at this condition)"
    )


def run_plan(argv: Sequence[str]) -> int:
    args = plan_parser().parse_args(join_signed_values(argv))
    inputs = {"candidates FILE": args.candidates, "--spec": args.spec}
    check_output_path(args.out, "--out", inputs)
    if args.html:
        check_target(args.html, "--html", {**inputs, "--out": args.out})
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
        tuple(f.strip() for f in args.exclude_flags.split(",") if f.strip()),
    )
    store = MeasurementStore(args.store, create=False) if args.store else None
    frame, ranking = _plan_inputs(args)
    info = inspect_model(args.model, args.model_sha256)
    check_ranking(ranking, info)
    bundle = load_task_bundle(info.path, info.sha256)
    objective = Objective.of(ranking, info.reference)
    measured = measured_from_training(TrainingSet.from_json(bundle.training_set_text()))
    if store is not None:
        measured = merge_measured(measured, store.measured(ranking.condition))
    frame = with_predictions(frame, info.path, info.sha256, ranking.condition, ranking.tasks)
    plan = select(frame, objective, measured, options, bundle.interval)
    plan = lab_columns(plan, args.ingot_mass)
    strength, ductility = ranking.strength, ranking.ductility
    header = [
        f"condition: {ranking.condition}; objective {objective_text(objective)}; "
        f"acquisition {options.acquisition.upper()}",
        f"constraints: phase {options.phase}; excluded risks "
        f"{', '.join(options.exclude_flags) or 'none'}; bounds {args.bounds or 'none'}; minimum L1 "
        f"distance {options.min_distance:g}; {len(measured.compositions)} measured alloys",
        f"best measured: {incumbents(measured, objective)}",
        f"model: {info.path} (sha256 {info.sha256}); ingot {args.ingot_mass:g} g",
    ]
    write_lab_sheet(
        plan,
        frame,
        args.out,
        args.html,
        objective.tasks,
        (strength.name, ductility.name),
        header,
    )
    print("\n".join(header), file=sys.stderr)
    print(render(plan_table(plan, objective.tasks), whole=f"every column: {args.out}"))
    print(
        f"planned {plan.height} of {frame.height:,} candidates; written to {args.out}"
        + (f" and {args.html}" if args.html else ""),
        file=sys.stderr,
    )
    return 0
