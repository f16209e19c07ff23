"""Partitioned screening on Dask: enumerate, featurize, predict, score, merge.

A screen cuts the candidate positions ``0..size`` into contiguous partitions. On a worker,
a partition is processed in batches of ``batch_size`` candidates: the batch is built
directly from the space (:mod:`hea_screen.screening.space`), featurized with polars, predicted with
ONNX Runtime (the worker's cached :class:`~hea_screen.inference.predictor.TaskPredictor`, at the
ranking's condition), scored, and
folded into the partition's running top-k and Pareto front
(:class:`~hea_screen.screening.ranking.Partial`).
Only that partial travels back; the driver folds partials together as they arrive, so
memory stays bounded by a partition plus the top-k, whatever the size of the space.

Identical results whatever the partitioning or the number of workers: partition edges are
multiples of ``batch_size``, so every candidate is predicted in the same batch (same
neighbours, same shapes) however the work is split; merging is order-free and ties break
on the canonical composition text.

Where the partitions run:

- ``scheduler`` (or ``DASK_SCHEDULER_ADDRESS``): an existing Dask cluster;
- one worker or a single partition: in this process, without Dask
  (starting worker processes costs seconds and a model load each, and buys nothing then);
- otherwise a ``LocalCluster`` of ``workers`` processes with one thread each, ONNX Runtime
  getting ``cores // workers`` threads per process.

Each worker process loads a model once: predictors are cached per process by
:class:`ModelRef` (:func:`predictor_for`). A screen pins the bundle's SHA-256 (its identity,
``manifest.json``'s digest) in the :class:`ModelRef`, so a worker refuses a bundle altered after
the driver checked it, and the ranked table carries it in its ``model_sha256`` column.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from hea_screen.compositions.phase_rules import PHASE_FLAG_COLUMNS, phase_flags
from hea_screen.compositions.table import CompositionTable
from hea_screen.compositions.weighing import lab_columns
from hea_screen.conditions import PHASES
from hea_screen.errors import SpaceError
from hea_screen.inference.applicability import NEAREST_COLUMNS
from hea_screen.inference.predictor import phase_column
from hea_screen.screening.cluster import run_partitions
from hea_screen.screening.model_ref import ModelRef, inspect_model, predicted_tasks, predictor_for
from hea_screen.screening.partition import (
    first_stage,
    partition_step,
    plan_partitions,
    screen_partition,
)
from hea_screen.screening.ranking import Partial, Ranking, Reference, final_ranking, score
from hea_screen.screening.space import Candidates, SampledSpace

log = logging.getLogger(__name__)

#: Spaces larger than this need ``--sample`` or an explicit confirmation.
LARGE_SPACE = 1_000_000

#: ``hea-screen`` screens spaces up to this size in its own process by default: starting a
#: local cluster (worker processes, a model load each) costs more than it saves there
#: (docs/benchmarks.md).
IN_PROCESS_SPACE = 1_000_000


#: Columns of the ranked table after ``rank, composition, score, pareto`` and the predicted
#: tasks (:func:`result_columns`).
LAB_COLUMNS: tuple[str, ...] = ("n_elements", "at_pct", "wt_pct", "weigh_out_g")
CONDITION_COLUMNS: tuple[str, ...] = ("test_type", "temperature_c", "processing", "grain_size_um")
#: Their types (a grain size not stated is a null Float64, so partitions concatenate).
CONDITION_DTYPES: dict[str, type[pl.DataType]] = {
    "test_type": pl.Utf8,
    "temperature_c": pl.Float64,
    "processing": pl.Utf8,
    "grain_size_um": pl.Float64,
}


def result_columns(ranking: Ranking) -> tuple[str, ...]:
    """Column order of the ranked table: rank and score, each ranked task's prediction
    (mean, std, calibrated interval, risk-adjusted value), phase probabilities, the empirical
    phase rules (:mod:`hea_screen.compositions.phase_rules`), lab columns,
    the condition, per-task nearest training data, flags and the model's identity."""
    tasks = ranking.tasks
    return (
        "rank",
        "composition",
        "score",
        "pareto",
        *(f"{t}_{s}" for t in tasks for s in ("mean", "std", "lo", "hi", "adj")),
        *(phase_column(p) for p in PHASES),
        *PHASE_FLAG_COLUMNS,
        *LAB_COLUMNS,
        *CONDITION_COLUMNS,
        *(f"{t}_{s}" for t in tasks for s in NEAREST_COLUMNS),
        "unseen_elements",
        "extrapolated_tasks",
        "model_sha256",
    )


def guard_size(candidates: Candidates, confirmed: bool) -> None:
    """Refuse a space above :data:`LARGE_SPACE` unless sampled or ``confirmed``."""
    if isinstance(candidates, SampledSpace) or confirmed or candidates.size <= LARGE_SPACE:
        return
    raise SpaceError(
        f"the space holds {candidates.size:,} candidates (more than {LARGE_SPACE:,}): "
        "screen a random sample with --sample N, narrow it (--max-elements, --step, bounds), "
        "or confirm the full run with --yes (see --dry-run for an estimated time)"
    )


@dataclass(frozen=True)
class Outcome:
    """A finished screen: the ranked table and what it took."""

    table: pl.DataFrame
    merged: Partial
    partitions: int
    wall_seconds: float


def screen(
    candidates: Candidates,
    ranking: Ranking,
    model: ModelRef,
    reference: Reference,
    *,
    ingot_mass_g: float,
    partition_size: int | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    processes: bool = True,
    progress: bool = False,
    exact: bool = False,
    shortlist: int | None = None,
) -> Outcome:
    """Screen every candidate and return the ranked table (see :func:`result_table`).

    Two stages (:func:`first_stage`): a cheap one scores every candidate, the full ensemble
    re-scores the shortlist it keeps (:func:`rescore`); ``exact`` runs every fold model on
    every candidate.
    """
    t0 = time.perf_counter()
    model = pinned(model)
    stage = first_stage(ranking, candidates.size, exact, shortlist)
    parts = plan_partitions(candidates.size, model.batch_size, partition_size, workers)
    merged: Partial | None = None

    def fold(_: int, partial: Partial) -> None:
        nonlocal merged
        merged = partial if merged is None else merged.merge(partial, stage.keep)

    run_partitions(
        candidates,
        [(i, lo, hi) for i, (lo, hi) in enumerate(parts)],
        model,
        ranking,
        reference,
        fold,
        workers=workers,
        scheduler=scheduler,
        processes=processes,
        progress=progress,
        stage=stage,
    )
    if merged is None:
        raise SpaceError("empty space: nothing to screen")
    final = rescore(merged, model, ranking, reference, candidates.elements)
    table = result_table(final, ranking, ingot_mass_g, model.sha256)
    return Outcome(table, final, len(parts), time.perf_counter() - t0)


def rescore(
    shortlist: Partial,
    model: ModelRef,
    ranking: Ranking,
    reference: Reference,
    palette: Sequence[str],
) -> Partial:
    """The second stage: every fold model of the ranked tasks and phase, with applicability,
    on the rows a first stage kept (its top and front), reduced to the top and front.

    The rows are featurized over the space's ``palette``, as in the first stage, so a
    candidate gets the same features (to the last bit) in both."""
    t0 = time.perf_counter()
    texts = pl.concat([shortlist.top["composition"], shortlist.front["composition"]]).unique(
        maintain_order=True
    )
    predictor = predictor_for(model)
    parsed = CompositionTable.from_compositions(texts.to_list())
    micro = np.zeros((len(parsed), len(palette)), dtype=np.int32)
    micro[:, [list(palette).index(el) for el in parsed.elements]] = parsed.micro
    table = CompositionTable(tuple(palette), micro)
    tasks = predicted_tasks(ranking, predictor.tasks)
    predicted = predictor.predict(table, ranking.condition, tasks)
    seconds = dict(shortlist.seconds)
    seconds["rescore"] = seconds.get("rescore", 0.0) + time.perf_counter() - t0
    scored = score(predicted, ranking, reference)
    return Partial.of(scored, ranking.top, shortlist.candidates, seconds)


def pinned(model: ModelRef) -> ModelRef:
    """``model`` pinned to the full SHA-256 of its bundle (verified against a given prefix)."""
    if model.sha256 is not None and len(model.sha256) == 64 and model.sha256.islower():
        return model
    info = inspect_model(model.path, model.sha256, model.device, model.precision)
    return replace(model, sha256=info.sha256)


def result_table(
    merged: Partial, ranking: Ranking, ingot_mass_g: float, model_sha256: str | None = None
) -> pl.DataFrame:
    """Ranked rows with lab columns and the condition, in :func:`result_columns` order (then
    any others); ``model_sha256`` (the bundle's identity) fills the ``model_sha256`` column."""
    return decorate(final_ranking(merged, ranking), ranking, ingot_mass_g, model_sha256)


def decorate(
    ranked: pl.DataFrame, ranking: Ranking, ingot_mass_g: float, model_sha256: str | None
) -> pl.DataFrame:
    """Phase flags, lab columns, the condition and the model identity added to ranked rows,
    in :func:`result_columns` order (then any others): what every ranked output holds."""
    table = lab_columns(phase_flags(ranked), ingot_mass_g)
    condition = ranking.condition.describe()
    table = table.with_columns(
        *(pl.lit(condition[c], dtype=CONDITION_DTYPES[c]).alias(c) for c in CONDITION_COLUMNS),
    )
    if model_sha256 is not None:
        table = table.with_columns(pl.lit(model_sha256, dtype=pl.Utf8).alias("model_sha256"))
    first = [c for c in result_columns(ranking) if c in table.columns]
    return table.select(*first, pl.exclude(first))


@dataclass(frozen=True)
class Estimate:
    """Dry-run figures: candidates, partitions, the probe's measured rates and the range of
    the estimated time, with what the estimate assumes in words."""

    candidates: int
    partitions: int
    partition_size: int
    probe_candidates: int
    load_seconds: float
    rates: tuple[float, float]
    seconds: tuple[float, float]
    assumes: str


#: Timed runs of the probe; their slowest and fastest give the estimate's range.
PROBE_RUNS = 3


def estimate(
    candidates: Candidates,
    ranking: Ranking,
    model: ModelRef,
    reference: Reference,
    *,
    partition_size: int | None,
    workers: int,
    probe: int = 256,
    exact: bool = False,
    shortlist: int | None = None,
) -> Estimate:
    """Time the run's own stages on a probe (a sample of up to ``probe`` candidates, in this
    process): the first stage (:func:`first_stage`) :data:`PROBE_RUNS` times and the full
    ensemble once for the shortlist it re-scores, each after a warm-up run (ONNX Runtime
    plans each new input shape on first sight).

    The estimate is model load + candidates / first-stage rate + shortlist / full rate, from
    the slowest and the fastest probe run: the spread is the machine's load while probing.
    The probe runs with every core, which local workers share between them.
    """
    stage = first_stage(ranking, candidates.size, exact, shortlist)
    step = partition_step(candidates.size, model.batch_size, partition_size, workers)
    space = candidates.space if isinstance(candidates, SampledSpace) else candidates
    sample = SampledSpace(space, min(probe, candidates.size), seed=0)
    t0 = time.perf_counter()
    predictor_for(model)
    load = time.perf_counter() - t0
    # The first pass warms up: ONNX Runtime plans each new input shape on first sight.
    screen_partition(sample, 0, sample.size, model, ranking, reference, stage)
    rates = []
    for _ in range(PROBE_RUNS):
        t1 = time.perf_counter()
        screen_partition(sample, 0, sample.size, model, ranking, reference, stage)
        rates.append(sample.size / max(time.perf_counter() - t1, 1e-9))
    size = candidates.size
    rescored, full_seconds = 0, 0.0
    if stage.folds is not None:
        rescored = min(stage.keep, size)
        screen_partition(sample, 0, sample.size, model, ranking, reference)  # warm-up
        t1 = time.perf_counter()
        screen_partition(sample, 0, sample.size, model, ranking, reference)
        full_seconds = rescored * (time.perf_counter() - t1) / sample.size
    slow, fast = min(rates), max(rates)
    seconds = (load + size / fast + full_seconds, load + size / slow + full_seconds)
    first = "every fold model" if stage.folds is None else f"fold {stage.folds - 1} only"
    assumes = (
        f"{first} on all {size:,} candidates"
        + (f", the full ensemble on the {rescored:,}-row shortlist" if rescored else "")
        + f"; {workers} worker(s) sharing this machine's cores; the load of the probe's "
        f"{PROBE_RUNS} runs ({slow:,.0f}-{fast:,.0f} candidates/s) lasting"
    )
    parts = -(-size // step)
    return Estimate(
        size, parts, min(step, size), sample.size, load, (slow, fast), seconds, assumes
    )
