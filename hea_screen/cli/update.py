"""``hea-screen update --measured FILE``: store lab results and write a recalibrated bundle
version."""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from hea_screen.cli.common import MODEL_FLAG, Parser, sha256
from hea_screen.cli.tables import movement_table, render
from hea_screen.errors import UserInputError
from hea_screen.inference.predictor import TaskPredictor
from hea_screen.inference.versions import models_dir, next_version
from hea_screen.output import check_writable_dir
from hea_screen.planning.acquisition import (
    read_candidates,
)
from hea_screen.planning.store import MeasurementStore, read_results
from hea_screen.planning.update import (
    MOVEMENT_ROWS,
    Refit,
    check_against_model,
    movement,
    new_scores,
    recalibrate,
    refit_trees,
    write_version,
)
from hea_screen.screening.model_ref import inspect_model
from hea_screen.screening.ranking import Ranking

log = logging.getLogger("hea_screen")


def update_parser() -> argparse.ArgumentParser:
    p = Parser(
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
    p.add_argument("--model", **MODEL_FLAG)  # type: ignore[arg-type]
    p.add_argument("--model-sha256", type=sha256, metavar="HEX", help="pin that bundle")
    p.add_argument(
        "--out",
        metavar="DIR",
        help=f"new bundle (default: {models_dir()}/NAME.vN; then --model NAME.vN uses it)",
    )
    p.add_argument("--plan", metavar="FILE", help="plan (or candidates) to report movement on")
    p.add_argument("--no-refit", action="store_true", help="recalibrate only")
    return p


def run_update(argv: Sequence[str]) -> int:
    args = update_parser().parse_args(argv)
    records = read_results(args.measured)
    store = MeasurementStore(args.store)
    digest = store.check_new(records)
    store.check_writable()
    info = inspect_model(args.model, args.model_sha256)
    out = Path(args.out) if args.out else next_version(info.path)
    if out.exists() or out.is_symlink():  # a dangling link too: the bundle would go elsewhere
        raise UserInputError(f"--out {str(out)!r} exists: a new bundle never overwrites one")
    if not args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out.resolve().parent, f"--out {str(out)!r}")
    old = TaskPredictor(info.path, sha256=info.sha256)
    check_against_model(records, old, f"measured results {args.measured!r}")
    plan = read_candidates(args.plan)["composition"] if args.plan else None
    calibration = recalibrate(old.bundle, new_scores(records, old))
    tasks = sorted(calibration)
    stored = store.records()
    everything = pl.concat([stored, records], how="vertical_relaxed") if stored.height else records
    del stored
    refit = Refit(skipped=dict.fromkeys(tasks, "--no-refit"))
    if not args.no_refit:
        refit = refit_trees(old.bundle, everything, tasks)
    update = {
        "store": str(Path(args.store).resolve()),
        "imports": [*(e["sha256"] for e in store.imports()), digest],
        "refitted": refit.done,
        "not_refitted": refit.skipped,
    }
    sha = write_version(old.bundle, out, calibration, refit.files, everything, update)
    try:
        entry = store.add(records, str(args.measured), digest)
    except BaseException:  # the new bundle names this import: it goes with it
        shutil.rmtree(out, ignore_errors=True)
        raise
    print(f"stored {entry['rows']} measurements in {args.store} (sha256 {entry['sha256'][:12]})")
    for task, cal in calibration.items():
        print(
            f"{task}: {cal.new_rows} new; old 90 % interval held "
            f"{100 * cal.covered_before:.0f} % of them; conformal factor {cal.old:.3g} -> "
            f"{cal.new:.3g}"
        )
        print(f"  {cal.arithmetic(old.bundle.interval)}")
    for task, what in refit.done.items():
        print(f"{task}: {what}")
    for task, why in refit.skipped.items():
        print(f"{task}: members kept: {why}")
    print(f"new bundle {out}\n  sha256 {sha}\n  parent {info.sha256}")
    if not args.out:
        print(f"use it with --model {out.name} (or --model {out})")
    shown = records["composition"].unique(maintain_order=True) if plan is None else plan
    alloys = shown.len()
    shown = shown.head(MOVEMENT_ROWS)
    del records, everything  # memory for loading the new bundle (10^6 rows held 0.3 GB)
    # the movement report predicts without the nearest-data columns: the new training set
    # (every stored alloy) stays unparsed
    new = TaskPredictor(out, sha256=sha, training_set=False)
    moved = movement(old, new, shown, Ranking().condition, list(Ranking().tasks))
    print(
        f"predictions at {Ranking().condition}, before -> after (the first {moved.height} "
        f"of {alloys:,} {'planned' if plan is not None else 'measured'} alloys):"
    )
    print(render(movement_table(moved, list(Ranking().tasks))))
    return 0
