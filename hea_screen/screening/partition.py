"""One partition of a screen: how a space is cut into partitions, the two-stage rule, and the
work on one partition (enumerate, featurize, predict, score, keep top-k and front)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from hea_screen.compositions.features import featurize
from hea_screen.errors import UserInputError
from hea_screen.inference.bundle import TABULAR
from hea_screen.inference.predictor import TaskPredictor
from hea_screen.screening.model_ref import ModelRef, predicted_tasks, predictor_for
from hea_screen.screening.ranking import (
    Partial,
    Ranking,
    Reference,
    merge_all,
    pareto_front,
    score,
    top_k,
)
from hea_screen.screening.space import Candidates

#: Rows per predictor call of a partition (whole batches; :func:`_calls`).
CALL_ROWS = 65_536

#: Below this many rows in one call, ONNX Runtime's tree ensembles sum a row's trees in
#: parallel (in an order that depends on the call); from it on, row by row in tree order
#: (measured on the shipped models: calls of 128 to 65,536 rows agree to the last bit, calls
#: of 1 to 50 rows do not).
ROW_PARALLEL_ROWS = 128

#: Fold models per task in the cheap first stage of a screen (:func:`first_stage`).
CHEAP_FOLDS = 1


#: Default shortlist of a two-stage screen, in multiples of ``--top``: the full ensemble
#: re-scores this many of the first stage's best (chosen from the fidelity measured in
#: docs/benchmarks.md).
SHORTLIST_FACTOR = 100


#: Smallest default shortlist: with a small ``--top`` a shortlist of 100 x top missed the
#: exact best (``--top 3`` on the Cantor space: 300 of 7,051 kept, the exact top 1 not
#: among them); the fidelity measurements shortlisted 10,000 (top 100).
MIN_SHORTLIST = 10_000


def plan_partitions(
    size: int, batch_size: int, partition_size: int | None, workers: int
) -> list[tuple[int, int]]:
    """``(lo, hi)`` partitions whose edges are multiples of ``batch_size``.

    ``partition_size`` is rounded up to a multiple of the batch; by default about eight
    partitions per worker, between 1 and 64 batches each.
    """
    step = partition_step(size, batch_size, partition_size, workers)
    return [(lo, min(lo + step, size)) for lo in range(0, size, step)]


def partition_step(size: int, batch_size: int, partition_size: int | None, workers: int) -> int:
    """Candidates per partition of :func:`plan_partitions`, without listing the partitions."""
    if batch_size < 1:
        raise UserInputError(f"batch size {batch_size}: need at least 1")
    if partition_size is None:
        batches = -(-size // (batch_size * max(1, workers) * 8))
        partition_size = batch_size * min(64, max(1, batches))
    elif partition_size < 1:
        raise UserInputError(f"partition size {partition_size}: need at least 1")
    return -(-partition_size // batch_size) * batch_size


@dataclass(frozen=True)
class Stage:
    """The first stage of a two-stage screen: each ranked task's first ``folds`` fold models
    (``None``: all) score every candidate, without phase or applicability, and a partition
    keeps its best ``keep`` rows and its front; :func:`rescore` runs the full ensemble on what
    the merged partitions kept."""

    folds: int | None
    keep: int


def first_stage(
    ranking: Ranking, size: int, exact: bool = False, shortlist: int | None = None
) -> Stage:
    """The first stage of a screen of ``size`` candidates: fold 0 alone keeping ``shortlist``
    rows (default :data:`SHORTLIST_FACTOR` x top, at least :data:`MIN_SHORTLIST`); every fold
    keeping the top with ``exact`` or where the shortlist would hold the whole space."""
    default = max(SHORTLIST_FACTOR * ranking.top, MIN_SHORTLIST)
    keep = default if shortlist is None else shortlist
    if keep < ranking.top:
        raise UserInputError(f"shortlist {keep}: need at least --top ({ranking.top}) rows")
    if exact or keep >= size:
        return Stage(None, ranking.top)
    return Stage(CHEAP_FOLDS, keep)


def screen_partition(
    candidates: Candidates,
    lo: int,
    hi: int,
    model: ModelRef,
    ranking: Ranking,
    reference: Reference,
    stage: Stage | None = None,
) -> Partial:
    """Enumerate, featurize, predict and score candidates ``lo..hi``; keep top-k and front.

    Without ``stage``, every fold of every predicted task with applicability (the rows are
    final); with it, the first stage of :class:`Stage`.
    """
    predictor = predictor_for(model)
    tasks = predicted_tasks(ranking, predictor.tasks) if stage is None else ranking.tasks
    folds, keep = (None, ranking.top) if stage is None else (stage.folds, stage.keep)
    final = stage is None
    seconds = {"enumerate": 0.0, "featurize": 0.0, "predict": 0.0, "rank": 0.0}
    kept = _Kept(keep)
    for start, stop in _calls(lo, hi, model.batch_size, predictor, tasks):
        t0 = time.perf_counter()
        table = candidates.table(start, stop)
        t1 = time.perf_counter()
        # featurized batch by batch, as one batch per call did: featurize picks its dense or
        # row-slot arithmetic from the widest row of its table
        features = pl.concat(
            featurize(table.take(np.arange(a, min(a + model.batch_size, len(table)))))
            for a in range(0, len(table), model.batch_size)
        )
        t2 = time.perf_counter()
        predicted = predictor.predict(
            table, ranking.condition, tasks, features, folds=folds, applicability=final
        )
        t3 = time.perf_counter()
        kept.add(score(predicted, ranking, reference), len(table))
        t4 = time.perf_counter()
        for name, dt in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            seconds[name] += dt
    merged = kept.partial()
    return Partial(merged.top, merged.front, merged.candidates, seconds)


def batches_per_call(batch: int, predictor: TaskPredictor, tasks: Sequence[str]) -> int:
    """Whole batches of ``batch`` rows one predictor call may take: up to :data:`CALL_ROWS`
    rows when every predicted task is a tabular model and batches hold at least
    :data:`ROW_PARALLEL_ROWS` rows (fewer predict and score calls, the same values to the
    last bit: ONNX Runtime's tree ensembles sum each row's trees in the same order for any
    call of at least that many rows); otherwise 1. A transformer's int8 activations are
    quantized per call, so it keeps one call per batch. A shorter last batch must stay a
    call of its own."""
    tabular = all(predictor.bundle.task(t).kind == TABULAR for t in tasks)
    if not tabular or batch < ROW_PARALLEL_ROWS:
        return 1
    return max(1, CALL_ROWS // batch)


def _calls(
    lo: int, hi: int, batch: int, predictor: TaskPredictor, tasks: Sequence[str]
) -> list[tuple[int, int]]:
    """The ``(start, stop)`` of each predictor call over ``lo..hi``
    (:func:`batches_per_call` whole batches each; the space's last batch, which may be
    shorter, alone)."""
    batches = [(start, min(start + batch, hi)) for start in range(lo, hi, batch)]
    group = batches_per_call(batch, predictor, tasks)
    full = batches if batches[-1][1] - batches[-1][0] == batch else batches[:-1]
    calls = [
        (full[i][0], full[min(i + group, len(full)) - 1][1]) for i in range(0, len(full), group)
    ]
    return calls + batches[len(full) :]


class _Kept:
    """A partition's running top ``keep`` and front, merged lazily.

    Each batch's front is kept, and of its rows only those scoring at least the ``keep``-th
    best score merged so far (a row below it ranks after ``keep`` rows already held, ties
    and missing scores included, so it can never enter the top); the batches wait until
    they hold ``keep`` such rows, then are merged at once. The result is the top and front
    of the union, as batch-by-batch merging gives, with one sort of ``keep`` rows per
    ``keep`` candidate rows instead of one per batch.
    """

    def __init__(self, keep: int):
        self.keep = keep
        self.merged: Partial | None = None
        self.pending: list[Partial] = []
        self.held = 0

    def add(self, scored: pl.DataFrame, candidates: int) -> None:
        threshold = self._threshold()
        rows = scored if threshold is None else scored.filter(pl.col("score") >= threshold)
        part = Partial(top_k(rows, self.keep), pareto_front(scored), candidates)
        self.pending.append(part)
        self.held += part.top.height
        if self.held >= self.keep:
            self._merge()

    def partial(self) -> Partial:
        self._merge()
        assert self.merged is not None, "empty partition"
        return self.merged

    def _threshold(self) -> float | None:
        if self.merged is None or self.merged.top.height < self.keep:
            return None
        return self.merged.top["score"][-1]

    def _merge(self) -> None:
        parts = ([self.merged] if self.merged is not None else []) + self.pending
        self.merged = merge_all(parts, self.keep)
        self.pending, self.held = [], 0
