"""Would choosing the model family per processing route beat one family per task? A
measurement of the condition-aware run's protocol, not part of it.

The default bundle ships, per task, the family with the lowest mean validation loss
(``pretrain.condition_eval.select``). Over 10 grouped partitions the ExtraTrees without the
grain columns scores higher than the shipped grain-size ExtraTrees on cast tensile rows and
lower on wrought ones (docs/results.md). This script refits ``--families`` on the run's
grouped partitions (``pretrain.condition_folds.tabular_fold``, the run's own fits), keeps
each validation row's loss by its processing route, and compares on the test folds:

- ``per_task``: per task the family of lowest mean validation loss over folds and partitions
  (what ships);
- ``per_route``: per task and route the family of lowest pooled validation loss of that
  route's validation rows (the task's choice for a route without validation rows): what a
  bundle with one member per route would ship.

Both choices read validation losses only, pooled over partitions as the run's selection does
(a row of one partition's test fold sits in another partition's validation part, for both
alike). It prints, per task and slice at 25 °C, mean ± SD over partitions of R² (accuracy
for phase) and on how many partitions ``per_route`` is at least the plain family and at
least ``per_task``.

    python -m benchmarks.route_choice [--config configs/small.yaml] [--partitions 10]
        [--families extra_trees,extra_trees_plain,extra_trees_blend] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

from hea_screen.conditions import PHASE
from hea_screen.datasets.sources import data_dir
from pretrain.condition_calibration import neighbourhood
from pretrain.condition_data import load_data
from pretrain.condition_eval import metrics_table, select
from pretrain.condition_folds import tabular_fold
from pretrain.config import load_config
from pretrain.protocol import grouped_splits
from pretrain.tabular import FamilyFit

PLAIN = "extra_trees_plain"
SLICES = ("25C", "25C_CAST", "25C_WROUGHT", "25C_ANNEAL")


def refit(
    config_path: Path, partitions: int, families: list[str]
) -> tuple[pl.DataFrame, dict[tuple[str, str, str], list[float]]]:
    """Test predictions of ``families`` on the first ``partitions`` grouped partitions (the
    run's records, with ``measured``, ``temperature_c`` and ``processing``) and the summed
    loss and count of validation rows per (task, family, route)."""
    config = load_config(config_path)
    cond = config.conditions
    if cond is None:
        raise SystemExit(f"{config_path} has no conditions section")
    data = load_data(data_dir(), cond, config.seed)
    groups = neighbourhood(data.frame, data.fractions).groups
    routes = np.asarray(data.frame["processing"].to_list())
    route_losses: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])

    def collect(task: str, family: str, val: np.ndarray, fit: FamilyFit) -> None:
        for route in np.unique(routes[val]):
            mine = routes[val] == route
            total = route_losses[(task, family, str(route))]
            total[0] += float(fit.val_losses[mine].sum())
            total[1] += float(mine.sum())

    records = []
    for s in cond.seeds[:partitions]:
        for split in grouped_splits(groups, cond.folds, s, cond.val_fraction):
            t0 = time.perf_counter()
            records += tabular_fold(data, split, cond, s, None, families, on_fit=collect)
            print(
                f"partition {s} fold {split.fold}: {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )
    rows = data.frame.with_row_index("row").select(
        pl.col("row").cast(pl.Int64),
        pl.col("value").alias("measured"),
        "temperature_c",
        "processing",
    )
    predictions = pl.DataFrame(records).select(
        "model", "seed", "fold", "row", "task", "predicted", "val_loss"
    )
    return predictions.join(rows, on="row"), route_losses


def choices(
    predictions: pl.DataFrame, route_losses: dict[tuple[str, str, str], list[float]]
) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """The family per task (the run's :func:`~pretrain.condition_eval.select` on the
    records' ``val_loss``) and per (task, route) (lowest pooled validation loss of the
    route's rows; the task's family for a route without validation rows)."""
    per_task = {task: s["model"] for task, s in select(predictions).items()}
    per_route: dict[tuple[str, str], str] = {}
    for task, route in {(t, r) for t, _, r in route_losses}:
        scored = [
            (total / n, f)
            for (t, f, r), (total, n) in route_losses.items()
            if (t, r) == (task, route) and n
        ]
        per_route[(task, route)] = min(scored)[1] if scored else per_task[task]
    return per_task, per_route


def chosen(predictions: pl.DataFrame, pick: dict[tuple[str, str], str], name: str) -> pl.DataFrame:
    """The predictions of the family ``pick`` names for each row's (task, route), as model
    ``name``."""
    table = pl.DataFrame(
        {
            "task": [t for t, _ in pick],
            "processing": [r for _, r in pick],
            "model": list(pick.values()),
        }
    )
    return predictions.join(table, on=["task", "processing", "model"]).with_columns(
        pl.lit(name).alias("model")
    )


def compare(metrics: pl.DataFrame) -> pl.DataFrame:
    """Per task and slice: mean and SD over partitions of the score of ``per_task``,
    ``per_route`` and the plain family, and the partitions where ``per_route`` is at least
    each."""
    score = pl.col("r2")
    if "accuracy" in metrics.columns:
        score = pl.when(pl.col("task") == PHASE.name).then("accuracy").otherwise(score)
    wide = (
        metrics.filter(pl.col("slice").is_in(SLICES), pl.col("n") > 0)
        .with_columns(score.alias("score"))
        .pivot(on="model", index=["task", "slice", "seed"], values="score")
    )
    return (
        wide.group_by("task", "slice")
        .agg(
            pl.len().alias("partitions"),
            *(pl.col(m).mean().alias(f"{m}_mean") for m in ("per_task", "per_route", PLAIN)),
            *(pl.col(m).std().alias(f"{m}_sd") for m in ("per_task", "per_route", PLAIN)),
            (pl.col("per_route") >= pl.col(PLAIN) - 1e-12).sum().alias("route_ge_plain"),
            (pl.col("per_route") >= pl.col("per_task") - 1e-12).sum().alias("route_ge_task"),
        )
        .sort("task", "slice")
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("configs/small.yaml"))
    p.add_argument("--partitions", type=int, default=10)
    p.add_argument("--families", default="extra_trees,extra_trees_plain,extra_trees_blend")
    p.add_argument("--json", type=Path, help="also write the table and the choices here")
    args = p.parse_args()
    families = args.families.split(",")
    if PLAIN not in families:
        raise SystemExit(f"--families must include {PLAIN} (the comparison's baseline)")
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    predictions, route_losses = refit(args.config, args.partitions, families)
    per_task, per_route = choices(predictions, route_losses)
    frame = pl.concat(
        [
            predictions,
            chosen(predictions, {k: per_task[k[0]] for k in per_route}, "per_task"),
            chosen(predictions, per_route, "per_route"),
        ]
    )
    table = compare(metrics_table(frame, "grouped"))
    print(
        f"{'task':32} {'slice':12} {'per task':>15} {'per route':>15} {'plain':>15} "
        f"{'route>=plain':>12} {'route>=task':>11}"
    )
    for r in table.iter_rows(named=True):
        cells = [
            f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_sd']:.3f}" for m in ("per_task", "per_route", PLAIN)
        ]
        print(
            f"{r['task']:32} {r['slice']:12} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
            f"{r['route_ge_plain']:>7}/{r['partitions']:<4} {r['route_ge_task']:>6}/"
            f"{r['partitions']:<4}"
        )
    print("choices (validation loss only):")
    for task in sorted(per_task):
        routes = ", ".join(f"{r}: {f}" for (t, r), f in sorted(per_route.items()) if t == task)
        print(f"  {task}: per task {per_task[task]}; per route {routes}")
    print(
        f"{time.perf_counter() - t0:.0f} s; CPU cores: {os.cpu_count()}; "
        f"load average: {os.getloadavg()}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "table": table.to_dicts(),
                    "per_task": per_task,
                    "per_route": {f"{t}|{r}": f for (t, r), f in per_route.items()},
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
