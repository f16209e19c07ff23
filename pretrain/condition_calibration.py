"""The condition-aware run's interval calibration and its cross-conformal coverage.

:func:`calibrate` fits, per model and regression task, the interval of
:mod:`hea_screen.inference.intervals` on out-of-fold ensembles (:func:`with_spread
<pretrain.condition_eval.with_spread>`):

- scale ``σ = (spread + offset)·exp(b·min(d, cap))``: ``offset`` the task's median spread,
  ``d`` the L1 distance (atomic fractions) from the row's alloy to the nearest alloy of
  another composition group of the task measured at the same processing route and
  temperature band (:class:`Neighbourhood`; at screen time the nearest-data search gives the
  same quantity for a candidate), ``b`` the least-squares slope of ``log(ratio + 0.001)`` on
  ``min(d, cap)``, ``ratio = |f(y) − centre| / (spread + offset)``, clipped at 0 (a fitted
  difficulty model, Lei et al., J. Am. Stat. Assoc. 113 (2018) 1094; never narrower far from
  the data);
- conformal factors: the pooled split-conformal quantile of ``|f(y) − centre| / σ`` and one
  per route with at least :data:`MIN_ROUTE_ROWS` calibration rows (Mondrian).

Coverage is cross-conformal: for each fold of a partition, ``b`` and the factors are refitted
on the other folds (the route cells are those the shipped interval has, so a route of 30-40
rows is tested with its own factor, not the pooled one) and applied to the fold's rows; the
per-row coverage is averaged over the fold assignments of every partition in the run (the
same scores split differently; one assignment reads a 40-row cell's coverage ±0.1 by itself).
Reported on all rows, at 25 °C, per route and per distance band (L1 to the nearest alloy of
another group of the task, any condition), each cell with its rows, composition groups and
``sd_if_calibrated``: the standard deviation a perfectly calibrated cell of that many rows
and groups would show, ``sqrt(p(1 − p)·Σ_g m_g(1 + (m_g − 1)ρ)) / n`` (``m_g`` rows of group
``g``, ``ρ`` the task's within-group correlation of being covered, one-way ANOVA estimate;
Kish, *Survey Sampling*, 1965, design effect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from hea_screen.conditions import PHASE, ROOM_TEMPERATURE_C, TASKS_BY_NAME, temperature_band
from hea_screen.inference.intervals import (
    DISTANCE_CAP,
    Ensemble,
    Normalizer,
    conformal_quantile,
    space_for,
)
from pretrain.protocol import composition_groups, nearest_other_group

#: Distance bands (L1 in atomic fractions to the nearest alloy of another group of the task)
#: that coverage is reported on: near, mid, far.
DISTANCE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("< 0.1", 0.0, 0.1),
    ("0.1-0.25", 0.1, 0.25),
    (">= 0.25", 0.25, math.inf),
)
#: Fewest calibration rows of a route for its own (Mondrian) conformal factor.
MIN_ROUTE_ROWS = 30
#: Added to the score ratio before its logarithm in the distance-slope fit (a row predicted
#: exactly has ratio 0).
RATIO_FLOOR = 1e-3


@dataclass(frozen=True)
class Neighbourhood:
    """Per row of the run's measurement table: its composition ``groups``; ``distance``, the
    L1 distance of its alloy to the nearest alloy of another group of the task (the reporting
    bands); ``condition_distance``, the same among the task's rows at the row's processing
    route and temperature band (the interval's scale; 2 where there is none)."""

    groups: np.ndarray
    distance: np.ndarray
    condition_distance: np.ndarray


def neighbourhood(frame: pl.DataFrame, fractions: np.ndarray) -> Neighbourhood:
    """The :class:`Neighbourhood` of every row of ``frame`` (columns ``canonical``, ``task``,
    ``processing``, ``temperature_c``; ``fractions`` its atomic fractions)."""
    groups = composition_groups(frame["canonical"].to_list(), fractions)
    tasks = frame["task"].to_list()
    where = [
        f"{t}|{p}|{temperature_band(c)}"
        for t, p, c in zip(tasks, frame["processing"], frame["temperature_c"])
    ]
    return Neighbourhood(
        groups,
        _nearest_within(fractions, groups, tasks),
        _nearest_within(fractions, groups, where),
    )


def _nearest_within(fractions: np.ndarray, groups: np.ndarray, labels: list[str]) -> np.ndarray:
    """Per row: :func:`nearest_other_group` among the rows with its label."""
    labels_arr = np.asarray(labels, dtype=object)
    out = np.full(len(labels_arr), 2.0)
    for label in dict.fromkeys(labels):
        rows = np.flatnonzero(labels_arr == label)
        out[rows] = nearest_other_group(fractions, groups, rows)
    return out


def distance_slope(ratio: np.ndarray, distance: np.ndarray, cap: float = DISTANCE_CAP) -> float:
    """``b`` of the interval's scale: the least-squares slope of ``log(ratio +``
    :data:`RATIO_FLOOR` ``)`` on ``min(distance, cap)``, never below 0 (module docstring)."""
    y = np.log(ratio + RATIO_FLOOR)
    ok = np.isfinite(y)
    x = np.minimum(distance[ok], cap)
    x = x - x.mean() if len(x) else x
    if not len(x) or x @ x == 0:
        return 0.0
    return max(0.0, float(x @ (y[ok] - y[ok].mean()) / (x @ x)))


@dataclass(frozen=True)
class RouteFactors:
    """Pooled conformal factor and the factors of routes with enough rows."""

    pooled: float
    by_route: dict[str, float]

    def apply(self, routes: np.ndarray) -> np.ndarray:
        """The factor of each row's route (pooled where the route has none)."""
        return np.array([self.by_route.get(r, self.pooled) for r in routes])


def mondrian_routes(routes: np.ndarray) -> list[str]:
    """Routes with at least :data:`MIN_ROUTE_ROWS` rows: those with their own factor."""
    names, counts = np.unique(routes, return_counts=True)
    return [str(r) for r, n in zip(names, counts) if n >= MIN_ROUTE_ROWS]


def route_factors(
    score: np.ndarray, routes: np.ndarray, coverage: float, cells: list[str] | None = None
) -> RouteFactors:
    """Mondrian factors: the pooled quantile and one per route of ``cells`` present in
    ``routes`` (default :func:`mondrian_routes`)."""
    cells = mondrian_routes(routes) if cells is None else cells
    by_route = {
        r: conformal_quantile(score[routes == r], coverage) for r in cells if (routes == r).any()
    }
    return RouteFactors(conformal_quantile(score, coverage), by_route)


@dataclass(frozen=True)
class _Task:
    """One model's rows of one task (first partition), in the interval's terms."""

    ens: Ensemble
    space: str
    measured: np.ndarray
    distance: np.ndarray
    offset: float
    routes: np.ndarray

    @cached_property
    def ratio(self) -> np.ndarray:
        """Each row's score at the scale without its distance term (the slope's data)."""
        return self.ens.score(self.measured, self.space, Normalizer(self.offset))

    def fit(
        self, rows: np.ndarray, coverage: float, cells: list[str]
    ) -> tuple[Normalizer, RouteFactors]:
        """Scale and route factors fitted on ``rows`` (a boolean mask)."""
        norm = Normalizer(self.offset, distance_slope(self.ratio[rows], self.distance[rows]))
        score = self.ens.score(self.measured, self.space, norm, self.distance)
        return norm, route_factors(score[rows], self.routes[rows], coverage, cells)


def calibrate(
    spread: pl.DataFrame, coverage: float, near: Neighbourhood
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model and regression task: the interval (space, offset, distance slope and cap,
    pooled and per-route conformal factors) and its cross-conformal coverage (module
    docstring), with the median half-width ``(hi − lo)/2`` at 25 °C in the task's unit."""
    first = spread["seed"].min()
    regression = spread.filter(pl.col("task") != PHASE.name, pl.col("spread").is_not_null())
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (model, task), every in regression.group_by("model", "task"):
        part = every.filter(pl.col("seed") == first).sort("row")
        rows = part["row"].to_numpy()
        ens = Ensemble(
            part["predicted_mean"].to_numpy(), part["centre"].to_numpy(), part["spread"].to_numpy()
        )
        job = _Task(
            ens,
            space_for(TASKS_BY_NAME[str(task)].unit),
            part["measured"].to_numpy(),
            near.condition_distance[rows],
            float(np.nanmedian(ens.spread)),
            np.asarray(part["processing"].to_list()),
        )
        cells = mondrian_routes(job.routes)
        assignments = _fold_assignments(every, part)
        covered = np.zeros((len(assignments), len(rows)))
        halves = []
        room = part["temperature_c"].to_numpy() == ROOM_TEMPERATURE_C
        for a, folds in enumerate(assignments):
            lo, hi = np.empty(len(rows)), np.empty(len(rows))
            for k in np.unique(folds):
                norm, factors = job.fit(folds != k, coverage, cells)
                test = folds == k
                sub = Ensemble(ens.mean[test], ens.centre[test], ens.spread[test])
                lo[test], hi[test] = sub.bounds(
                    factors.apply(job.routes[test]), job.space, norm, job.distance[test]
                )
            covered[a] = (job.measured >= lo) & (job.measured <= hi)
            halves.append((hi - lo)[room] / 2)
        shipped_norm, shipped = job.fit(np.ones(len(rows), dtype=bool), coverage, cells)
        groups = near.groups[rows]
        rho = _within_group_correlation(covered[0], groups)
        cover = covered.mean(axis=0)
        band = near.distance[rows]
        by_route = {str(r): job.routes == r for r in np.unique(job.routes)}
        by_band = {name: (band >= a) & (band < b) for name, a, b in DISTANCE_BANDS}
        out.setdefault(str(model), {})[str(task)] = {
            "space": job.space,
            "factor": shipped.pooled,
            "factor_by_route": shipped.by_route,
            "offset": job.offset,
            "distance_slope": shipped_norm.distance_slope,
            "distance_cap": shipped_norm.cap,
            "coverage": float(np.mean(cover)),
            "coverage_25c": float(np.mean(cover[room])) if room.any() else math.nan,
            "coverage_by_route": _cells(by_route, cover, groups, rho, coverage),
            "coverage_by_distance": _cells(by_band, cover, groups, rho, coverage),
            "coverage_partitions": len(assignments),
            "within_group_correlation": rho,
            "median_half_width_25c": (
                float(np.median(np.concatenate(halves))) if room.any() else math.nan
            ),
            "rows": len(rows),
        }
    return out


def _fold_assignments(every: pl.DataFrame, part: pl.DataFrame) -> list[np.ndarray]:
    """The fold of each row of ``part`` in every partition (seed) of ``every`` that holds
    all of them, the first partition first."""
    wide = part.select("row").join(
        every.pivot(on="seed", index="row", values="fold", sort_columns=True), on="row", how="left"
    )
    seeds = sorted((c for c in wide.columns if c != "row"), key=int)
    return [wide[s].to_numpy() for s in seeds if wide[s].null_count() == 0]


def _within_group_correlation(covered: np.ndarray, groups: np.ndarray) -> float:
    """One-way ANOVA estimate of the intraclass correlation of ``covered`` within ``groups``,
    clipped to [0, 1] (0 when it cannot be estimated)."""
    _, index, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    n, k = len(covered), len(sizes)
    if k < 2 or n <= k:
        return 0.0
    means = np.bincount(index, covered) / sizes
    between = float(np.sum(sizes * (means - covered.mean()) ** 2) / (k - 1))
    within = float(np.sum((covered - means[index]) ** 2) / (n - k))
    m0 = (n - np.sum(sizes**2) / n) / (k - 1)
    if between + (m0 - 1) * within <= 0:
        return 0.0
    return float(np.clip((between - within) / (between + (m0 - 1) * within), 0.0, 1.0))


def _cells(
    masks: dict[str, np.ndarray],
    cover: np.ndarray,
    groups: np.ndarray,
    rho: float,
    coverage: float,
) -> dict[str, dict[str, Any]]:
    """Per named cell (a row mask): coverage, rows, groups and the SD of a perfectly
    calibrated cell (module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    for name, mask in masks.items():
        n = int(mask.sum())
        sizes = np.unique(groups[mask], return_counts=True)[1]
        variance = coverage * (1 - coverage) * float(np.sum(sizes * (1 + (sizes - 1) * rho)))
        out[name] = {
            "coverage": float(np.mean(cover[mask])) if n else math.nan,
            "rows": n,
            "groups": len(sizes),
            "sd_if_calibrated": math.sqrt(variance) / n if n else math.nan,
        }
    return out
