"""The condition-aware run's evaluation: model selection on validation loss, the spread over
seeds, per-task metrics and the out-of-fold table (calibration:
:mod:`pretrain.condition_calibration`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from hea_screen.conditions import PHASE, ROOM_TEMPERATURE_C, TASKS, TASKS_BY_NAME
from hea_screen.inference.intervals import DISTANCE_CAP, Ensemble, Normalizer, ensemble, space_for
from pretrain.condition_calibration import RouteFactors
from pretrain.protocol import (
    classification_metrics,
    regression_metrics,
)


def select(predictions: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per task: each model's mean validation loss over folds and seeds, and the lowest."""
    losses = (
        predictions.unique(["model", "seed", "fold", "task"])
        .group_by("task", "model")
        .agg(pl.col("val_loss").mean())
        .drop_nans("val_loss")
        .sort("task", "val_loss", "model")
    )
    out = {}
    for task in TASKS:
        rows = losses.filter(pl.col("task") == task.name)
        if rows.height:
            out[task.name] = {
                "model": rows["model"][0],
                "validation_loss": dict(zip(rows["model"], rows["val_loss"])),
                "loss": "log-loss" if task is PHASE else "MSE (task units²)",
            }
    return out


def with_spread(predictions: pl.DataFrame, frame: pl.DataFrame, members: int) -> pl.DataFrame:
    """Add ``measured``, ``temperature_c``, ``processing`` and, per (model, row), the ensemble of
    the first ``members`` partitions (:func:`hea_screen.inference.intervals.ensemble` in the
    task's interval space): ``predicted_mean`` (task unit), ``centre`` and ``spread``.

    Each partition's prediction of a row comes from a model that never saw the row's group,
    trained on a random (K−1)/K of the other groups: ``members`` = K of them have the spread
    the screen's K fold models have for an alloy none of them saw.
    """
    parts = []
    for (model, task), part in predictions.filter(pl.col("task") != PHASE.name).group_by(
        "model", "task"
    ):
        seeds = sorted(part["seed"].unique().to_list())[:members]
        wide = (
            part.filter(pl.col("seed").is_in(seeds))
            .pivot(on="seed", index="row", values="predicted")
            .drop_nulls()
        )
        values = wide.select([str(s) for s in seeds]).to_numpy().T
        ens = ensemble(values, space_for(TASKS_BY_NAME[str(task)].unit))
        parts.append(
            pl.DataFrame(
                {
                    "model": [model] * wide.height,
                    "row": wide["row"],
                    "predicted_mean": ens.mean,
                    "centre": ens.centre,
                    "spread": ens.spread,
                }
            )
        )
    measured = frame.with_row_index("row").select(
        pl.col("row").cast(pl.Int64),
        pl.col("value").alias("measured"),
        "temperature_c",
        "processing",
        "grain_size_um",
    )
    joined = predictions.join(measured, on="row")
    if not parts:
        return joined
    return joined.join(pl.concat(parts), on=["model", "row"], how="left")


#: Routes with their own metrics (the three with enough tensile rows at 25 °C).
ROUTE_SLICES: tuple[str, ...] = ("CAST", "WROUGHT", "ANNEAL")


#: Column order of :func:`metrics_table` (fixed: the rows come from a ``group_by``, whose order,
#: and so the first row's keys, varies from run to run).
METRIC_COLUMNS: tuple[str, ...] = (
    "protocol",
    "model",
    "task",
    "slice",
    "seed",
    "n",
    "r2",
    "mae",
    "spearman",
    "top_decile_recall",
    "accuracy",
    "balanced_accuracy",
)


def metrics_table(spread: pl.DataFrame, protocol: str) -> pl.DataFrame:
    """Per model, task, seed (partition) and slice: the task's metrics. Slices: ``25C``,
    ``all`` and ``25C_<ROUTE>`` for the routes of :data:`ROUTE_SLICES`."""
    rows = []
    for (model, task, seed), part in spread.group_by("model", "task", "seed"):
        room = part.filter(pl.col("temperature_c") == ROOM_TEMPERATURE_C)
        for slice_name, sub in (
            ("25C", room),
            ("all", part),
            *((f"25C_{r}", room.filter(pl.col("processing") == r)) for r in ROUTE_SLICES),
        ):
            y, p = sub["measured"].to_numpy(), sub["predicted"].to_numpy()
            m = classification_metrics(y, p) if task == PHASE.name else regression_metrics(y, p)
            rows.append(
                {
                    "protocol": protocol,
                    "model": model,
                    "task": task,
                    "slice": slice_name,
                    "seed": seed,
                    **m,
                }
            )
    # every row's keys, not the first 100 rows' (a phase row first met later would lose its
    # accuracy columns): the schema is the union, in the order of METRIC_COLUMNS
    keys = {k for row in rows for k in row}
    schema = [c for c in METRIC_COLUMNS if c in keys]
    frame = pl.DataFrame(rows, schema=schema, infer_schema_length=None)
    return frame.sort("protocol", "task", "model", "slice", "seed")


def summarize(metrics: pl.DataFrame) -> pl.DataFrame:
    """Mean and standard deviation over seeds of every metric, with ``partitions``, the
    number of seeds a model ran on (fewer for the transformer and costly families)."""
    values = [
        c
        for c in ("r2", "mae", "spearman", "top_decile_recall", "accuracy", "balanced_accuracy")
        if c in metrics.columns
    ]
    return (
        metrics.group_by("protocol", "model", "task", "slice")
        .agg(
            pl.col("n").mean().round(0).cast(pl.Int64),
            pl.col("seed").n_unique().alias("partitions"),
            *(pl.col(c).mean().alias(c) for c in values),
            *(pl.col(c).std(ddof=0).alias(f"{c}_std") for c in values),
        )
        .sort("protocol", "task", "slice", "model")
    )


def oof_table(
    spread: pl.DataFrame,
    frame: pl.DataFrame,
    selection: dict[str, Any],
    calibration: dict[str, Any],
    distance: np.ndarray,
) -> pl.DataFrame:
    """The bundle's ``oof_predictions.csv``: the shipped model of each regression task, every
    partition.

    ``predicted`` is the partition's fold model's own prediction (for the first partition,
    the output of the shipped ONNX fold model); ``predicted_mean``, ``centre`` and ``spread``
    are the ensemble of :func:`with_spread` (the same for every partition of a row);
    ``interval_lo`` / ``interval_hi`` the shipped calibrated interval (route factor) at
    ``distance`` (per row of ``frame``: L1 to the nearest alloy of another group of the task
    at the row's route and temperature band,
    :attr:`pretrain.condition_calibration.Neighbourhood.condition_distance`; 2 where there is
    none), which is the last column.
    """
    chosen = pl.DataFrame(
        {"task": list(selection), "model": [s["model"] for s in selection.values()]}
    ).filter(pl.col("task") != PHASE.name)
    meta = frame.with_row_index("row").select(
        pl.col("row").cast(pl.Int64),
        "mpea_row",
        "composition",
        "canonical",
        pl.Series("distance", distance),
    )
    tasks = pl.DataFrame(
        {
            "task": [t.name for t in TASKS],
            "test_type": [t.test_type.value if t.test_type else None for t in TASKS],
        }
    )
    rows = spread.join(chosen, on=["task", "model"], how="semi").filter(
        pl.col("spread").is_not_null()
    )
    bounds = []
    for (model, task), part in rows.group_by("model", "task"):
        cal = calibration[str(model)][str(task)]
        factors = RouteFactors(cal["factor"], cal["factor_by_route"])
        norm = Normalizer(
            cal["offset"], cal.get("distance_slope", 0.0), cal.get("distance_cap", DISTANCE_CAP)
        )
        ens = Ensemble(
            part["predicted_mean"].to_numpy(), part["centre"].to_numpy(), part["spread"].to_numpy()
        )
        lo, hi = ens.bounds(
            factors.apply(np.asarray(part["processing"].to_list())),
            cal["space"],
            norm,
            distance[part["row"].to_numpy()],
        )
        bounds.append(
            part.select("model", "row", "seed").with_columns(
                pl.Series("interval_lo", lo), pl.Series("interval_hi", hi)
            )
        )
    return (
        rows.join(pl.concat(bounds), on=["model", "row", "seed"])
        .join(meta, on="row")
        .join(tasks, on="task")
        .select(
            "composition",
            "canonical",
            pl.col("task").alias("property"),
            "test_type",
            "temperature_c",
            "processing",
            "grain_size_um",
            pl.col("seed").alias("partition"),
            "fold",
            "measured",
            "predicted",
            "predicted_mean",
            "centre",
            "spread",
            "interval_lo",
            "interval_hi",
            "model",
            "mpea_row",
            "distance",
        )
        .sort("partition", "property", "mpea_row")
    )
