"""The condition-aware run's evaluation: model selection on validation loss, the spread over
seeds, conformal calibration, per-task metrics and the out-of-fold table."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from hea_screen.conditions import PHASE, ROOM_TEMPERATURE_C, TASKS
from hea_screen.inference.bundle import conformal_quantile
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


def with_spread(predictions: pl.DataFrame, frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``measured``, per-row ``predicted_mean``/``predicted_std`` over seeds (same model)."""
    spread = predictions.group_by("model", "row").agg(
        pl.col("predicted").mean().alias("predicted_mean_seeds"),
        pl.col("predicted").std(ddof=1).alias("predicted_std"),
    )
    measured = frame.with_row_index("row").select(
        pl.col("row").cast(pl.Int64), pl.col("value").alias("measured"), "temperature_c"
    )
    return predictions.join(spread, on=["model", "row"]).join(measured, on="row")


def calibrate(
    spread: pl.DataFrame, coverage: float, std_floor: dict[str, float]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per model and regression task: conformal factor ``c``, scale offset and cross-conformal
    coverage of the interval ``mean ± c·(std + offset)``.

    The scale of a row is its spread over seeds plus ``offset``, the task's median spread: a
    spread estimated from a few models can be near zero by chance, and a pure ratio would let
    those rows set ``c`` (intervals ~16× the fold spread, measured); the offset keeps the
    interval tied to the spread without that. Scores ``|measured − mean over seeds| /
    (max(std, floor) + offset)`` of every row once (the first seed's fold says which fold a
    row belongs to); coverage is measured with ``c`` from the other folds, on all rows and on
    25 °C rows.
    """
    first = spread["seed"].min()
    rows = spread.filter(pl.col("seed") == first, pl.col("task") != PHASE.name)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (model, task), part in rows.group_by("model", "task"):
        std = np.maximum(part["predicted_std"].fill_null(np.nan).to_numpy(), std_floor[task])
        offset = float(np.nanmedian(std))
        residual = np.abs(part["measured"].to_numpy() - part["predicted_mean_seeds"].to_numpy())
        score = residual / (std + offset)
        folds = part["fold"].to_numpy()
        covered = np.zeros(len(score), dtype=bool)
        for k in np.unique(folds):
            c_k = conformal_quantile(score[folds != k], coverage)
            covered[folds == k] = score[folds == k] <= c_k
        room = part["temperature_c"].to_numpy() == ROOM_TEMPERATURE_C
        out.setdefault(str(model), {})[str(task)] = {
            "factor": conformal_quantile(score, coverage),
            "offset": offset,
            "coverage": float(np.mean(covered[np.isfinite(score)])),
            "coverage_25c": float(np.mean(covered[room & np.isfinite(score)])),
            "rows": int(np.isfinite(score).sum()),
        }
    return out


def metrics_table(spread: pl.DataFrame, protocol: str) -> pl.DataFrame:
    """Per model, task, seed and slice (``25C``, ``all``): the task's metrics."""
    rows = []
    for (model, task, seed), part in spread.group_by("model", "task", "seed"):
        for slice_name, sub in (
            ("25C", part.filter(pl.col("temperature_c") == ROOM_TEMPERATURE_C)),
            ("all", part),
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
    return pl.DataFrame(rows).sort("protocol", "task", "model", "slice", "seed")


def summarize(metrics: pl.DataFrame) -> pl.DataFrame:
    """Mean and standard deviation over seeds of every metric."""
    values = [
        c
        for c in ("r2", "mae", "spearman", "top_decile_recall", "accuracy", "balanced_accuracy")
        if c in metrics.columns
    ]
    return (
        metrics.group_by("protocol", "model", "task", "slice")
        .agg(
            pl.col("n").mean().round(0).cast(pl.Int64),
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
) -> pl.DataFrame:
    """The bundle's ``oof_predictions.csv``: the shipped model of each task, every seed.

    ``predicted_mean`` is the fold model's own prediction (for the first seed, the output of
    the shipped ONNX fold model); ``predicted_std`` is the spread over seeds before
    calibration (the manifest holds the conformal factor ``c`` that scales it).
    """
    chosen = pl.DataFrame(
        {"task": list(selection), "model": [s["model"] for s in selection.values()]}
    )
    meta = frame.with_row_index("row").select(
        pl.col("row").cast(pl.Int64), "mpea_row", "composition", "canonical", "processing"
    )
    tasks = pl.DataFrame(
        {
            "task": [t.name for t in TASKS],
            "test_type": [t.test_type.value if t.test_type else None for t in TASKS],
        }
    )
    return (
        spread.join(chosen, on=["task", "model"], how="semi")
        .join(meta, on="row")
        .join(tasks, on="task")
        .select(
            "composition",
            "canonical",
            pl.col("task").alias("property"),
            "test_type",
            "temperature_c",
            "processing",
            "fold",
            "measured",
            pl.col("predicted").alias("predicted_mean"),
            "predicted_std",
            "seed",
            "model",
            "mpea_row",
        )
        .sort("seed", "property", "mpea_row")
    )
