"""The condition-aware run's evaluation: model selection on validation loss, the spread over
seeds, conformal calibration, per-task metrics and the out-of-fold table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from hea_screen.conditions import PHASE, ROOM_TEMPERATURE_C, TASKS, TASKS_BY_NAME
from hea_screen.inference.intervals import Ensemble, conformal_quantile, ensemble, space_for
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


#: Distance bands (L1 in atomic fractions to the nearest alloy of another group of the task)
#: that coverage is reported on: near, mid, far.
DISTANCE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("< 0.1", 0.0, 0.1),
    ("0.1-0.25", 0.1, 0.25),
    (">= 0.25", 0.25, math.inf),
)
#: Fewest calibration rows of a route for its own (Mondrian) conformal factor.
MIN_ROUTE_ROWS = 30


def calibrate(
    spread: pl.DataFrame, coverage: float, distance: np.ndarray
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model and regression task: the interval of :mod:`hea_screen.inference.intervals`
    (space, offset, pooled and per-route conformal factors) and its cross-conformal coverage.

    Scores ``|f(measured) − centre| / (spread + offset)`` of every row once (the first
    partition's fold says which fold a row belongs to), ``offset`` the task's median spread;
    ``factor`` is the pooled quantile, ``factor_by_route`` the quantile of each route with at
    least :data:`MIN_ROUTE_ROWS` rows (Mondrian). Coverage is measured with factors from the
    other folds: on all rows, at 25 °C, per route and per distance band (``distance``: per
    measurement row, the L1 distance of its alloy to the nearest alloy of another group of the
    task), with the median half-width ``(hi − lo)/2`` at 25 °C in the task's unit.
    """
    first = spread["seed"].min()
    rows = spread.filter(
        pl.col("seed") == first, pl.col("task") != PHASE.name, pl.col("spread").is_not_null()
    )
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (model, task), part in rows.group_by("model", "task"):
        space = space_for(TASKS_BY_NAME[str(task)].unit)
        ens = Ensemble(
            part["predicted_mean"].to_numpy(), part["centre"].to_numpy(), part["spread"].to_numpy()
        )
        offset = float(np.nanmedian(ens.spread))
        score = ens.score(part["measured"].to_numpy(), space, offset)
        routes = np.asarray(part["processing"].to_list())
        folds = part["fold"].to_numpy()
        factor = np.full(len(score), np.nan)
        for k in np.unique(folds):
            train, test = folds != k, folds == k
            factor[test] = route_factors(score[train], routes[train], coverage).apply(routes[test])
        lo, hi = ens.bounds(factor, space, offset)
        y = part["measured"].to_numpy()
        covered = (y >= lo) & (y <= hi)
        room = part["temperature_c"].to_numpy() == ROOM_TEMPERATURE_C
        near = distance[part["row"].to_numpy()]
        shipped = route_factors(score, routes, coverage)
        out.setdefault(str(model), {})[str(task)] = {
            "space": space,
            "factor": shipped.pooled,
            "factor_by_route": shipped.by_route,
            "offset": offset,
            "coverage": float(np.mean(covered)),
            "coverage_25c": float(np.mean(covered[room])) if room.any() else math.nan,
            "coverage_by_route": _shares(covered, routes),
            "coverage_by_distance": {
                name: _share(covered[(near >= a) & (near < b)]) for name, a, b in DISTANCE_BANDS
            },
            "median_half_width_25c": (
                float(np.median((hi - lo)[room]) / 2) if room.any() else math.nan
            ),
            "rows": len(score),
        }
    return out


@dataclass(frozen=True)
class RouteFactors:
    """Pooled conformal factor and the factors of routes with enough rows."""

    pooled: float
    by_route: dict[str, float]

    def apply(self, routes: np.ndarray) -> np.ndarray:
        """The factor of each row's route (pooled where the route has none)."""
        return np.array([self.by_route.get(r, self.pooled) for r in routes])


def route_factors(score: np.ndarray, routes: np.ndarray, coverage: float) -> RouteFactors:
    """Mondrian factors: the pooled quantile and one per route of >= :data:`MIN_ROUTE_ROWS`."""
    by_route = {
        str(r): conformal_quantile(score[routes == r], coverage)
        for r in np.unique(routes)
        if (routes == r).sum() >= MIN_ROUTE_ROWS
    }
    return RouteFactors(conformal_quantile(score, coverage), by_route)


def _share(covered: np.ndarray) -> dict[str, float]:
    return {"coverage": float(np.mean(covered)) if len(covered) else math.nan, "rows": len(covered)}


def _shares(covered: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    return {str(v): _share(covered[labels == v]) for v in np.unique(labels)}


#: Routes with their own metrics (the three with enough tensile rows at 25 °C).
ROUTE_SLICES: tuple[str, ...] = ("CAST", "WROUGHT", "ANNEAL")


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
    """The bundle's ``oof_predictions.csv``: the shipped model of each regression task, every
    partition.

    ``predicted`` is the partition's fold model's own prediction (for the first partition,
    the output of the shipped ONNX fold model); ``predicted_mean``, ``centre`` and ``spread``
    are the ensemble of :func:`with_spread` (the same for every partition of a row);
    ``interval_lo`` / ``interval_hi`` the shipped calibrated interval (route factor).
    """
    chosen = pl.DataFrame(
        {"task": list(selection), "model": [s["model"] for s in selection.values()]}
    ).filter(pl.col("task") != PHASE.name)
    meta = frame.with_row_index("row").select(
        pl.col("row").cast(pl.Int64), "mpea_row", "composition", "canonical"
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
        ens = Ensemble(
            part["predicted_mean"].to_numpy(), part["centre"].to_numpy(), part["spread"].to_numpy()
        )
        lo, hi = ens.bounds(
            factors.apply(np.asarray(part["processing"].to_list())), cal["space"], cal["offset"]
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
        )
        .sort("partition", "property", "mpea_row")
    )
