"""Scores, top-k and Pareto fronts of predicted candidates, mergeable across partitions.

A ranking ranks on tasks of :mod:`hea_screen.conditions` at one stated
:class:`~hea_screen.conditions.Condition` (test type, test temperature, processing; default
tension, 25 °C, as-cast): ``uts`` at a tension condition means the task ``uts_tension_mpa``,
never a compressive strength. The *strength* task is UTS at the condition's test type (YS
for ``ys``, Vickers hardness for ``hardness``); the *ductility* task is elongation
(tension) or fracture strain (compression) at that test type.

Risk attitude turns each task's fold-ensemble prediction into the value ranked on
(``<task>_adj``, in the task's unit):

- ``mean``: the ensemble mean;
- ``safe``: ``mean − kappa · std`` (a pessimistic, lower-confidence pick);
- ``explore``: ``mean + kappa · std`` (an upper confidence bound, favouring the uncertain).

Objectives (the ``score`` column, larger is better):

- ``uts``, ``ys``, ``elongation``, ``hardness``: the risk-adjusted task value in its unit;
- ``weighted``: ``w_strength · z_strength + w_ductility · z_ductility`` with
  ``z = (adj − m) / s``, where ``m`` and ``s`` are the mean and standard deviation of the
  task's training values recorded in the model bundle (dimensionless; fixed per model, so
  a score never depends on which other candidates are screened);
- ``pareto``: the candidates no other candidate beats on both risk-adjusted strength and
  ductility (the Pareto front), ordered by the weighted score.

Every candidate set is ordered by ``score`` descending, ties broken by the canonical
composition text ascending, so the order is total and deterministic. A partition keeps
its top ``k`` rows and its Pareto front (:class:`Partial`); merging two partials keeps the
top ``k`` and the front of their union, which equals the top ``k`` and front of the union of
the partitions themselves, whatever the partitioning and the merge order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from hea_screen.conditions import Condition, Task, task_for
from hea_screen.errors import UserInputError

log = logging.getLogger(__name__)

OBJECTIVES: tuple[str, ...] = ("uts", "ys", "elongation", "hardness", "weighted", "pareto")
RISKS: tuple[str, ...] = ("mean", "safe", "explore")

#: Internal columns holding the front's axes (risk-adjusted strength and ductility).
FRONT_X, FRONT_Y = "_front_strength", "_front_ductility"


def adj(task: str) -> str:
    """Column of a task's risk-adjusted value: ``uts_tension_mpa_adj``."""
    return f"{task}_adj"


#: Largest count (top-k, sample, partition size, any whole-number flag) accepted: beyond it a
#: count means nothing here and overflows the int32/int64 arithmetic of polars and numpy.
MAX_COUNT = 2**31 - 1


@dataclass(frozen=True)
class Ranking:
    """How candidates are ranked: objective, weights, risk attitude, kappa, top-k, condition.

    ``weights`` are ``(w_strength, w_ductility)`` for the weighted score (used by ``weighted``
    and to order the ``pareto`` front); ``kappa`` is the number of fold standard deviations
    subtracted (``safe``) or added (``explore``).
    """

    objective: str = "weighted"
    risk: str = "mean"
    kappa: float = 1.0
    weights: tuple[float, float] = (0.5, 0.5)
    top: int = 100
    condition: Condition = field(default_factory=Condition)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UserInputError(
                f"unknown objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}"
            )
        if self.risk not in RISKS:
            raise UserInputError(f"unknown risk {self.risk!r}: choose one of {', '.join(RISKS)}")
        if not (np.isfinite(self.kappa) and self.kappa >= 0):
            raise UserInputError(f"kappa {self.kappa!r}: need a finite number >= 0")
        w = self.weights
        if len(w) != 2 or not all(np.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
            raise UserInputError(
                f"weights {w!r}: need two numbers >= 0 (strength, ductility), not both zero"
            )
        top = self.top
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_COUNT:
            raise UserInputError(f"top {top!r}: need a whole number from 1 to {MAX_COUNT:,}")
        if not isinstance(self.condition, Condition):
            raise UserInputError(f"condition {self.condition!r}: need a Condition")

    @property
    def strength(self) -> Task:
        """The strength task: UTS at the test type (YS for ``ys``, HV for ``hardness``)."""
        prop = self.objective if self.objective in ("ys", "hardness") else "uts"
        return task_for(prop, self.condition.test_type)

    @property
    def ductility(self) -> Task:
        """Elongation (tension) or fracture strain (compression) at the test type."""
        return task_for("elongation", self.condition.test_type)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks the ranking reads: strength and ductility (and UTS beside YS or HV)."""
        names = [self.strength.name, self.ductility.name]
        if self.objective in ("ys", "hardness"):
            names.append(task_for("uts", self.condition.test_type).name)
        return tuple(dict.fromkeys(names))

    def describe(self) -> dict[str, object]:
        """JSON-ready description (part of a batch job's identity)."""
        return {
            "objective": self.objective,
            "risk": self.risk,
            "kappa": self.kappa,
            "weights": list(self.weights),
            "top": self.top,
            "condition": self.condition.describe(),
            "strength": self.strength.name,
            "ductility": self.ductility.name,
        }


@dataclass(frozen=True)
class Reference:
    """Per-task scale for the weighted score: training mean and std, in task units."""

    mean: Mapping[str, float]
    std: Mapping[str, float]


def score(predictions: pl.DataFrame, ranking: Ranking, reference: Reference) -> pl.DataFrame:
    """Add ``<task>_adj`` (risk-adjusted, task units), ``score`` and the front's axes."""
    sign = {"mean": 0.0, "safe": -1.0, "explore": 1.0}[ranking.risk] * ranking.kappa
    adjusted = [
        (pl.col(f"{t}_mean") + sign * pl.col(f"{t}_std")).fill_nan(None).alias(adj(t))
        for t in ranking.tasks
    ]
    strength, ductility = ranking.strength.name, ranking.ductility.name
    if ranking.objective in ("uts", "ys", "hardness"):
        expr = pl.col(adj(strength))
    elif ranking.objective == "elongation":
        expr = pl.col(adj(ductility))
    else:
        pairs = zip((strength, ductility), ranking.weights)
        expr = pl.sum_horizontal(
            [w * (pl.col(adj(t)) - reference.mean[t]) / reference.std[t] for t, w in pairs if w]
        )
    return predictions.with_columns(adjusted).with_columns(
        expr.alias("score"),
        pl.col(adj(strength)).alias(FRONT_X),
        pl.col(adj(ductility)).alias(FRONT_Y),
    )


def order(frame: pl.DataFrame) -> pl.DataFrame:
    """Sort by score descending, then composition ascending (nulls last)."""
    return frame.sort(["score", "composition"], descending=[True, False], nulls_last=True)


def top_k(frame: pl.DataFrame, k: int) -> pl.DataFrame:
    """The ``k`` best rows of a scored frame, in rank order."""
    return order(frame).head(k)


def pareto_front(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows not dominated on (risk-adjusted strength, ductility), in rank order.

    Row ``q`` dominates ``p`` when it is at least as good on both and better on one; rows
    with equal values do not dominate each other, so both stay. Rows with a missing value
    are never on the front.
    """
    valid = frame.drop_nulls([FRONT_X, FRONT_Y])
    if valid.height == 0:
        return order(valid)
    x = valid[FRONT_X].to_numpy()
    y = valid[FRONT_Y].to_numpy()
    idx = np.lexsort((-y, -x))  # x descending, then y descending
    xs, ys = x[idx], y[idx]
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    group_best = ys[starts]  # y descending within a group: its first row is its best
    prev_best = np.r_[-np.inf, np.maximum.accumulate(group_best)[:-1]]
    keep = (ys == group_best[group]) & (ys > prev_best[group])
    return order(valid[np.sort(idx[keep])])


@dataclass(frozen=True)
class Partial:
    """What a partition (or a merge of partitions) keeps: its top-k, its front, counts.

    ``seconds`` sums the work time of the partitions merged in, by stage.
    """

    top: pl.DataFrame
    front: pl.DataFrame
    candidates: int
    seconds: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        scored: pl.DataFrame,
        k: int,
        candidates: int,
        seconds: Mapping[str, float] | None = None,
    ) -> Partial:
        """Reduce a scored frame to its top ``k`` and Pareto front."""
        return cls(top_k(scored, k), pareto_front(scored), candidates, dict(seconds or {}))

    def merge(self, other: Partial, k: int) -> Partial:
        """The partial of the union of both candidate sets (bounded: k + front rows)."""
        seconds = dict(self.seconds)
        for stage, s in other.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + s
        return Partial(
            top_k(pl.concat([self.top, other.top], how="vertical_relaxed"), k),
            pareto_front(pl.concat([self.front, other.front], how="vertical_relaxed")),
            self.candidates + other.candidates,
            seconds,
        )


def merge_all(partials: Iterable[Partial], k: int) -> Partial | None:
    """Fold partials together one at a time (memory bounded by one partial plus the result)."""
    merged: Partial | None = None
    for p in partials:
        merged = p if merged is None else merged.merge(p, k)
    return merged


def final_ranking(merged: Partial, ranking: Ranking) -> pl.DataFrame:
    """The ranked list: ``rank`` (1 = best) and ``pareto`` flag first.

    For the ``pareto`` objective the list is the front itself (at most ``top`` rows);
    otherwise the top ``top`` rows by score, each flagged if it lies on the front of the
    whole space.
    """
    rows = merged.front if ranking.objective == "pareto" else merged.top
    if ranking.objective == "pareto" and rows.height > ranking.top:
        log.warning(
            "the Pareto front has %d candidates; listing the best %d by weighted score "
            "(raise --top to see all)",
            rows.height,
            ranking.top,
        )
    rows = order(rows).head(ranking.top)
    on_front = rows["composition"].is_in(merged.front["composition"].implode())
    return rows.with_columns(
        pl.int_range(1, rows.height + 1, dtype=pl.Int64).alias("rank"),
        on_front.alias("pareto"),
    ).select(
        "rank",
        "composition",
        "score",
        "pareto",
        pl.exclude("rank", "composition", "score", "pareto", FRONT_X, FRONT_Y),
    )
